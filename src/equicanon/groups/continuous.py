"""Continuous orthogonal groups SO(2), O(2), SO(3), O(3).

Elements are orthogonal matrices ``(B, d, d)`` acting on column vectors; in
2-D, ``x`` points right and ``y`` up, so a positive angle is counter-clockwise
on screen. The flip in O(2) is ``diag(-1, 1)``, as in :class:`equicanon.D`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import MatrixGroup, _float_dtype, draw, rotation_2d, snap

__all__ = ["SO2", "O2", "SO3", "O3"]

_FLIP_2D = ((-1.0, 0.0), (0.0, 1.0))


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str | None,
             dtype: torch.dtype, normal: bool = False) -> torch.Tensor:
    return draw(torch.randn if normal else torch.rand, shape, generator=generator, device=device, dtype=dtype)


def _det_sign(g: torch.Tensor) -> torch.Tensor:
    return torch.sign(torch.linalg.det(g.double())).to(g.dtype)


class _Planar(MatrixGroup):
    dim = 2

    def from_angle(self, theta: torch.Tensor, *, degrees: bool = False) -> torch.Tensor:
        """Rotation matrices ``(B, 2, 2)`` for angles ``(B,)`` (radians unless ``degrees``)."""
        theta = torch.as_tensor(theta)
        if not theta.is_floating_point():
            theta = theta.to(torch.get_default_dtype())
        if degrees:
            theta = torch.deg2rad(theta)
        return rotation_2d(theta.reshape(-1))

    def angle(self, g: torch.Tensor) -> torch.Tensor:
        """Rotation angle in radians, in ``(-π, π]``, of each matrix ``(B,)`` (of ``R`` in ``R F^s``)."""
        g = self.check(g)
        # for a reflection R F, the first column is negated: undo it before reading the angle
        first = g[:, :, 0] * _det_sign(g)[:, None]
        return torch.atan2(first[:, 1], first[:, 0])

    def _testing_angles(self) -> torch.Tensor:
        return torch.tensor([0.0, 90.0, 180.0, 270.0, 45.0, 30.0, 123.4, -71.0], dtype=torch.float64)


@dataclass(frozen=True, repr=False)
class SO2(_Planar):
    """Planar rotations by any angle."""

    def __repr__(self) -> str:
        return "SO2()"

    def sample(self, batch: int, *, generator: torch.Generator | None = None,
               device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        dtype = _float_dtype(dtype)
        theta = _uniform((batch,), generator, device, dtype) * (2 * math.pi)
        return rotation_2d(theta)

    def testing_elements(self, *, device: torch.device | str | None = None,
                         dtype: torch.dtype | None = None) -> torch.Tensor:
        mats = snap(rotation_2d(torch.deg2rad(self._testing_angles())))
        return mats.to(device=device, dtype=_float_dtype(dtype))

    def describe(self, g: torch.Tensor) -> str:
        return f"SO2() rotation by {math.degrees(float(self.angle(g[:1])[0])):.4g}°"


@dataclass(frozen=True, repr=False)
class O2(_Planar):
    """Planar rotations and reflections."""

    has_reflections = True

    @property
    def rotation_subgroup(self) -> SO2:
        return SO2()

    def __repr__(self) -> str:
        return "O2()"

    def sample(self, batch: int, *, generator: torch.Generator | None = None,
               device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        dtype = _float_dtype(dtype)
        theta = _uniform((batch,), generator, device, dtype) * (2 * math.pi)
        flip = _uniform((batch,), generator, device, dtype) < 0.5
        rot = rotation_2d(theta)
        sign = torch.where(flip, -1.0, 1.0).to(dtype)
        return torch.stack([rot[..., 0] * sign[:, None], rot[..., 1]], dim=-1)

    def testing_elements(self, *, device: torch.device | str | None = None,
                         dtype: torch.dtype | None = None) -> torch.Tensor:
        rots = snap(rotation_2d(torch.deg2rad(self._testing_angles())))
        flip = torch.tensor(_FLIP_2D, dtype=torch.float64)
        mats = torch.cat([rots, rots[[0, 1, 4, 6]] @ flip])
        return mats.to(device=device, dtype=_float_dtype(dtype))

    def describe(self, g: torch.Tensor) -> str:
        flipped = float(_det_sign(g[:1])[0]) < 0
        deg = math.degrees(float(self.angle(g[:1])[0]))
        return f"O2() rotation by {deg:.4g}°{' after a horizontal flip' if flipped else ''}"


def _quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        torch.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        torch.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def axis_angle(axis: tuple[float, float, float], degrees: float) -> torch.Tensor:
    """One 3-D rotation ``(1, 3, 3)`` float64 by ``degrees`` about ``axis`` (right-hand rule)."""
    a = torch.tensor(axis, dtype=torch.float64)
    a = a / a.norm()
    half = math.radians(degrees) / 2
    q = torch.cat([torch.tensor([math.cos(half)], dtype=torch.float64), a * math.sin(half)])
    return snap(_quaternion_to_matrix(q[None]))


def _so3_testing() -> torch.Tensor:
    fixed = [axis_angle((0, 0, 1), 0), axis_angle((0, 0, 1), 90), axis_angle((1, 0, 0), 180),
             axis_angle((1, 1, 1), 120), axis_angle((0, 1, 0), 37.0)]
    gen = torch.Generator().manual_seed(0)
    rand = _quaternion_to_matrix(torch.randn(3, 4, generator=gen, dtype=torch.float64))
    return torch.cat([*fixed, rand])


class _Spatial(MatrixGroup):
    dim = 3

    def _rotations(self, batch: int, generator: torch.Generator | None, device: torch.device | str | None,
                   dtype: torch.dtype) -> torch.Tensor:
        # a normalised Gaussian quaternion is uniform on S^3, giving the Haar measure on SO(3)
        return _quaternion_to_matrix(_uniform((batch, 4), generator, device, dtype, normal=True))

    def rotation_angle(self, g: torch.Tensor) -> torch.Tensor:
        """Angle in radians of the rotation part ``det(g)·g`` of each element, ``(B,)``."""
        g = self.check(g)
        rot = g * _det_sign(g)[:, None, None]
        cos = ((rot.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
        return torch.acos(cos)


@dataclass(frozen=True, repr=False)
class SO3(_Spatial):
    """3-D rotations."""

    def __repr__(self) -> str:
        return "SO3()"

    def sample(self, batch: int, *, generator: torch.Generator | None = None,
               device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        return self._rotations(batch, generator, device, _float_dtype(dtype))

    def testing_elements(self, *, device: torch.device | str | None = None,
                         dtype: torch.dtype | None = None) -> torch.Tensor:
        return _so3_testing().to(device=device, dtype=_float_dtype(dtype))

    def describe(self, g: torch.Tensor) -> str:
        return f"SO3() rotation by {math.degrees(float(self.rotation_angle(g[:1])[0])):.4g}° ({MatrixGroup.describe(self, g)})"


@dataclass(frozen=True, repr=False)
class O3(_Spatial):
    """3-D rotations and reflections (``det = ±1``)."""

    has_reflections = True

    @property
    def rotation_subgroup(self) -> SO3:
        return SO3()

    def __repr__(self) -> str:
        return "O3()"

    def sample(self, batch: int, *, generator: torch.Generator | None = None,
               device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        dtype = _float_dtype(dtype)
        rot = self._rotations(batch, generator, device, dtype)
        sign = torch.where(_uniform((batch,), generator, device, dtype) < 0.5, -1.0, 1.0).to(dtype)
        return rot * sign[:, None, None]

    def testing_elements(self, *, device: torch.device | str | None = None,
                         dtype: torch.dtype | None = None) -> torch.Tensor:
        rots = _so3_testing()
        mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))[None]
        refl = torch.cat([-rots[:1], mirror, rots[3:4] @ mirror, -rots[-1:]])
        return torch.cat([rots, refl]).to(device=device, dtype=_float_dtype(dtype))

    def describe(self, g: torch.Tensor) -> str:
        kind = "reflection" if float(_det_sign(g[:1])[0]) < 0 else "rotation"
        return f"O3() {kind} ({MatrixGroup.describe(self, g)})"
