"""Metrics: identity rate (EquiOptAdapt's identity metric), pose agreement, argmax margin."""

from __future__ import annotations

import pytest
import torch

import equicanon as ec
from equicanon.canonicalizers import Canonicalization, Contrastive, GroupConv
from equicanon.errors import ConfigError, DTypeError, ElementError, GroupMismatchError, ShapeError
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


def _rot(*degrees: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return ec.SO2().from_angle(torch.tensor(degrees, dtype=dtype), degrees=True)


def test_pose_error_against_a_target_is_the_angle_from_upright():
    so2, o2 = ec.SO2(), ec.O2()
    res = _result(so2, _rot(30.0, 0.0, -45.0, 180.0))
    per = pose_error(res, _rot(0.0), reduction="none")  # one target element for the whole batch
    assert per.dtype == torch.float64 and per.shape == (4,)
    torch.testing.assert_close(per, torch.tensor([30.0, 0.0, 45.0, 180.0], dtype=torch.float64), atol=1e-6, rtol=0)
    assert float(pose_error(res, _rot(0.0))) == pytest.approx(63.75, abs=1e-6)
    # one target per input: the poses of inputs moved by these angles, compared with the angles
    torch.testing.assert_close(pose_error(res, _rot(40.0, 0.0, -45.0, 170.0), reduction="none"),
                               torch.tensor([10.0, 0.0, 0.0, 10.0], dtype=torch.float64), atol=1e-6, rtol=0)
    flip = torch.tensor([[[1.0, 0.0], [0.0, -1.0]]], dtype=torch.float64)
    assert pose_error(_result(o2, flip @ _rot(10.0, 20.0)), _rot(10.0, 20.0), reduction="none").tolist() == [180.0, 180.0]
    rigid = ec.SE3().identity(2, dtype=torch.float64)
    rigid[:, :3, 3] = 7.0  # translations are not counted
    assert pose_error(_result(ec.SE3(), rigid), ec.SE3().identity(1, dtype=torch.float64)).item() == pytest.approx(0.0, abs=1e-6)


def test_pose_error_between_two_batches_of_poses_of_a_group_or_a_group_name():
    so2, o2 = ec.SO2(), ec.O2()
    assert float(pose_error(so2, _rot(30.0), _rot(0.0))) == pytest.approx(30.0, abs=1e-6)
    for group in (so2, "SO2"):
        torch.testing.assert_close(pose_error(group, _rot(30.0, 90.0, -170.0), _rot(0.0, 0.0, 170.0), reduction="none"),
                                   torch.tensor([30.0, 90.0, 20.0], dtype=torch.float64), atol=1e-6, rtol=0)
    # one element on either side is broadcast to the other batch
    torch.testing.assert_close(pose_error("SO2", _rot(0.0), _rot(30.0, -60.0), reduction="none"),
                               torch.tensor([30.0, 60.0], dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(pose_error(so2, _rot(30.0, -60.0), _rot(0.0), reduction="none"),
                               torch.tensor([30.0, 60.0], dtype=torch.float64), atol=1e-6, rtol=0)
    reflection = torch.tensor([[[1.0, 0.0], [0.0, -1.0]]], dtype=torch.float64)  # a reflection vs a rotation: 180
    assert pose_error(o2, reflection, _rot(0.0, 30.0), reduction="none").tolist() == [180.0, 180.0]
    assert pose_error("O2", reflection @ _rot(5.0), reflection @ _rot(25.0)).item() == pytest.approx(20.0, abs=1e-6)
    so3 = ec.SO3()
    tilt = torch.linalg.matrix_exp(torch.tensor([[[0.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]],
                                                dtype=torch.float64) * torch.deg2rad(torch.tensor(12.0, dtype=torch.float64)))
    pose = so3.sample(3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(pose_error("SO3", tilt @ pose, pose, reduction="none"),
                               torch.full((3,), 12.0, dtype=torch.float64), atol=1e-6, rtol=0)
    se3 = ec.SE3()
    moved = se3.from_parts(tilt.expand(3, 3, 3) @ pose, torch.ones(3, 3, dtype=torch.float64))
    still = se3.from_parts(pose, torch.zeros(3, 3, dtype=torch.float64))
    torch.testing.assert_close(pose_error("SE3", moved, still, reduction="none"),
                               torch.full((3,), 12.0, dtype=torch.float64), atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pose_error_in_float32_and_float64(dtype):
    atol = 1e-3 if dtype == torch.float32 else 1e-6  # float32 rotation matrices are orthogonal to ~1e-7: ~1e-5° at 0°
    pose = _rot(30.0, 0.0, -135.0, dtype=dtype)
    want = torch.tensor([30.0, 0.0, 135.0], dtype=torch.float64)
    for err in (pose_error(_result(ec.SO2(), pose), _rot(0.0, dtype=dtype), reduction="none"),
                pose_error("SO2", pose, _rot(0.0, dtype=dtype), reduction="none"),
                pose_error(ec.SO2(), pose, _rot(0.0), reduction="none")):  # mixed dtypes are compared in float64
        assert err.dtype == torch.float64
        torch.testing.assert_close(err, want, atol=atol, rtol=0)
    mean = pose_error(ec.SO2(), pose, _rot(0.0, dtype=dtype))
    assert mean.ndim == 0 and mean.dtype == torch.float64 and float(mean) == pytest.approx(55.0, abs=atol)


def test_pose_error_neither_changes_nor_differentiates_through_its_inputs():
    so2 = ec.SO2()
    pose = _rot(30.0, 60.0).requires_grad_()
    target = _rot(0.0).requires_grad_()
    g = _rot(10.0).requires_grad_()
    moved = so2.compose(_rot(10.0), _rot(30.0, 60.0)).requires_grad_()
    copies = [t.detach().clone() for t in (pose, target, g, moved)]
    outs = [pose_error(_result(so2, pose), target, reduction="none"), pose_error(so2, pose, target, reduction="none"),
            pose_error("SO2", target, pose), pose_error(_result(so2, pose), _result(so2, moved), g)]
    assert not any(out.requires_grad for out in outs)
    for t, copy in zip((pose, target, g, moved), copies, strict=True):
        assert torch.equal(t.detach(), copy) and t.grad is None
    assert pose.shape == (2, 2, 2) and target.shape == (1, 2, 2)


_SO2 = ec.SO2()
_RES = _result(_SO2, _rot(30.0, 60.0))
_POSE_ERROR_MISUSES = [  # (args, keywords, error class, message)
    ((torch.zeros(2, 2, 2, dtype=torch.float64), _rot(0.0), _rot(0.0)), {}, DTypeError,
     r"expected a Canonicalization .* or a group or group name .* as the first argument, got a tensor of shape \(2, 2, 2\)"),
    ((3, _rot(0.0), _rot(0.0)), {}, DTypeError, r"as the first argument, got int 3"),
    ((_SO2,), {}, ConfigError, r"expected 2 or 3 arguments, .*got one \(the group SO2\(\)\)"),
    ((_RES,), {}, ConfigError, r"expected 2 or 3 arguments"),
    ((_RES, _result(_SO2, _rot(40.0, 70.0))), {}, ConfigError, r"pose_error\(result, transformed, g\): missing g"),
    ((_RES, _rot(40.0, 70.0), _rot(10.0)), {}, DTypeError,
     r"transformed: expected a Canonicalization \(the result for g·x\), got a tensor of shape \(2, 2, 2\)"
     r".*pose_error\(result, target\)"),
    ((_SO2, _rot(0.0)), {}, ConfigError, r"pose_error\(group, pose_a, pose_b\): expected two batches of SO2\(\) elements"),
    (("SO2", _RES, _rot(0.0)), {}, DTypeError, r"pose_a: expected a tensor of SO2\(\) elements, got a Canonicalization.*\.pose"),
    (("SO2", _rot(0.0), _RES), {}, DTypeError, r"pose_b: expected a tensor of SO2\(\) elements, got a Canonicalization"),
    ((ec.C(4), torch.tensor([0, 1]), torch.tensor([1, 1])), {}, ConfigError, r"C\(4\) is finite: use pose_agreement"),
    (("D4", torch.tensor([0]), torch.tensor([5])), {}, ConfigError, r"D\(4\) is finite: use pose_agreement"),
    ((_result(ec.C(4), [0, 1]), torch.tensor([1])), {}, ConfigError, r"C\(4\) is finite: use pose_agreement"),
    (("SO5", _rot(0.0), _rot(0.0)), {}, ConfigError, r"unknown pose_error: group 'SO5': expected one of .*'SO2'"),
    (("SO3", _rot(0.0), _rot(0.0)), {}, ElementError,
     r"pose_a: expected SO3\(\) elements as matrices of shape \(B, 3, 3\), got shape \(1, 2, 2\)"),
    ((_SO2, _rot(0.0), torch.zeros(2, 2)), {}, ElementError,
     r"pose_b: expected SO2\(\) elements as matrices of shape \(B, 2, 2\), got shape \(2, 2\)"),
    ((_SO2, _rot(0.0), torch.zeros(1, 2, 2, dtype=torch.long)), {}, ElementError,
     r"pose_b: expected SO2\(\) matrices with a floating dtype, got torch.int64"),
    ((_SO2, [[1.0, 0.0], [0.0, 1.0]], _rot(0.0)), {}, ElementError,
     r"pose_a: expected a \(B, 2, 2\) float tensor of SO2\(\) matrices, got list"),
    (("SE3", _rot(0.0), _rot(0.0)), {}, ElementError, r"pose_a: expected SE3\(\) elements as homogeneous matrices \(B, 4, 4\)"),
    ((_RES, torch.zeros(2, 3, 3)), {}, ElementError,
     r"target: expected SO2\(\) elements as matrices of shape \(B, 2, 2\), got shape \(2, 3, 3\)"),
    ((_RES, _rot(0.0, 1.0, 2.0)), {}, ShapeError,
     r"target: expected 2 elements of SO2\(\) \(one per input\) or one for all, got 3"),
    ((_SO2, _rot(0.0, 1.0, 2.0), _rot(0.0, 1.0)), {}, ShapeError,
     r"pose_a and pose_b: expected batches of the same size \(or one element for all\), got 3 and 2"),
    ((_SO2, _rot(0.0), _rot(0.0)), {"reduction": "sum"}, ConfigError, r"reduction: expected one of 'mean', 'none', got 'sum'"),
    ((_SO2, torch.zeros(0, 2, 2), torch.zeros(0, 2, 2)), {}, ShapeError, r"cannot average over an empty batch"),
]


@pytest.mark.parametrize(("args", "kwargs", "error", "match"), _POSE_ERROR_MISUSES,
                         ids=[f"{i}-{case[2].__name__}" for i, case in enumerate(_POSE_ERROR_MISUSES)])
def test_pose_error_misuse_raises_typed_errors(args, kwargs, error, match):
    assert issubclass(error, (ValueError, TypeError))
    with pytest.raises(error, match=match) as info:
        pose_error(*args, **kwargs)
    assert isinstance(info.value, (ValueError, TypeError))
