"""Continuous poses (SO2, O2): the coarse C(n) pose refined by a residual turn, its prior, its training."""

from __future__ import annotations

import math

import pytest
import torch

import equicanon as ec
from equicanon.canonicalizers import GroupConv
from equicanon.errors import ConfigError, ShapeError
from equicanon.metrics import pose_error
from equicanon.training import auto_transform, fit, step


def _canon(group, **kw) -> GroupConv:
    torch.manual_seed(0)
    return GroupConv(group, 1, hidden=4, kernel_size=3, refine_hidden=4, **kw)


def _oriented(n: int, seed: int, size: int = 16) -> torch.Tensor:
    """Images ``(n, 1, size, size)`` with one clear upright: a vertical bar with a blob at its top right,
    jittered in length and position, plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32) - (size - 1) / 2,
                            torch.arange(size, dtype=torch.float32) - (size - 1) / 2, indexing="ij")
    length = 3.5 + 1.5 * torch.rand(n, 1, 1, generator=g)
    shift = 0.8 * (torch.rand(n, 2, 1, 1, generator=g) - 0.5)
    x, y = xx - shift[:, 0], yy - shift[:, 1]  # row index grows downwards: the top is y < 0
    bar = torch.exp(-(x / 0.9) ** 2) * torch.sigmoid(3 * (length - y.abs()))
    blob = torch.exp(-((x - 2.5) ** 2 + (y + length) ** 2) / 2.0)
    images = bar + 1.5 * blob + 0.05 * torch.randn(n, size, size, generator=g)
    return images[:, None]


def _pose_errors(canon: GroupConv, x: torch.Tensor, seed: int) -> torch.Tensor:
    """Degrees between the pose of ``x`` turned by uniform random angles and the turn."""
    turns = ec.SO2().from_angle(torch.rand(len(x), generator=torch.Generator().manual_seed(seed)) * 360, degrees=True)
    with torch.no_grad():
        res = canon(canon.action(turns, x))
    return pose_error(res, turns, reduction="none")


def test_a_fresh_refined_canonicalizer_gives_the_coarse_pose():
    """The residual network starts at δ = 0: the pose is the C(rotations) element of the argmax."""
    canon = _canon(ec.SO2()).eval()
    x = torch.randn(6, 1, 17, 17, generator=torch.Generator().manual_seed(0))
    res = canon(x)
    assert canon.refine and res.logits is None
    coarse = res.extras["coarse_logits"].argmax(1)
    assert torch.equal(res.extras["coarse"], coarse)
    torch.testing.assert_close(res.pose, ec.C(8).matrix(coarse))
    assert torch.equal(res.extras["residual"], torch.zeros(6))


@pytest.mark.parametrize("group", [ec.SO2(), ec.O2()], ids=repr)
def test_refined_poses_are_orthogonal_with_the_groups_determinant(group):
    canon = _canon(group).eval()
    with torch.no_grad():
        canon.residual.head.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
        res = canon(torch.randn(8, 1, 16, 16, generator=torch.Generator().manual_seed(1)))
    eye = torch.eye(2).expand(8, 2, 2)
    torch.testing.assert_close(res.pose.transpose(1, 2) @ res.pose, eye, atol=1e-6, rtol=0)
    det = torch.linalg.det(res.pose)
    assert bool((det - 1).abs().lt(1e-6).all()) if group == ec.SO2() else bool(((det.abs() - 1).abs() < 1e-6).all())
    assert res.extras["residual"].abs().max() <= canon.max_residual


def test_refined_prior_is_the_coarse_cross_entropy_plus_the_residual_error():
    canon = _canon(ec.SO2()).double().eval()
    with torch.no_grad():
        canon.residual.head.bias.fill_(0.3)
        res = canon(torch.randn(4, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    coarse, delta, logits = res.extras["coarse"], res.extras["residual"], res.extras["coarse_logits"]
    step_ = 2 * math.pi / 8
    # targets 10° past each input's coarse pose: the nearest element is the coarse one, the residual should be 10°
    wanted = torch.full((4,), math.radians(10.0), dtype=torch.float64)
    target = ec.C(8).matrix(coarse, dtype=torch.float64) @ ec.SO2().from_angle(wanted).double()
    expected = torch.nn.functional.cross_entropy(logits, coarse) + (((delta - wanted) / (step_ / 2)) ** 2).mean()
    torch.testing.assert_close(canon.prior_loss(res, target), expected)
    # a target 180° off the coarse pose: only the cross-entropy counts (the residual cannot reach it)
    far = ec.C(8).matrix((coarse + 4) % 8, dtype=torch.float64)
    torch.testing.assert_close(canon.prior_loss(res, far), torch.nn.functional.cross_entropy(logits, (coarse + 4) % 8))


def test_refined_prior_refuses_a_target_of_the_wrong_shape():
    canon = _canon(ec.SO2())
    res = canon(torch.randn(3, 1, 9, 9))
    with pytest.raises(ShapeError, match=r"prior target: expected 3 matrices, shape \(3, 2, 2\), got shape \(3,\)"):
        canon.prior_loss(res, torch.zeros(3))


def test_refine_is_for_continuous_groups_only():
    with pytest.raises(ConfigError, match="refine is for continuous poses"):
        GroupConv(ec.C(8), 1, refine=True)
    assert not GroupConv(ec.C(8), 1).refine and GroupConv(ec.C(8), 1).residual is None
    assert GroupConv(ec.SO2(), 1, refine=False).residual is None


def test_task_gradients_reach_the_residual_network():
    canon = _canon(ec.SO2())
    with torch.no_grad():
        canon.residual.head.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    model = ec.Canonicalized(ec.models.SmallCNN(classes=3, in_channels=1, width=4), canon).train()
    x, y = torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 2, 0])
    torch.nn.functional.cross_entropy(model(x), y).backward()
    assert canon.residual.head.weight.grad is not None and canon.residual.head.weight.grad.abs().sum() > 0


def _random_baseline(test: torch.Tensor, seed: int) -> float:
    """Median pose error of untrained canonicalizers, averaged over 5 initialisations: an equivariant random
    network turns these alike-looking images by about one angle, which may by chance be near upright."""
    errors = []
    for init in range(5):
        torch.manual_seed(1000 + init)
        canon = GroupConv(ec.SO2(), 1, hidden=4, kernel_size=3, refine_hidden=8).eval()
        errors.append(float(_pose_errors(canon, test, seed).median()))
    return sum(errors) / len(errors)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_brief_prior_training_brings_the_pose_error_well_below_a_random_canonicalizers(seed):
    """Quick mode of docs/images.md's experiment: 120 prior steps on synthetic upright images (turned by
    uniform random angles by the default transform) take the median pose error at random angles from tens of
    degrees (random canonicalizers) to a few degrees (bound 20°; the margins are printed)."""
    train, test = _oriented(512, seed), _oriented(200, 100 + seed)
    before = _random_baseline(test, seed)
    torch.manual_seed(seed)
    canon = GroupConv(ec.SO2(), 1, hidden=4, kernel_size=3, refine_hidden=8)
    fit(canon, train, 120, lr=3e-3, batch_size=32, prior_weight=1.0, seed=seed)
    after = float(_pose_errors(canon, test, seed).median())
    print(f"seed {seed}: median pose error {before:.1f}° (random, 5 inits) -> {after:.1f}° (trained)")
    assert before > 40, f"random canonicalizers: median {before:.1f}°"
    assert after < min(20.0, before / 3), f"trained: median {after:.1f}° (random: {before:.1f}°)"


def test_auto_transform_turns_images_by_continuous_angles_and_moves_points_by_the_group():
    assert auto_transform(ec.actions.Image(ec.C(8))) == "angle"
    assert auto_transform(ec.actions.Image(ec.SO2())) == "angle"
    assert auto_transform(ec.actions.Points(ec.SO3())) == "group"
    assert auto_transform(None) is None
    canon = ec.canonicalizers.create("group_conv", group="C8", in_channels=1, hidden=4)
    x = torch.rand(6, 1, 16, 16)
    auto = step(canon, x, prior_weight=1.0, generator=torch.Generator().manual_seed(3))
    angle = step(canon, x, prior_weight=1.0, transform="angle", generator=torch.Generator().manual_seed(3))
    assert torch.equal(auto.target, angle.target) and auto.target.dtype == torch.long
    torch.testing.assert_close(auto.loss, angle.loss)


def test_dense_targets_keep_exact_group_moves_and_refuse_continuous_turns():
    """Masks follow exact group elements; a continuous turn of the input would leave them behind."""
    group = ec.C(4)
    canon = ec.canonicalizers.create("group_conv", group=group, in_channels=1, hidden=4, kernel_size=3)
    model = ec.Canonicalized(torch.nn.Identity(), canon, output=ec.actions.Image(group))
    assert auto_transform(canon.action, model.output) == "group"
    assert auto_transform(canon.action, ec.actions.Trivial()) == "angle"
    x = torch.rand(4, 1, 9, 9)
    out = step(model, (x, x.clone()), task_loss="mse", generator=torch.Generator().manual_seed(0))
    assert float(out.terms["task"]) < 1e-12  # y moved with x
    with pytest.raises(ConfigError, match=r"transform='angle' turns the inputs by continuous angles, which targets"):
        step(model, (x, x.clone()), task_loss="mse", transform="angle")


def test_adapt_pretrained_for_so2_refines_and_trains_on_continuous_turns():
    torch.manual_seed(0)
    pretrained = ec.models.SmallCNN(classes=3, in_channels=1, width=4)
    before = {k: v.clone() for k, v in pretrained.state_dict().items()}
    seen: list[dict[str, float]] = []
    model = ec.adapt_pretrained(pretrained, "SO2", in_channels=1, canonicalizer_args={"hidden": 4, "refine_hidden": 4},
                                data=_oriented(32, 0), steps=3, batch_size=8, callback=lambda i, log: seen.append(log))
    assert model.canonicalizer.refine and len(seen) == 3 and all(math.isfinite(log["prior"]) for log in seen)
    assert all(torch.equal(v, before[k]) for k, v in pretrained.state_dict().items())  # frozen: never trained
    # the residual network learnt from the turns (its zero-initialised head moved)
    assert model.canonicalizer.residual.head.weight.abs().sum() > 0
    logits = model(torch.rand(2, 1, 16, 16))
    assert logits.shape == (2, 3)
