"""Wrapping a plain CNN: ``Canonicalized`` and ``GroupAveraged`` make it invariant or equivariant.

The predictors here are ordinary, non-equivariant CNNs (the tests check that
they are not equivariant on their own). Through a canonicalizer whose
canonical form is an exact index copy, the wrapped model's outputs for ``x``
and ``g·x`` are bit-identical, so invariance is checked with zero tolerance.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import equicanon as ec
from equicanon.canonicalizers import Canonicalization, GroupConv
from equicanon.canonicalizers.functional import discrete_canonicalize
from equicanon.errors import ConfigError, GroupMismatchError
from equicanon.nn import GroupConv2d, LiftingConv2d
from equicanon.testing import assert_equivariant, assert_invariant, equivariance_error

GROUPS = [ec.C(4), ec.D(4)]
SIZES = [28, 29]  # even and odd
CLASSES = 5
SEGMENTS = 3
EXACT = {"atol": 0.0, "rtol": 0.0}



def _classifier() -> nn.Module:
    """A plain CNN: a stride-2 convolution and a linear head; not rotation invariant."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, CLASSES),
    )


def _segmenter() -> nn.Module:
    """Per-pixel logits ``(B, K, H, W)`` from a plain CNN with random (non-symmetric) filters."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, SEGMENTS, 3, padding=1))


class _Labeller(nn.Module):
    """Integer labels ``(B, H, W)``: the argmax of a segmenter."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _segmenter()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).argmax(dim=1)


def _canonicalizer(group) -> GroupConv:
    return GroupConv(group, 3, hidden=4, kernel_size=3)


