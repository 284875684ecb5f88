"""Metrics: identity rate (EquiOptAdapt's identity metric), pose agreement, argmax margin."""

from __future__ import annotations

import pytest
import torch

import equicanon as ec
from equicanon.canonicalizers import Canonicalization, Contrastive, GroupConv
from equicanon.errors import ConfigError, ElementError, GroupMismatchError, ShapeError
from equicanon.metrics import argmax_margin, identity_rate, pose_agreement, pose_error


def _result(group, pose, logits=None) -> Canonicalization:
    pose = torch.as_tensor(pose)
    return Canonicalization(torch.zeros(pose.shape[0], 1), pose, group, logits=logits)


def test_identity_rate_is_the_share_of_identity_poses():
    res = _result(ec.C(8), [0, 3, 0, 0, 7])
    rate = identity_rate(res)
    assert rate.ndim == 0 and rate.dtype == torch.float32
    assert float(rate) == pytest.approx(0.6)
    assert torch.equal(identity_rate(res, reduction="none"), torch.tensor([True, False, True, True, False]))


def test_identity_rate_of_matrix_and_permutation_poses():
    so2 = ec.SO2()
    pose = so2.from_angle(torch.tensor([0.0, 1e-9, 0.1, 3.0], dtype=torch.float64))
    assert float(identity_rate(_result(so2, pose))) == pytest.approx(0.5)  # within atol=1e-6 of I: the first two
    assert float(identity_rate(_result(so2, pose), atol=0.2)) == pytest.approx(0.75)
    perms = torch.tensor([[0, 1, 2], [1, 0, 2]])
    assert float(identity_rate(_result(ec.S(3), perms))) == pytest.approx(0.5)
    assert float(identity_rate(_result(ec.Octahedral(), [0, 0, 5, 23]))) == pytest.approx(0.5)


def test_pose_agreement_counts_equivariant_poses():
    group = ec.D(4)
    pose = torch.tensor([0, 1, 5, 7])
    g = torch.tensor([2, 6, 1, 4])
    good = group.compose(g, pose)
    bad = good.clone()
    bad[1] = (bad[1] + 1) % 8
    assert float(pose_agreement(_result(group, pose), _result(group, good), g)) == 1.0
    assert float(pose_agreement(_result(group, pose), _result(group, bad), g)) == pytest.approx(0.75)
    per = pose_agreement(_result(group, pose), _result(group, bad), g, reduction="none")
    assert torch.equal(per, torch.tensor([True, False, True, True]))
    one = torch.tensor([3])  # one element for the whole batch
    assert float(pose_agreement(_result(group, pose), _result(group, group.compose(one, pose)), one)) == 1.0


def test_pose_agreement_of_a_real_canonicalizer_on_exact_and_interpolated_angles():
    torch.manual_seed(0)
    x = torch.randn(6, 1, 17, 17, generator=torch.Generator().manual_seed(0))
    canon = Contrastive(ec.D(4), ec.models.ConvEncoder(1, out_dim=8, hidden=4)).eval()
    res = canon(x)
    for k in range(8):
        g = torch.full((6,), k)
        assert float(pose_agreement(res, canon(canon.action(g, x)), g)) == 1.0
    so2 = GroupConv(ec.SO2(), 1, hidden=2, kernel_size=3).double().eval()
    xd = x.double()
    g = ec.SO2().from_angle(torch.full((6,), 90.0, dtype=torch.float64), degrees=True)
    res, moved = so2(xd), so2(ec.actions.Image(ec.SO2())(g, xd))
    assert float(pose_agreement(res, moved, g, atol=1e-6)) == 1.0


def test_argmax_margin_is_top1_minus_top2():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.5], [5.0, -1.0, 0.0, 4.0]], requires_grad=True)
    res = _result(ec.C(4), [1, 0], logits=logits)
    per = argmax_margin(res, reduction="none")
    torch.testing.assert_close(per, torch.tensor([0.5, 1.0]))
    assert not per.requires_grad
    torch.testing.assert_close(argmax_margin(res), torch.tensor(0.75))


def test_metric_errors_are_typed():
    with pytest.raises(ConfigError, match="logits"):
        argmax_margin(_result(ec.SO2(), ec.SO2().identity(2)))
    with pytest.raises(ShapeError, match=r"\|G\| >= 2"):
        argmax_margin(_result(ec.C(1), [0, 0], logits=torch.zeros(2, 1)))
    with pytest.raises(GroupMismatchError):
        pose_agreement(_result(ec.C(4), [0]), _result(ec.C(8), [0]), torch.tensor([0]))
    with pytest.raises(ElementError):
        pose_agreement(_result(ec.C(4), [0]), _result(ec.C(4), [0]), torch.tensor([9]))
    with pytest.raises(ConfigError, match="reduction"):
        identity_rate(_result(ec.C(4), [0]), reduction="sum")
    with pytest.raises(ShapeError, match="empty"):
        identity_rate(_result(ec.C(4), torch.zeros(0, dtype=torch.long)))


