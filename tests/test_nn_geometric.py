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
    vector_neurons,
)
from equicanon.testing import assert_equivariant, assert_invariant
from tests import _vn_reference

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


# --- the fused layers against the plain implementation they replaced (tests/_vn_reference.py) ---------------


def _cloud(n: int = 40, batch: int = 3, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(batch, n, 3, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _padding(shape: tuple[int, int], seed: int = 1) -> torch.Tensor:
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(seed)) > 0.3
    mask[:, 0] = True
    return mask


@pytest.mark.parametrize("masked", [False, True], ids=["full", "masked"])
def test_knn_finds_the_reference_neighbourhoods(masked, monkeypatch):
    x = _cloud(200, seed=2)
    mask = _padding((3, 200)) if masked else None
    expected = _vn_reference.knn(x, 9, mask).sort(-1).values
    assert torch.equal(knn(x, 9, mask).sort(-1).values, expected)
    monkeypatch.setattr(vector_neurons, "KNN_CPU_BLOCK", 3 * 200 * 13)  # 13 rows per block, the last one partial
    assert torch.equal(knn(x, 9, mask).sort(-1).values, expected)


@pytest.mark.parametrize("masked", [False, True], ids=["full", "masked"])
@pytest.mark.parametrize("smoothing", [0.0, 1.0])
@pytest.mark.parametrize("cross", [False, True])
def test_closed_form_edge_conv_equals_the_plain_edge_features(cross, smoothing, masked):
    """Same outputs (float64 to 1e-12, float32 to float32 rounding) and the same gradients to the weights and
    the points as the plain layer that builds every edge's channels."""
    torch.manual_seed(0)
    layer = VNEdgeConv(8, k=6, cross=cross, smoothing=smoothing).double()
    x = _cloud().requires_grad_(True)
    mask = _padding((3, 40)) if masked else None
    out, expected = layer(x, mask), _vn_reference.edge_conv(layer, x, mask)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    target = torch.randn_like(out)
    fast = torch.autograd.grad((out * target).sum(), [x, *layer.parameters()])
    plain = torch.autograd.grad((expected * target).sum(), [x, *layer.parameters()])
    for a, b in zip(fast, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    single = layer.float()
    torch.testing.assert_close(single(x.detach().float(), mask), _vn_reference.edge_conv(single, x.detach().float(), mask),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("contiguous", [True, False], ids=["channels_inner", "vectors_inner"])
def test_point_layers_equal_the_plain_einsums(contiguous):
    torch.manual_seed(0)
    v = torch.randn(3, 7, 3, 5, dtype=torch.float64).mT  # (..., C, 3) as a view of (..., 3, C) memory
    v = v.contiguous() if contiguous else v
    lin, bn = VNLinear(5, 4).double(), VNBatchNorm(5).double()
    torch.testing.assert_close(lin(v), _vn_reference.linear(lin, v), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bn(v), _vn_reference.batch_norm(bn, v), rtol=1e-12, atol=1e-12)
    for smoothing in (0.0, 0.5):
        relu = VNLeakyReLU(5, smoothing=smoothing).double()
        torch.testing.assert_close(relu(v), _vn_reference.leaky_relu(relu, v), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("masked", [False, True], ids=["full", "masked"])
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("make", [
    lambda: ec.canonicalizers.VectorNeurons(ec.SO3(), hidden=8, k=6),
    lambda: ec.canonicalizers.VectorNeurons(ec.O3(), hidden=8, k=6),
    lambda: ec.canonicalizers.ParticleVectorNeurons(ec.SE3(), features=1, hidden=8),
], ids=["vector_neurons_SO3", "vector_neurons_O3", "particle_vector_neurons"])
def test_canonicalizers_equal_the_plain_implementation(make, mode, masked):
    """Poses, output vectors and the prior's gradients of the whole canonicalizer, float64 and float32."""
    torch.manual_seed(0)
    canon = make().double().train(mode == "train")
    particles = isinstance(canon, ec.canonicalizers.ParticleVectorNeurons)
    x = torch.randn(3, 30, 7 if particles else 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    mask = _padding((3, 30)) if masked else None
    plain = _vn_reference.particle_vector_neurons if particles else _vn_reference.vector_neurons
    result = canon(x, mask=mask)
    pose, vectors = plain(canon, x, mask)
    torch.testing.assert_close(result.extras["vectors"], vectors, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(result.pose[:, :3, :3], pose, rtol=1e-10, atol=1e-10)
    fast = torch.autograd.grad(((result.pose[:, :3, :3] - torch.eye(3)) ** 2).sum(), list(canon.parameters()),
                               allow_unused=True)
    slow = torch.autograd.grad(((pose - torch.eye(3)) ** 2).sum(), list(canon.parameters()), allow_unused=True)
    for a, b in zip(fast, slow, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)
    single = canon.float().eval()
    torch.testing.assert_close(single(x.float(), mask=mask).extras["vectors"], plain(single, x.float(), mask)[1],
                               rtol=1e-4, atol=1e-5)
