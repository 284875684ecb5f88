"""Canonicalized and FrameAveraged for point clouds, particle systems and sets.

The wrapped models are checked with the public checker: exactly invariant for
classification, equivariant for per-point labels (order kept) and for N-body
position prediction under rotations and translations.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import equicanon as ec
from equicanon.testing import assert_equivariant, assert_invariant


class PointNet(nn.Module):
    """A plain PointNet: shared MLP per point, max pool; per-point head sees the pooled feature too."""

    def __init__(self, d_in: int = 3, classes: int = 4, per_point: bool = False) -> None:
        super().__init__()
        self.local = nn.Sequential(nn.Linear(d_in, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU())
        self.per_point = per_point
        self.head = nn.Linear(32 if per_point else 16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.local(x)
        pooled = f.max(dim=1).values
        if self.per_point:
            return self.head(torch.cat([f, pooled[:, None].expand_as(f)], dim=-1))
        return self.head(pooled)


class NBodyNet(nn.Module):
    """Predicts positions after T steps: canonical position + an MLP displacement from all features."""

    def __init__(self, features: int = 1) -> None:
        super().__init__()
        self.net = PointNet(6 + features, 3, per_point=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., :3] + 0.1 * self.net(x)


def _random_elements(group, n: int = 4, seed: int = 0) -> torch.Tensor:
    return group.sample(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("group", [ec.SO3(), ec.O3()], ids=repr)
def test_canonicalized_pointnet_is_invariant(group):
    torch.manual_seed(0)
    model = ec.Canonicalized(PointNet(), ec.canonicalizers.VectorNeurons(group, hidden=8, k=4)).eval()
    x = torch.randn(3, 16, 3, dtype=torch.float64)
    action = ec.actions.Points(group)
    assert_invariant(model, group, action, x)
    assert_invariant(model, group, action, x, elements=_random_elements(group))
    report = ec.testing.equivariance_error(PointNet(), group, action, ec.actions.Trivial(), x)
    assert not report.passed  # the bare PointNet is not invariant


def test_per_point_labels_keep_the_order_and_are_invariant():
    torch.manual_seed(0)
    group = ec.SO3()
    model = ec.Canonicalized(PointNet(per_point=True), ec.canonicalizers.VectorNeurons(group, hidden=8, k=4)).eval()
    x = torch.randn(2, 16, 3, dtype=torch.float64)
    # labels of each point do not change when the cloud is rotated ...
    assert_invariant(model, group, ec.actions.Points(group), x, elements=_random_elements(group))
    # ... and follow the points when they are reordered (part segmentation keeps the order)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(1))
    model64 = model.double()
    assert torch.allclose(model64(x[:, perm]), model64(x)[:, perm], atol=1e-10)


@pytest.mark.parametrize("group", [ec.SE3(), ec.E3()], ids=repr)
def test_nbody_positions_are_equivariant_to_rotations_and_translations(group):
    torch.manual_seed(0)
    canon = ec.canonicalizers.ParticleVectorNeurons(group, features=1, hidden=8)
    model = ec.Canonicalized(NBodyNet(), canon, output=ec.actions.Points(group)).eval()
    x = torch.randn(3, 5, 7, dtype=torch.float64)
    inp = ec.actions.Particles(group)
    assert_equivariant(model, group, inp, ec.actions.Points(group), x)
    assert_equivariant(model, group, inp, ec.actions.Points(group), x, elements=_random_elements(group))


def test_sets_canonicalized_model_is_permutation_invariant():
    torch.manual_seed(0)
    group = ec.S(6)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(6 * 2, 16), nn.ReLU(), nn.Linear(16, 3))  # order-dependent
    model = ec.Canonicalized(mlp, ec.canonicalizers.Sort(group, 2, hidden=8)).eval()
    x = torch.randn(4, 6, 2, dtype=torch.float64)
    assert_invariant(model, group, ec.actions.Set(group), x, atol=0.0, rtol=0.0)
    assert_invariant(model, group, ec.actions.Set(group), x, elements=group.sample(5), atol=0.0, rtol=0.0)


@pytest.mark.parametrize("group", [ec.SO3(), ec.O3(), ec.SE3(), ec.E3()], ids=repr)
def test_frame_averaging_is_invariant(group):
    torch.manual_seed(0)
    x = torch.randn(3, 20, 3, dtype=torch.float64) * torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)
    model = ec.FrameAveraged(PointNet(), group)
    action = ec.actions.Points(group)
    assert_invariant(model, group, action, x)
    assert_invariant(model, group, action, x, elements=_random_elements(group))


def test_frame_averaging_nbody_is_equivariant():
    torch.manual_seed(0)
    group = ec.SE3()
    model = ec.FrameAveraged(NBodyNet(), group, input=ec.actions.Particles(group), output=ec.actions.Points(group))
    x = torch.randn(2, 6, 7, dtype=torch.float64) * torch.tensor([3.0, 2.0, 1.0, 1, 1, 1, 1], dtype=torch.float64)
    assert_equivariant(model, group, ec.actions.Particles(group), ec.actions.Points(group), x,
                       elements=_random_elements(group))


@pytest.mark.parametrize("group,k", [(ec.SO3(), 4), (ec.O3(), 8)], ids=repr)
def test_pca_frames_are_orthogonal_and_move_with_the_input(group, k):
    x = torch.randn(2, 30, 3, dtype=torch.float64) * torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)
    frames = ec.adapt.pca_frames(x, group)
    assert frames.shape == (2, k, 3, 3)
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(frames.transpose(-1, -2) @ frames, eye.expand_as(frames), atol=1e-12)
    q = _random_elements(ec.SO3(), 2)
    moved = ec.adapt.pca_frames(x @ q.transpose(1, 2), group)
    # the same set of frames, each rotated by q (order of sign choices may differ)
    expected = q[:, None] @ frames
    dist = (moved[:, :, None] - expected[:, None]).abs().amax(dim=(-1, -2))  # (B, K, K)
    assert float(dist.amin(dim=-1).max()) < 1e-9


@pytest.mark.parametrize("group", [ec.SO3(), ec.E3()], ids=repr)
def test_frame_poses_are_what_frame_averaging_averages_over(group):
    torch.manual_seed(0)
    x = torch.randn(3, 20, 3, dtype=torch.float64) * torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)
    mask = torch.arange(20) < torch.tensor([[20], [13], [7]])
    model = ec.FrameAveraged(PointNet(), group).double()
    before = x.clone()
    poses = model.frame_poses(x)  # (B, K, *): K = 4 for SO3, 8 for E3
    assert poses.shape[:2] == (3, 4 if group == ec.SO3() else 8) and torch.equal(x, before)
    action = ec.actions.Points(group)
    runs = [model.predictor(action(group.inverse(poses[:, k]), x)) for k in range(poses.shape[1])]
    torch.testing.assert_close(torch.stack(runs).mean(0), model(x), rtol=0, atol=1e-12)
    masked = model.frame_poses(x, mask)
    if group.has_translations:  # the translation is the centre of the real points
        centre = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        torch.testing.assert_close(masked[:, 0, :3, 3], centre, rtol=0, atol=1e-12)
    with pytest.raises(ec.errors.ShapeError, match="positions"):
        model.frame_poses(x[..., :2])
    with pytest.raises(ec.errors.DTypeError, match="mask"):
        model.frame_poses(x, mask.double())


def test_frame_averaging_rejects_other_groups():
    with pytest.raises(ec.errors.GroupMismatchError, match="SO3, O3, SE3 or E3"):
        ec.FrameAveraged(PointNet(), ec.C(4))


@pytest.mark.parametrize("group", [ec.SE3(), ec.E3()], ids=repr)
def test_particles_action_moves_positions_rotates_velocities_keeps_features(group):
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    g, h = _random_elements(group, 2, 0), _random_elements(group, 2, 1)
    act = ec.actions.Particles(group)
    assert torch.allclose(act(g, act(h, x)), act(group.compose(g, h), x), atol=1e-12)
    y = act(g, x)
    rot, t = group.matrix(g), group.translation(g)
    assert torch.allclose(y[..., :3], x[..., :3] @ rot.transpose(1, 2) + t[:, None], atol=1e-12)
    assert torch.allclose(y[..., 3:6], x[..., 3:6] @ rot.transpose(1, 2), atol=1e-12)
    assert torch.equal(y[..., 6:], x[..., 6:])


def test_particles_action_errors():
    with pytest.raises(ec.errors.GroupMismatchError):
        ec.actions.Particles(ec.C(4))
    with pytest.raises(ec.errors.ShapeError, match="6 \\+ k"):
        ec.actions.Particles(ec.SE3())(ec.SE3().identity(1), torch.randn(1, 4, 5))
