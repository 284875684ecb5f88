"""Equivariant adaptation of pretrained models: the prior towards given poses, ``transform``,
``ec.adapt_pretrained`` / ``ec.train_canonicalizer`` (experiment 1's script runs in tests/test_experiments.py)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import equicanon as ec
from equicanon.canonicalizers import Contrastive, GroupConv
from equicanon.canonicalizers.image import center_crop_resize
from equicanon.errors import ConfigError, DTypeError, InputValueError, ShapeError
from equicanon.metrics import identity_rate
from equicanon.models import ConvEncoder


def predictor(classes: int = 3) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, classes))


def arrows(n: int, size: int = 15, seed: int = 0) -> torch.Tensor:
    """Upright images with one clear orientation: a bar from the centre to the top edge, plus a little noise."""
    gen = torch.Generator().manual_seed(seed)
    x = 0.05 * torch.rand(n, 1, size, size, generator=gen)
    x[:, :, : size // 2, size // 2] += 1.0
    x[:, :, 1, size // 2 - 2: size // 2 + 3] += 1.0
    return x


# --- the prior towards given poses ----------------------------------------------------------------------------


def test_prior_of_moved_inputs_aimed_at_the_moves_equals_the_prior_for_exact_elements():
    torch.manual_seed(0)
    group = ec.C(4)
    canon = GroupConv(group, 1, hidden=4, kernel_size=3).double().eval()
    x = torch.randn(6, 1, 11, 11, dtype=torch.float64)
    g = torch.tensor([0, 1, 2, 3, 1, 2])
    moved = canon(canon.action(g, x))
    assert torch.allclose(canon.prior_loss(moved, g), canon.prior_loss(canon(x)), atol=1e-10)
    # aiming at the identity instead is a different (wrong) loss for moved inputs
    assert not torch.allclose(canon.prior_loss(moved), canon.prior_loss(canon(x)), atol=1e-3)


def test_matrix_prior_with_a_target_is_the_distance_to_it():
    canon = GroupConv(ec.SO2(), 1, hidden=4, kernel_size=3, refine=False).eval()
    res = canon(torch.randn(3, 1, 9, 9))
    target = ec.SO2().matrix(ec.SO2().sample(3, generator=torch.Generator().manual_seed(1)))
    expected = ((res.pose - target) ** 2).sum((1, 2)).mean()
    assert torch.allclose(canon.prior_loss(res, target), expected)


@pytest.mark.parametrize("target", [torch.zeros(2, dtype=torch.long), torch.zeros(3), torch.zeros(3, 1, dtype=torch.long)])
def test_a_target_of_the_wrong_shape_or_dtype_is_refused(target):
    canon = GroupConv(ec.C(4), 1, hidden=4, kernel_size=3)
    res = canon(torch.randn(3, 1, 9, 9))
    with pytest.raises(ShapeError, match="prior target"):
        canon.prior_loss(res, target)


def test_a_matrix_target_of_the_wrong_shape_is_refused():
    with pytest.raises(ShapeError, match="prior target"):
        ec.canonicalizers.functional.matrix_prior(torch.eye(2).expand(3, 2, 2), torch.eye(3))


def test_resize_never_enlarges_the_canonicalizers_view():
    x = torch.randn(2, 1, 28, 28)
    assert center_crop_resize(x, None, 96).shape == x.shape
    assert center_crop_resize(x, 0.8, 96).shape[-1] == 22
    assert center_crop_resize(x, None, 14).shape[-1] == 14


# --- CanonicalizationModule(transform=...) -----------------------------------------------------------------------

lightning = pytest.importorskip("lightning")
from equicanon.training import CanonicalizationModule  # noqa: E402


def test_transform_moves_batches_and_aims_the_prior_at_the_moves():
    torch.manual_seed(0)
    canon = GroupConv(ec.C(4), 1, hidden=4, kernel_size=3)
    model = ec.Canonicalized(predictor(), canon).double().eval()
    x, y = torch.randn(8, 1, 11, 11, dtype=torch.float64), torch.randint(3, (8,))
    plain = CanonicalizationModule(model, prior_weight=100.0, transform=None)
    moved = CanonicalizationModule(model, prior_weight=100.0, transform="group")
    assert CanonicalizationModule(model, prior_weight=100.0).transform == "angle"  # the default for images
    a, b = plain.losses((x, y)), moved.losses((x, y))
    # an exactly invariant model: the same task loss, and the moved prior is the same prior
    assert torch.allclose(a["task"], b["task"], atol=1e-10)
    assert torch.allclose(a["prior"], b["prior"], atol=1e-10)
    # while the inputs really were moved: a plain (non-invariant) model sees different losses
    net = predictor().double()
    bare = CanonicalizationModule(net, val_action=ec.actions.Image(ec.C(4)))
    augmented = CanonicalizationModule(net, val_action=ec.actions.Image(ec.C(4)), transform="group")
    assert bare.transform is None  # the default for a plain model: as given
    assert not torch.allclose(bare.losses((x, y))["task"], augmented.losses((x, y))["task"])
    # the draws are seeded: the same step draws the same elements
    assert torch.equal(augmented.losses((x, y))["task"], augmented.losses((x, y))["task"])


def test_transform_needs_a_group_and_a_known_value():
    with pytest.raises(ConfigError, match="needs a group"):
        CanonicalizationModule(predictor(), transform="group")
    with pytest.raises(ConfigError, match="transform"):
        CanonicalizationModule(ec.Canonicalized(predictor(), GroupConv(ec.C(4), 1, hidden=4)), transform="yes")


SMALL = {"hidden": 4, "kernel_size": 3}  # a small GroupConv for fast tests

# --- adapt_pretrained / train_canonicalizer ------------------------------------------------------------------


def test_adapt_pretrained_learns_the_upright_pose_and_leaves_the_predictor_alone():
    torch.manual_seed(0)
    net = predictor()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    calls = []
    net.register_forward_hook(lambda *_: calls.append(1))
    x = arrows(64)
    x_before = x.clone()
    losses: list[float] = []
    model = ec.adapt_pretrained(net, ec.C(4), in_channels=1, canonicalizer_args=SMALL, data=x, steps=60, batch_size=16,
                                lr=3e-3, callback=lambda step, terms: losses.append(terms["prior"]))
    assert isinstance(model, ec.Canonicalized) and not model.training
    assert model.predictor is net and not calls  # prior only: the predictor is never run ...
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # ... nor changed
    assert torch.equal(x, x_before)
    assert len(losses) == 60 and losses[-1] < 0.2 * losses[0]
    with torch.no_grad():
        held_out = arrows(32, seed=1)
        assert float(identity_rate(model.canonicalizer(held_out))) == 1.0
        # so the adapted model says on rotated inputs what the pretrained one says upright
        rotated = model.canonicalizer.action(torch.full((32,), 3), held_out)
        assert torch.allclose(model(rotated), net(held_out), atol=1e-5)
    ec.testing.assert_equivariant(model.double(), ec.C(4), ec.actions.Image(ec.C(4)), ec.actions.Trivial(),
                                  x=torch.randn(2, 1, 13, 13, dtype=torch.float64))


@pytest.mark.parametrize("size", [14, 15])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adapted_model_is_invariant_on_the_groups_testing_elements(size, dtype):
    torch.manual_seed(0)
    model = ec.adapt_pretrained(predictor(), ec.D(4), in_channels=1, canonicalizer_args=SMALL).to(dtype)
    ec.testing.assert_equivariant(model, ec.D(4), ec.actions.Image(ec.D(4)), ec.actions.Trivial(),
                                  x=torch.randn(2, 1, size, size, dtype=dtype))


def test_finetune_trains_both_parts_and_dense_labels_move_with_the_output_action():
    torch.manual_seed(0)
    net = nn.Conv2d(1, 2, 3, padding=1)  # a dense predictor: per-pixel logits of 2 classes
    before = net.weight.detach().clone()
    x = arrows(16)
    masks = (x[:, 0] > 0.5).long()
    group = ec.C(4)
    model = ec.adapt_pretrained(net, group, in_channels=1, output=ec.actions.Mask(group), canonicalizer_args=SMALL,
                                data=(x, masks), steps=3, finetune=True, batch_size=4,
                                task_loss=torch.nn.functional.cross_entropy)
    assert not torch.equal(net.weight, before)
    assert model(x).shape == (16, 2, 15, 15)


def test_contrastive_canonicalizer_with_its_loss():
    torch.manual_seed(0)
    canon = Contrastive(ec.C(4), ConvEncoder(1, out_dim=8, hidden=4))
    terms: list[dict[str, float]] = []
    ec.adapt_pretrained(predictor(), ec.C(4), canonicalizer=canon, data=arrows(8), steps=2, batch_size=4,
                        contrastive_weight=0.1, callback=lambda s, t: terms.append(t))
    assert set(terms[0]) == {"loss", "prior", "contrastive"}
    assert math.isclose(terms[0]["loss"], 100 * terms[0]["prior"] + 0.1 * terms[0]["contrastive"], rel_tol=1e-5)


def test_iterables_of_batches_are_cycled_and_the_transform_can_be_off():
    loader = [arrows(4, seed=s) for s in range(2)]
    seen = []
    model = ec.adapt_pretrained(predictor(), ec.C(4), in_channels=1, canonicalizer_args=SMALL, data=loader, steps=5,
                                transform=None, callback=lambda s, t: seen.append(s))
    assert seen == [0, 1, 2, 3, 4] and isinstance(model, ec.Canonicalized)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"steps": 3}, ConfigError, "no data"),
    ({"data": "images", "steps": 1}, DTypeError, "expected a tensor"),
    ({"data": torch.zeros(0, 1, 9, 9), "steps": 1}, ConfigError, "empty"),
    ({"data": torch.zeros(4, 1, 9, 9), "steps": 1, "finetune": True}, ConfigError, "needs labels"),
    ({"data": (torch.zeros(4, 1, 9, 9), torch.zeros(3, dtype=torch.long)), "steps": 1}, ConfigError, "4 inputs but 3"),
    ({"data": torch.full((4, 1, 9, 9), math.nan), "steps": 1}, InputValueError, "expected finite values"),
    ({"data": torch.zeros(4, 1, 9, 9), "steps": -1}, ConfigError, "steps"),
    ({"data": torch.zeros(4, 1, 9, 9), "steps": 1, "prior_weight": 0.0}, ConfigError, "nothing to train"),
    ({"canonicalizer": GroupConv(ec.C(8), 1, hidden=4)}, ConfigError, "is not C\\(4\\)"),
    ({"canonicalizer": nn.Identity()}, ConfigError, "Canonicalizer"),
    ({"canonicalizer": GroupConv(ec.C(4), 1, hidden=4), "contrastive_weight": 1.0, "data": torch.zeros(4, 1, 9, 9),
      "steps": 1}, ConfigError, "no contrastive loss"),
])
def test_bad_arguments_get_typed_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        if "canonicalizer" not in kwargs:
            kwargs = {"canonicalizer_args": SMALL, **kwargs}
        ec.adapt_pretrained(predictor(), ec.C(4), in_channels=1, **kwargs)


def test_bad_model_or_group():
    with pytest.raises(ConfigError, match=r"nn\.Module"):
        ec.adapt_pretrained(lambda x: x, ec.C(4))
    with pytest.raises(ConfigError, match="unknown group"):
        ec.adapt_pretrained(predictor(), "C-four")
    with pytest.raises(ConfigError, match="already built"):
        ec.adapt_pretrained(predictor(), "C4", canonicalizer=GroupConv(ec.C(4), 1, hidden=4), canonicalizer_args=SMALL)
    with pytest.raises(ConfigError, match=r"ec\.Canonicalized"):
        ec.train_canonicalizer(predictor(), torch.zeros(2, 1, 9, 9), 1)

