"""The one training step and loop (``equicanon.training.step`` / ``fit``), in plain torch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import equicanon as ec
from equicanon.errors import ConfigError, DTypeError, InputValueError
from equicanon.training import fit, step
from equicanon.training.step import move_batch


def _model(group: str = "C4", classes: int = 3) -> ec.Canonicalized:
    torch.manual_seed(0)
    canon = ec.canonicalizers.create("group_conv", group=group, in_channels=1, hidden=4, kernel_size=3)
    return ec.Canonicalized(ec.models.SmallCNN(classes=classes, width=4), canon)


class _Refuses(nn.Module):
    """A predictor that must not run."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the predictor ran")


def test_the_loss_is_the_weighted_sum_of_the_terms_it_reports():
    model = _model()
    x, y = torch.rand(6, 1, 11, 11), torch.randint(0, 3, (6,))
    out = step(model, (x, y), prior_weight=7.0, generator=torch.Generator().manual_seed(1))
    assert set(out.terms) == {"task", "prior"}
    assert torch.allclose(out.loss, out.terms["task"] + 7.0 * out.terms["prior"])
    assert out.loss.requires_grad and not out.terms["prior"].requires_grad
    assert out.target is not None and out.target.shape == (6,)  # "auto": moved by C(4) elements


def test_without_labels_only_the_regularizers_are_computed_and_the_predictor_does_not_run():
    canon = ec.canonicalizers.create("group_conv", group="C4", in_channels=1, hidden=4, kernel_size=3)
    model = ec.Canonicalized(_Refuses(), canon)
    out = step(model, torch.rand(4, 1, 9, 9), prior_weight=1.0)
    assert set(out.terms) == {"prior"} and out.prediction is None
    alone = step(canon, torch.rand(4, 1, 9, 9), prior_weight=1.0, transform=None)
    assert set(alone.terms) == {"prior"} and alone.target is None


def test_the_prior_on_moved_copies_equals_the_prior_on_the_batch_for_exact_elements():
    """``pose(g·x) = g pose(x)`` exactly for quarter turns, so the prior of ``g·x`` aimed at ``g`` is the prior
    of ``x`` aimed at the identity (float64, where rounding cannot hide a difference)."""
    canon = ec.canonicalizers.create("group_conv", group="D4", in_channels=1, hidden=4, kernel_size=3).double().eval()
    x = torch.rand(8, 1, 10, 10, dtype=torch.float64)
    moved = step(canon, x, prior_weight=1.0, transform="group", generator=torch.Generator().manual_seed(3))
    assert moved.target is not None and len(set(moved.target.tolist())) > 1
    plain = step(canon, x, prior_weight=1.0, transform=None)
    assert torch.allclose(moved.terms["prior"], plain.terms["prior"], rtol=1e-10, atol=1e-12)


def test_angle_transform_aims_at_the_nearest_element():
    action = ec.actions.Image(ec.C(8))
    x = torch.rand(64, 1, 9, 9)
    moved, target = move_batch("angle", action, x, torch.Generator().manual_seed(0))
    assert moved.shape == x.shape and target.dtype == torch.int64
    # the same draws, as angles: the continuous rotations are uniform, the target is the nearest 45° step
    degrees = torch.rand(64, generator=torch.Generator().manual_seed(0)) * 360
    assert torch.equal(target, torch.round(degrees / 45).long() % 8)
    _, continuous = move_batch("angle", ec.actions.Image(ec.SO2()), x, torch.Generator().manual_seed(0))
    assert continuous.shape == (64, 2, 2)
    _, reflected = move_batch("angle", ec.actions.Image(ec.D(4)), x, torch.Generator().manual_seed(0))
    assert (reflected >= 4).any() and (reflected < 4).any()  # reflections are drawn for D(n)
    with pytest.raises(ConfigError, match="planar group"):
        move_batch("angle", ec.actions.Points(ec.SO3()), torch.rand(2, 5, 3), None)


def test_data_parallel_shards_draw_what_one_process_draws():
    action = ec.actions.Image(ec.C(8))
    x = torch.rand(8, 1, 5, 5)
    _, whole = move_batch("group", action, x, torch.Generator().manual_seed(5))
    parts = [move_batch("group", action, x[r::2], torch.Generator().manual_seed(5), shard=(r, 2))[1] for r in (0, 1)]
    assert torch.equal(whole[0::2], parts[0]) and torch.equal(whole[1::2], parts[1])


