"""TestTime on SO2() / O2(): the grid ``C(n)`` (``D(n)``) of copies scored by a frozen predictor, then refined.

What is tested, as equations (``h`` the grid element of lowest energy, ``δ_j = j · step / (2 r)``):

- the pose is ``h R(δ*)``, a rotation (a reflection for O2 where ``h`` is one), with ``δ*`` within half a grid step,
  and the canonical form is ``pose⁻¹·x``; ``pose(g·x) = g pose(x)`` to rounding for the grid's quarter turns
  (``assert_canonicalizer``, float64 and float32, odd and even sizes);
- on an image whose energy is smallest exactly when it is upright, the pose of the image turned by any angle θ
  is ``R(θ)`` to about a degree: far closer than the grid's own poses (up to half a step off);
- ``extras["refined_energies"][b, j] == E(R(δ_j)⁻¹ h⁻¹·x_b)``; the gate keeps the identity; configuration errors.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import equicanon as ec
from equicanon.canonicalizers import TestTime
from equicanon.errors import ConfigError
from equicanon.testing import assert_canonicalizer

SIZES = [16, 17]


def _quarter_turns(group: ec.groups.Group) -> torch.Tensor:
    """Rotations (and, for O2, reflections) by multiples of 90°, as matrices (float64)."""
    turns = ec.SO2().from_angle(torch.tensor([0.0, 90.0, 180.0, 270.0], dtype=torch.float64), degrees=True)
    if group.has_reflections:
        flip = torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)
        turns = torch.cat([turns, turns @ flip])
    return turns.round()  # exact 0 / ±1: the quarter turns move pixels without interpolating


def _random_cnn(size: int, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                         nn.Linear(96, 12), nn.ReLU(), nn.Linear(12, 5))


def _images(batch: int, size: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(batch, 1, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _disk(size: int) -> torch.Tensor:
    i = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    return ((i[:, None] ** 2 + i[None, :] ** 2) <= ((size - 1) / 2 - 1) ** 2).double()


def _asymmetric(size: int) -> torch.Tensor:
    """A smooth ``(1, 1, size, size)`` image without rotational symmetry, inside the inscribed disk."""
    i = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    rows, cols = torch.meshgrid(i, i, indexing="ij")
    img = torch.zeros(size, size, dtype=torch.float64)
    for d_row, d_col, sigma, amp in ((0.0, 0.0, size / 5, 1.0), (size / 4, 0.0, size / 10, 0.9),
                                     (-size / 8, size / 5, size / 12, -0.6)):
        img += amp * torch.exp(-((rows - d_row) ** 2 + (cols - d_col) ** 2) / (2 * sigma**2))
    return (img * _disk(size))[None, None]


def _reference(size: int) -> torch.Tensor:
    """64 noisy copies of the upright image (noise inside the disk only)."""
    noise = 0.01 * torch.randn(64, 1, size, size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return _asymmetric(size) + noise * _disk(size)


def _pixel_predictor(size: int) -> nn.Sequential:
    """Features: the pixels themselves (the input of the last linear layer), so the typicality energy is smallest
    where a copy looks like the upright image."""
    return nn.Sequential(nn.Flatten(), nn.Linear(size * size, 3)).double()


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("group", [ec.SO2(), ec.O2()], ids=repr)
def test_continuous_test_time_passes_the_canonicalizer_check_on_quarter_turns(group, size):
    """Poses are rotations (O2: or reflections), the canonical form is ``pose⁻¹·x``, and the pose is equivariant to
    rounding for quarter turns, whose copies are the same grid copies turned exactly."""
    canon = TestTime(group, _random_cnn(size), reference=_images(48, size, seed=1))
    x = _images(3, size, seed=2, dtype=torch.float64)
    assert_canonicalizer(canon, x.float(), elements=_quarter_turns(group).float(), dtype=torch.float32, atol=1e-4)
    assert_canonicalizer(canon, x, elements=_quarter_turns(group), dtype=torch.float64, atol=1e-6)
    res = canon.double()(x)
    assert res.pose.shape == (3, 2, 2) and res.logits is None
    step = 2 * math.pi / canon.rotations
    assert float(res.extras["residual"].abs().max()) <= step / 2
    assert res.extras["residual"].abs().max() > 0, "refinement that never moves would pass trivially"
    det = torch.linalg.det(res.pose)
    if group.has_reflections:
        assert torch.allclose(det.abs(), torch.ones(3, dtype=det.dtype))
    else:
        assert torch.allclose(det, torch.ones(3, dtype=det.dtype))


def test_refined_pose_finds_any_angle_where_the_grid_is_up_to_half_a_step_off():
    """Turned by angles between the grid's, the refined pose is within a degree of the turn applied (0.31° at most
    over 48 random angles and sizes 29, 32, 33 when this was written); the grid's own pose (``C(16)``, the coarse
    element) is several degrees off on average."""
    size = 33
    canon = TestTime(ec.SO2(), _pixel_predictor(size), reference=_reference(size))
    grid = TestTime(ec.C(16), canon.predictor, reference=_reference(size))
    angles = torch.tensor([7.0, 33.0, 61.5, 100.0, 139.0, 200.0, 251.0, 318.0], dtype=torch.float64)
    turns = ec.SO2().from_angle(angles, degrees=True)
    x = ec.actions.Image(ec.SO2())(turns, _asymmetric(size).expand(len(angles), -1, -1, -1))
    err = ec.metrics.pose_error(canon(x), turns, reduction="none")
    grid_poses = ec.C(16).matrix(grid(x).pose, dtype=torch.float64)
    grid_err = ec.metrics.pose_error(ec.SO2(), grid_poses, turns, reduction="none")
    print(f"\nrefined pose errors (deg): {[round(float(e), 2) for e in err]}; grid: "
          f"{[round(float(e), 2) for e in grid_err]}")
    assert float(err.max()) < 1.0
    assert float(err.mean()) < 0.1 * float(grid_err.mean())


def test_refined_energies_are_the_energies_of_the_refined_copies():
    size = 16
    canon = TestTime(ec.SO2(), _random_cnn(size), reference=_images(48, size, seed=1), refine=2)
    x = _images(2, size, seed=3, dtype=torch.float64)
    canon = canon.double()
    res = canon(x)
    step = 2 * math.pi / canon.rotations
    offsets = step / 4 * torch.arange(-2, 3, dtype=torch.float64)
    h = ec.C(16).matrix(res.extras["coarse"], dtype=torch.float64)
    for j, offset in enumerate(offsets):
        pose = h @ ec.SO2().from_angle(offset.expand(2))
        want = canon.energies(ec.actions.Image(ec.SO2())(ec.SO2().inverse(pose), x))
        assert torch.allclose(res.extras["refined_energies"][:, j], want, rtol=1e-9, atol=1e-9)
    # the parabola moves the pose by at most half a spacing from the best refined offset
    best = offsets[res.extras["refined_energies"].argmin(1)]
    assert float((res.extras["residual"] - best).abs().max()) <= step / 8 + 1e-12


def test_gate_keeps_the_identity_and_wrapping_works():
    size = 16
    reference = _images(48, size, seed=1)
    canon = TestTime(ec.SO2(), _random_cnn(size), reference=reference, gate=0.999)
    res = canon(reference[:4])
    assert bool(res.extras["gated"].all())
    assert torch.equal(res.pose, torch.eye(2).expand(4, 2, 2))
    model = ec.Canonicalized(canon.predictor, TestTime(ec.SO2(), canon.predictor, reference=reference))
    assert model(_images(3, size, seed=4)).shape == (3, 5)


def test_configuration_errors():
    size = 16
    net, ref = _random_cnn(size), _images(8, size, seed=1)
    with pytest.raises(ConfigError, match="rotations and refine"):
        TestTime(ec.C(4), net, reference=ref, refine=2)
    with pytest.raises(ConfigError, match="refine"):
        TestTime(ec.SO2(), net, reference=ref, refine=-1)
    with pytest.raises(ConfigError, match="rotations"):
        TestTime(ec.SO2(), net, reference=ref, rotations=0)
    with pytest.raises(ec.errors.GroupMismatchError, match="TestTime: group"):
        TestTime(ec.SO3(), net, reference=ref)
    with pytest.raises(ConfigError, match="Image action"):
        TestTime(ec.SO2(), net, reference=ref, action=ec.actions.Points(ec.SO2()))


def test_prior_loss_scores_the_grid_against_the_identity_or_a_target():
    """For monitoring: the cross-entropy of the grid's logits to the grid element nearest the identity (or a target
    rotation); lowest where the input is upright for the energy, and a typed error for a wrong target."""
    size = 33
    canon = TestTime(ec.SO2(), _pixel_predictor(size), reference=_reference(size))
    upright = _asymmetric(size).expand(2, -1, -1, -1)
    turns = ec.SO2().from_angle(torch.tensor([90.0, 90.0], dtype=torch.float64), degrees=True)
    turned = ec.actions.Image(ec.SO2())(turns, upright)
    at_identity = float(canon.prior_loss(canon(upright)))
    assert at_identity < float(canon.prior_loss(canon(turned)))
    assert float(canon.prior_loss(canon(turned), turns)) < float(canon.prior_loss(canon(turned)))
    with pytest.raises(ec.errors.ShapeError, match="2, 2"):
        canon.prior_loss(canon(upright), torch.zeros(2))
