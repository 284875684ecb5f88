"""Vector-neuron and DeepSets layers are equivariant (checked with the public checker)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import equicanon as ec
from equicanon.nn import (
    DeepSetsLayer,
    DeepSetsScorer,
    VNBatchNorm,
    VNEdgeConv,
    VNInvariant,
    VNLeakyReLU,
    VNLinear,
    VNMeanPool,
    knn,
)
from equicanon.testing import assert_equivariant, assert_invariant

GROUPS = [ec.SO3(), ec.O3()]


def _elements(group, seed: int = 0) -> torch.Tensor:
    return torch.cat([group.testing_elements(dtype=torch.float64),
                      group.sample(4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)])


@pytest.mark.parametrize("group", GROUPS, ids=repr)
@pytest.mark.parametrize("make", [
    lambda: VNLinear(4, 6),
    lambda: VNLeakyReLU(4),
    lambda: VNBatchNorm(4).eval(),
    lambda: VNBatchNorm(4).train(),
    lambda: nn.Sequential(VNLinear(4, 5), VNBatchNorm(5), VNLeakyReLU(5), VNLinear(5, 2)),
], ids=["linear", "leaky_relu", "batchnorm_eval", "batchnorm_train", "stack"])
def test_vector_neuron_layers_are_equivariant(group, make):
    torch.manual_seed(0)
    x = torch.randn(3, 7, 4, 3)
    assert_equivariant(make(), group, ec.actions.Vectors(group), ec.actions.Vectors(group), x, elements=_elements(group))


@pytest.mark.parametrize("group", GROUPS, ids=repr)
def test_pooling_and_invariant_head(group):
    torch.manual_seed(0)
    x = torch.randn(3, 7, 4, 3)
    assert_equivariant(VNMeanPool(), group, ec.actions.Vectors(group), ec.actions.Vectors(group), x)
    assert_invariant(VNInvariant(4), group, ec.actions.Vectors(group), x, elements=_elements(group))


@pytest.mark.parametrize("group,cross", [(ec.SO3(), True), (ec.SO3(), False), (ec.O3(), False)], ids=repr)
def test_edge_conv_is_equivariant_and_permutation_equivariant(group, cross):
    torch.manual_seed(0)
    layer = VNEdgeConv(6, k=4, cross=cross)
    x = torch.randn(2, 10, 3)
    assert_equivariant(layer, group, ec.actions.Points(group), ec.actions.Vectors(group), x, elements=_elements(group))
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(1))
    layer = layer.double()
    assert torch.allclose(layer(x.double()[:, perm]), layer(x.double())[:, perm], atol=1e-12)


def test_cross_product_breaks_reflection_equivariance():
    """Why VNEdgeConv(cross=True) is only for SO(3): x_i × x_j is a pseudo-vector."""
    torch.manual_seed(0)
    report = ec.testing.equivariance_error(VNEdgeConv(6, k=4, cross=True), ec.O3(), ec.actions.Points(ec.O3()),
                                           ec.actions.Vectors(ec.O3()), torch.randn(2, 10, 3))
    assert not report.passed


def test_knn_matches_brute_force():
    x = torch.randn(2, 15, 3, dtype=torch.float64)
    idx = knn(x, 4)
    dist = torch.cdist(x, x)
    expected = dist.argsort(dim=-1)[..., :4]
    assert torch.equal(idx.sort(-1).values, expected.sort(-1).values)
    assert knn(x, 100).shape == (2, 15, 15)  # k is capped at N


def test_vn_layers_reject_wrong_shapes():
    with pytest.raises(ec.errors.ShapeError, match=r"\(…, 4, 3\)"):
        VNLinear(4, 2)(torch.randn(2, 3, 3))
    with pytest.raises(ec.errors.ShapeError, match=r"\(B, N, 3\)"):
        VNEdgeConv(4)(torch.randn(2, 5, 2))


@pytest.mark.parametrize("make", [lambda: DeepSetsLayer(3, 5), lambda: DeepSetsScorer(3, 8)], ids=["layer", "scorer"])
def test_deepsets_is_permutation_equivariant(make):
    torch.manual_seed(0)
    group = ec.S(6)
    x = torch.randn(3, 6, 3)
    layer = make()
    assert_equivariant(layer, group, ec.actions.Set(group), ec.actions.Set(group), x)


def test_deepsets_rejects_wrong_feature_count():
    with pytest.raises(ec.errors.ShapeError, match=r"\(B, n, 3\)"):
        DeepSetsLayer(3, 4)(torch.randn(2, 5, 2))
