"""Rigid motions of 3-D space: SE(3) (rotations + translations) and E(3) (also reflections).

An element is a homogeneous matrix ``(B, 4, 4)`` ``[[R, t], [0, 1]]`` acting on
points by ``p ↦ R p + t``. :meth:`matrix` returns the orthogonal part ``R``
``(B, 3, 3)`` (how the element acts on vectors such as velocities) and
:meth:`translation` the translation ``t`` ``(B, 3)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ElementError
from .base import MatrixGroup, _float_dtype, draw, nearest_orthogonal
from .continuous import O3, SO3

__all__ = ["SE3", "E3", "RigidGroup"]


class RigidGroup(MatrixGroup):
    """Common part of SE(3) and E(3)."""

    dim = 3
    has_translations = True

    @property
    def is_finite(self) -> bool:
        return False

    @property
    def rotation_subgroup(self) -> SO3:
        return SO3()

    @property
    def rotations(self) -> SO3 | O3:
        """The orthogonal part as a group: SO3() or O3()."""
        return O3() if self.has_reflections else SO3()

    def element_shape(self) -> tuple[int, ...]:
        return (4, 4)

    def from_parts(self, rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
        """Homogeneous ``(B, 4, 4)`` elements from ``rotation (B, 3, 3)`` and ``translation (B, 3)``."""
        b = rotation.shape[0]
        top = torch.cat([rotation, translation.reshape(b, 3, 1)], dim=-1)
        bottom = torch.zeros(b, 1, 4, dtype=rotation.dtype, device=rotation.device)
        bottom[..., 3] = 1
        return torch.cat([top, bottom], dim=-2)

    def cast(self, g: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
        if dtype is None or dtype == g.dtype:
            return g
        out = g.to(dtype)
        if torch.finfo(dtype).eps < torch.finfo(g.dtype).eps:
            out = self.from_parts(nearest_orthogonal(out[:, :3, :3]), out[:, :3, 3])
        return out

    def translation(self, g: torch.Tensor) -> torch.Tensor:
        """Translation part ``(B, 3)``."""
        return self.check(g)[:, :3, 3]

    def identity(self, batch: int = 1, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> torch.Tensor:
        return torch.eye(4, dtype=_float_dtype(dtype), device=device).expand(batch, 4, 4).clone()

    def compose(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.check(a, "a"), self.check(b, "b"))

    def inverse(self, a: torch.Tensor) -> torch.Tensor:
        a = self.check(a, "a")
        rot_t = a[:, :3, :3].transpose(1, 2)
        return self.from_parts(rot_t, -(rot_t @ a[:, :3, 3:]).squeeze(-1))

    def sample(self, batch: int, *, generator: torch.Generator | None = None,
               device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Rotations from the Haar measure; translations standard normal (there is no uniform measure on R³)."""
        dtype = _float_dtype(dtype)
        rot = self.rotations.sample(batch, generator=generator, device=device, dtype=dtype)
        t = draw(torch.randn, batch, 3, generator=generator, device=rot.device, dtype=dtype)
        return self.from_parts(rot, t)

    def matrix(self, g: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        rot = self.check(g)[:, :3, :3]
        return rot.to(dtype) if dtype is not None else rot

    def testing_elements(self, *, device: torch.device | str | None = None,
                         dtype: torch.dtype | None = None) -> torch.Tensor:
        rot = self.rotations.testing_elements(dtype=torch.float64)
        gen = torch.Generator().manual_seed(1)
        t = torch.randn(rot.shape[0], 3, generator=gen, dtype=torch.float64) * 2
        t[0] = 0
        return self.from_parts(rot, t).to(device=device, dtype=_float_dtype(dtype))

    def check(self, g: object, name: str = "g") -> torch.Tensor:
        if not isinstance(g, torch.Tensor):
            raise ElementError(f"{name}: expected (B, 4, 4) homogeneous {self} matrices, got {type(g).__name__}")
        if g.ndim != 3 or g.shape[-2:] != (4, 4):
            raise ElementError(f"{name}: expected {self} elements as homogeneous matrices (B, 4, 4), got shape {tuple(g.shape)}")
        if not g.is_floating_point():
            raise ElementError(f"{name}: expected {self} matrices with a floating dtype, got {g.dtype}")
        return g

    def describe(self, g: torch.Tensor) -> str:
        t = [round(v, 3) for v in g[0, :3, 3].tolist()]
        return f"{self} {self.rotations.describe(g[:1, :3, :3])} then translation {t}"


@dataclass(frozen=True, repr=False)
class SE3(RigidGroup):
    """Rotations and translations of 3-D space."""

    def __repr__(self) -> str:
        return "SE3()"


@dataclass(frozen=True, repr=False)
class E3(RigidGroup):
    """Rotations, reflections and translations of 3-D space."""

    has_reflections = True

    def __repr__(self) -> str:
        return "E3()"