def _images(size: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --- Canonicalized ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("output", [None, ec.actions.Trivial()], ids=["default", "Trivial"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("group", GROUPS, ids=repr)
def test_canonicalized_classifier_is_exactly_invariant(group, size, output):
    torch.manual_seed(0)
    predictor = _classifier()
    model = ec.Canonicalized(predictor, _canonicalizer(group), output=output).eval()
    x = _images(size)
    assert equivariance_error(predictor, group, ec.actions.Image(group), ec.actions.Trivial(), x).max_error > 1e-3
    assert_invariant(model, group, ec.actions.Image(group), x, **EXACT)
    assert_invariant(model, group, ec.actions.Image(group), x.float(), dtype=torch.float32, **EXACT)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("group", GROUPS, ids=repr)
def test_canonicalized_segmenter_is_exactly_equivariant(group, size):
    torch.manual_seed(0)
    predictor = _segmenter()
    image = ec.actions.Image(group)
    model = ec.Canonicalized(predictor, _canonicalizer(group), output=image).eval()
    x = _images(size)
    assert equivariance_error(predictor, group, image, image, x).max_error > 1e-3
    assert_equivariant(model, group, image, image, x, **EXACT)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("group", GROUPS, ids=repr)
def test_canonicalized_label_masks_are_exactly_equivariant(group, size):
    torch.manual_seed(0)
    model = ec.Canonicalized(_Labeller(), _canonicalizer(group), output=ec.actions.Mask(group)).eval()
    x = _images(size)
    with torch.no_grad():
        labels = model(x.float())
    assert labels.dtype == torch.int64 and labels.shape == (2, size, size)
    assert_equivariant(model, group, ec.actions.Image(group), ec.actions.Mask(group), x)  # integers: exact


@pytest.mark.parametrize("group", GROUPS, ids=repr)
def test_canonicalized_is_invariant_in_training_mode_too(group):
    """Batch statistics and the straight-through path do not change the forward value."""
    torch.manual_seed(0)
    model = ec.Canonicalized(_classifier(), _canonicalizer(group)).train()
    assert_invariant(model, group, ec.actions.Image(group), _images(29), **EXACT)


@pytest.mark.parametrize("output", ["trivial", "image"])
def test_return_canonicalization_gives_the_prediction_and_the_canonicalization(output):
    torch.manual_seed(0)
    group = ec.D(4)
    image = ec.actions.Image(group)
    predictor = _classifier() if output == "trivial" else _segmenter()
    model = ec.Canonicalized(predictor, _canonicalizer(group), output=image if output == "image" else None)
    model = model.double().eval()
    x = _images(29)
    with torch.no_grad():
        y, res = model(x, return_canonicalization=True)
        direct = model.canonicalizer(x)
        assert isinstance(res, Canonicalization)
        assert torch.equal(y, model(x))
        assert torch.equal(res.canonical, direct.canonical) and torch.equal(res.pose, direct.pose)
        expected = predictor(res.canonical)
        if output == "image":  # f(x) = h(x) ⋆ p(h(x)⁻¹·x)
            expected = image(res.pose, expected)
    assert torch.equal(y, expected)
    assert model.group == group


def test_canonicalized_rejects_an_output_action_of_another_group():
    with pytest.raises(GroupMismatchError):
        ec.Canonicalized(_segmenter(), _canonicalizer(ec.C(4)), output=ec.actions.Image(ec.C(8)))
    with pytest.raises(GroupMismatchError):
        ec.Canonicalized(_Labeller(), _canonicalizer(ec.C(4)), output=ec.actions.Mask(ec.D(4)))


def test_canonicalized_needs_a_canonicalizer():
    with pytest.raises(ConfigError):
        ec.Canonicalized(_classifier(), _classifier())


# --- gradients through the straight-through estimator ---------------------------------------------------------


def _task_loss(model: ec.Canonicalized, x: torch.Tensor) -> torch.Tensor:
    labels = torch.arange(x.shape[0]) % CLASSES
    return F.cross_entropy(model(x), labels)


def _softmax_parameters(canon: GroupConv) -> dict[str, nn.Parameter]:
    """The canonicalizer's parameters that move the softmax of its logits: all but the convolution biases.

    The lifting and hidden convolution biases are removed again by the train-mode batch norm that follows
    them, and the last one shifts all |G| logits equally, which a softmax ignores.
    """
    biases = {id(m.bias) for m in canon.modules() if isinstance(m, (LiftingConv2d, GroupConv2d))}
    return {name: p for name, p in canon.named_parameters() if id(p) not in biases}


@pytest.mark.parametrize("group", [ec.C(4), ec.D(4), ec.C(8)], ids=repr)
def test_task_loss_reaches_the_canonicalizer_through_straight_through(group):
    torch.manual_seed(0)
    canon = _canonicalizer(group)
    model = ec.Canonicalized(_classifier(), canon).train()
    x = torch.randn(4, 3, 15, 15, generator=torch.Generator().manual_seed(0))

    _task_loss(model, x).backward()  # the task loss only, no prior
    lift = next(m for m in canon.modules() if isinstance(m, LiftingConv2d))
    assert lift.weight.grad is not None and lift.weight.grad.abs().sum() > 0
    parameters = _softmax_parameters(canon)
    assert len(parameters) >= 5  # lifting and group-conv weights, batch-norm scales and shifts
    for name, p in parameters.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reached {name}"


@pytest.mark.parametrize("group", [ec.C(4), ec.D(4)], ids=repr)
def test_without_straight_through_the_canonicalizer_gets_no_gradient(group):
    """The hard pose is an argmax: on its own it passes no gradient to the logits."""
    torch.manual_seed(0)
    canon = _canonicalizer(group).train()
    predictor = _classifier()
    x = torch.randn(4, 3, 15, 15, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(4) % CLASSES

    # (a) canonicalizer under no_grad: the canonical form is a plain index copy of x
    with torch.no_grad():
        res = canon(x)
    F.cross_entropy(predictor(res.canonical), labels).backward()
    assert all(p.grad is None for p in canon.parameters())
    assert all(p.grad is not None for p in predictor.parameters())

    # (b) logits computed with gradients but detached before canonicalizing
    logits = canon.logits(x)
    canonical, _ = discrete_canonicalize(x, logits.detach(), group, canon.action)
    F.cross_entropy(predictor(canonical), labels).backward()
    assert all(p.grad is None for p in canon.parameters())


def test_continuous_pose_passes_task_gradients_to_the_canonicalizer():
    """For SO2 the canonical form is a differentiable rotation: no straight-through needed."""
    torch.manual_seed(0)
    canon = GroupConv(ec.SO2(), 3, hidden=4, kernel_size=3, refine=False)
    model = ec.Canonicalized(_classifier(), canon).train()
    _task_loss(model, torch.randn(4, 3, 15, 15, generator=torch.Generator().manual_seed(0))).backward()
    lift = next(m for m in canon.modules() if isinstance(m, LiftingConv2d))
    assert lift.weight.grad is not None and lift.weight.grad.abs().sum() > 0


# --- GroupAveraged ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("elements_per_call", [None, 1, 3])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("group", GROUPS, ids=repr)
def test_group_averaged_classifier_is_invariant(group, size, elements_per_call):
    torch.manual_seed(0)
    model = ec.GroupAveraged(_classifier(), group, elements_per_call=elements_per_call)
    assert_invariant(model, group, ec.actions.Image(group), _images(size))


@pytest.mark.parametrize("elements_per_call", [None, 3])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("group", GROUPS, ids=repr)
def test_group_averaged_segmenter_is_equivariant(group, size, elements_per_call):
    torch.manual_seed(0)
    image = ec.actions.Image(group)
    model = ec.GroupAveraged(_segmenter(), group, output=image, elements_per_call=elements_per_call)
    assert_equivariant(model, group, image, image, _images(size))


def test_group_averaged_is_the_mean_over_rotated_copies():
    """For C(4): ``mean_k rot90^k p(rot90^-k x)``, written with torch.rot90, whatever the chunking."""
    torch.manual_seed(0)
    predictor = _segmenter().double()
    x = _images(13)
    with torch.no_grad():
        expected = sum(torch.rot90(predictor(torch.rot90(x, -k, dims=(-2, -1))), k, dims=(-2, -1))
                       for k in range(4)) / 4
        for elements_per_call in (None, 1, 2, 3):
            model = ec.GroupAveraged(predictor, ec.C(4), output=ec.actions.Image(ec.C(4)),
                                     elements_per_call=elements_per_call)
            torch.testing.assert_close(model(x), expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("group", [ec.SO2(), ec.O2()], ids=repr)
def test_group_averaged_over_a_continuous_group_is_a_group_mismatch(group):
    with pytest.raises(GroupMismatchError, match="finite"):
        ec.GroupAveraged(_classifier(), group)
    with pytest.raises(ConfigError, match="finite"):
        ec.GroupAveraged(_classifier(), repr(group))


def test_group_averaged_rejects_actions_of_another_group():
    with pytest.raises(GroupMismatchError):
        ec.GroupAveraged(_segmenter(), ec.C(4), output=ec.actions.Image(ec.D(4)))
    with pytest.raises(GroupMismatchError):
        ec.GroupAveraged(_segmenter(), ec.C(4), input=ec.actions.Image(ec.C(8)))


@pytest.mark.parametrize("elements_per_call", [0, -1, 1.5])
def test_group_averaged_elements_per_call_must_be_a_positive_integer(elements_per_call):
    with pytest.raises(ConfigError, match="elements_per_call: expected an integer >= 1"):
        ec.GroupAveraged(_classifier(), ec.C(4), elements_per_call=elements_per_call)


def test_group_averaged_takes_a_group_name():
    model = ec.GroupAveraged(_classifier(), "C4")
    assert model.group == ec.C(4)