def test_a_plain_model_is_moved_only_with_an_action():
    net = ec.models.SmallCNN(classes=3, width=4)
    x, y = torch.rand(4, 1, 9, 9), torch.randint(0, 3, (4,))
    assert step(net, (x, y)).target is None
    out = step(net, (x, y), action=ec.actions.Image(ec.C(4)), generator=torch.Generator().manual_seed(0))
    assert out.target is not None and set(out.terms) == {"task"}


def test_regression_targets_move_with_the_output_action():
    """``f = Canonicalized(identity, canon, output=Image)`` is ``f(x) = x``; with ``y = x`` the loss on the moved
    batch is 0 only if ``y`` moved with ``x``."""
    group = ec.C(4)
    canon = ec.canonicalizers.create("group_conv", group=group, in_channels=1, hidden=4, kernel_size=3)
    model = ec.Canonicalized(nn.Identity(), canon, output=ec.actions.Image(group))
    x = torch.rand(6, 1, 9, 9)
    out = step(model, (x, x.clone()), task_loss="mse", generator=torch.Generator().manual_seed(2))
    assert out.target is not None and (out.target != 0).any()
    assert float(out.terms["task"]) < 1e-12
    unmoved = F.mse_loss(out.prediction, x)
    assert float(unmoved.detach()) > 1e-3


@pytest.mark.parametrize("kwargs, error, match", [
    ({}, ConfigError, "nothing to compute"),
    ({"contrastive_weight": 1.0}, ConfigError, "no contrastive loss"),
    ({"prior_weight": 1.0, "transform": "sideways"}, ConfigError, "transform"),
    ({"prior_weight": -1.0}, ConfigError, "prior_weight"),
])
def test_bad_options_are_typed_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        step(_model().canonicalizer, torch.rand(2, 1, 9, 9), **kwargs)


def test_bad_batches_and_plain_models_with_weights_are_typed_errors():
    with pytest.raises(DTypeError, match="batch"):
        step(_model(), "images")
    with pytest.raises(ConfigError, match="need a canonicalizer"):
        step(ec.models.SmallCNN(width=4), (torch.rand(2, 1, 9, 9), torch.zeros(2, dtype=torch.long)), prior_weight=1.0)


def test_fit_trains_logs_every_step_and_leaves_the_model_in_eval_mode():
    model = _model()
    x, y = torch.rand(16, 1, 11, 11), torch.randint(0, 3, (16,))
    before = [p.detach().clone() for p in model.parameters()]
    seen: list[int] = []
    logs = fit(model, (x, y), 3, batch_size=4, prior_weight=1.0, lr_schedule="onecycle",
               callback=lambda i, log: seen.append(i))
    assert seen == [0, 1, 2] and all(set(log) == {"loss", "task", "prior"} for log in logs)
    assert all(math.isfinite(log["loss"]) for log in logs)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    assert not model.training


def test_fit_keeps_frozen_parts_in_eval_mode_and_does_not_change_them():
    model = _model()
    model.canonicalizer.requires_grad_(False)
    frozen = {k: v.clone() for k, v in model.canonicalizer.state_dict().items()}
    modes: list[bool] = []
    fit(model, (torch.rand(8, 1, 11, 11), torch.randint(0, 3, (8,))), 2, batch_size=4,
        callback=lambda i, log: modes.append(model.canonicalizer.training))
    assert modes == [False, False]
    for k, v in model.canonicalizer.state_dict().items():
        assert torch.equal(v, frozen[k]), k  # batch-norm statistics included


def test_fit_is_reproducible_from_its_seed():
    x, y = torch.rand(16, 1, 11, 11), torch.randint(0, 3, (16,))
    runs = [fit(_model(), (x, y), 2, batch_size=4, prior_weight=1.0, seed=4) for _ in range(2)]
    assert runs[0] == runs[1]


def test_fit_refuses_a_non_finite_loss_and_missing_labels():
    x = torch.rand(8, 1, 11, 11)
    x[0, 0, 5, 5] = math.nan
    data = x[:1].expand(8, -1, -1, -1).clone()
    with pytest.raises(InputValueError, match="GroupConv: x: expected finite values"):  # the canonicalizer's check
        fit(_model(), data, 1, batch_size=4, prior_weight=1.0)
    unchecked = _model()
    unchecked.canonicalizer.check_inputs = False
    with pytest.raises(InputValueError, match="not finite"):  # the loop's check of the loss
        fit(unchecked, data, 1, batch_size=4, prior_weight=1.0)
    with pytest.raises(ConfigError, match="needs labels"):
        fit(_model(), torch.rand(8, 1, 11, 11), 1, batch_size=4, labels=True, prior_weight=1.0)
    assert fit(_model(), torch.rand(8, 1, 11, 11), 0) == []