def test_identity_rate_rises_when_the_prior_is_learned():
    """The identity metric measures the prior: training on upright data with it drives the rate to 1."""
    torch.manual_seed(0)
    canon = Contrastive(ec.C(4), ec.models.ConvEncoder(1, out_dim=8, hidden=4))
    x = torch.randn(8, 1, 12, 12, generator=torch.Generator().manual_seed(2))
    opt = torch.optim.Adam(canon.parameters(), lr=1e-2)
    with torch.no_grad():
        before = float(identity_rate(canon(x)))
    for _ in range(30):
        loss = canon.prior_loss(canon(x))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(identity_rate(canon(x)))
    assert before < 1.0 and after == 1.0


def test_pose_error_is_the_rotation_angle_between_expected_and_actual_poses():
    so2 = ec.SO2()
    angles = torch.tensor([0.0, 10.0, 90.0, 200.0], dtype=torch.float64)
    pose = so2.from_angle(angles, degrees=True)
    g = so2.from_angle(torch.tensor([30.0, 30.0, 30.0, 30.0], dtype=torch.float64), degrees=True)
    off = torch.tensor([0.0, 3.0, -5.0, 170.0], dtype=torch.float64)  # pose(g·x) misses g·pose(x) by these angles
    moved = so2.compose(so2.from_angle(off, degrees=True), so2.compose(g, pose))
    err = pose_error(_result(so2, pose), _result(so2, moved), g, reduction="none")
    assert err.dtype == torch.float64
    torch.testing.assert_close(err, off.abs(), atol=1e-6, rtol=0)
    assert float(pose_error(_result(so2, pose), _result(so2, moved), g)) == pytest.approx(off.abs().mean().item())
    # the same poses agree within a tolerance of ~3 degrees, not within 1e-6
    assert float(pose_agreement(_result(so2, pose), _result(so2, moved), g)) == pytest.approx(0.25)
    assert float(pose_agreement(_result(so2, pose), _result(so2, moved), g, atol=0.06)) == pytest.approx(0.5)


def test_pose_error_in_3d_reflections_and_rigid_motions():
    so3, o3, se3 = ec.SO3(), ec.O3(), ec.SE3()
    gen = torch.Generator().manual_seed(0)
    pose, g = (so3.cast(so3.sample(5, generator=gen), torch.float64) for _ in range(2))
    axis_angle = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64) * torch.deg2rad(torch.tensor(12.0, dtype=torch.float64))
    tilt = torch.linalg.matrix_exp(torch.tensor([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]],
                                                dtype=torch.float64) * axis_angle[0, 2]).expand(5, 3, 3)
    moved = tilt @ g @ pose
    torch.testing.assert_close(pose_error(_result(so3, pose), _result(so3, moved), g, reduction="none"),
                               torch.full((5,), 12.0, dtype=torch.float64), atol=1e-6, rtol=0)
    flip = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)).expand(5, 3, 3)
    assert torch.equal(pose_error(_result(o3, pose), _result(o3, flip @ g @ pose), g, reduction="none"),
                       torch.full((5,), 180.0, dtype=torch.float64))
    rigid = torch.eye(4, dtype=torch.float64).repeat(5, 1, 1)
    rigid[:, :3, :3], rigid[:, :3, 3] = pose, 1.0
    shifted = se3.compose(g_rigid := se3.identity(5, dtype=torch.float64), rigid).clone()
    shifted[:, :3, 3] += 5.0  # translations are not counted
    assert float(pose_error(_result(se3, rigid), _result(se3, shifted), g_rigid)) == pytest.approx(0.0, abs=1e-6)


def test_pose_error_refuses_finite_groups():
    with pytest.raises(ConfigError, match="finite: use pose_agreement"):
        pose_error(_result(ec.C(4), [0, 1]), _result(ec.C(4), [1, 2]), torch.tensor([1, 1]))
    with pytest.raises(ConfigError, match="atol"):
        pose_agreement(_result(ec.C(4), [0, 1]), _result(ec.C(4), [1, 2]), torch.tensor([1, 1]), atol=-1.0)
