"""Actions on coordinates: vectors and point clouds."""

from __future__ import annotations

import math

import torch

from ..errors import ShapeError, check_floating, check_mask, check_shape
from ..groups import Group, as_group
from .base import Action, _randn

__all__ = ["Vectors", "Points", "Particles"]


class Vectors(Action):
    """Orthogonal matrices acting on vectors: ``(g·x)[b, ..., :] = M(g_b) @ x[b, ..., :]``.

    ``x`` has shape ``(B, *, d)`` with ``d = group.dim`` (2 for planar groups, 3
    for SO3/O3). Use it for velocities, forces, directions, or 2-D/3-D outputs.
    """

    shape_spec = "B * d"

    def __init__(self, group: Group | str) -> None:
        self.group = as_group(group, where=lambda g: g.dim is not None, what=type(self).__name__,
                              expected="a group of rotations/reflections of the plane or of space (for sets use actions.Set)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.group!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.group == self.group

    def __hash__(self) -> int:
        return hash((type(self), self.group))

    @property
    def _dim(self) -> int:
        """``d``: the dimension the group acts in (the constructor accepts only groups that have one)."""
        assert self.group is not None and self.group.dim is not None
        return self.group.dim

    def _check(self, x: torch.Tensor) -> int:
        check_shape(x, "* B d", d=self._dim)  # a tensor with at least 2 dims, last of size d
        return int(x.shape[0])

    def __call__(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        batch = self._check(x)
        check_floating(x)
        assert self.group is not None
        m = self.group.matrix(self._elements(g, batch, x.device), dtype=x.dtype)
        flat = x.reshape(batch, math.prod(x.shape[1:-1]), x.shape[-1])  # not -1: B may be 0
        return torch.matmul(flat, m.transpose(1, 2)).reshape(x.shape)

    def example(self, batch: int = 2, *, generator: torch.Generator | None = None,
                dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> torch.Tensor:
        return _randn((batch, 5, self._dim), generator, dtype, device)


def _keep_padding(out: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``out`` on the real rows (``mask`` True), ``x`` on the padded ones (all of ``out`` without a mask)."""
    mask = check_mask(mask, x)
    return out if mask is None else torch.where(mask[..., None], out, x)


class Points(Vectors):
    """Point clouds ``(B, N, d)``: every point ``p`` goes to ``M(g) p`` (``+ t(g)`` for SE3()/E3()).

    For 2-D points use a planar group (C(n), D(n), SO2(), O2()); for 3-D, SO3(),
    O3(), SE3() or E3() (rigid motions also translate the points). ``action(g, x, mask=m)`` with a padding mask
    ``(B, N)`` bool (True: a real point; :func:`equicanon.data.pad_sets`) moves the real points only and leaves the
    padded rows as they are.
    """

    accepts_mask = True

    def _check(self, x: torch.Tensor) -> int:
        return check_shape(x, "B N d", d=self._dim)["B"]

    def __call__(self, g: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        out = super().__call__(g, x)
        assert self.group is not None
        if self.group.has_translations:
            g = self._elements(g, x.shape[0], x.device)
            out = out + self.group.translation(g).to(x.dtype)[:, None, :]
        return _keep_padding(out, x, mask)

    def example(self, batch: int = 2, *, generator: torch.Generator | None = None,
                dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> torch.Tensor:
        return _randn((batch, 16, self._dim), generator, dtype, device)


class Particles(Action):
    """Particle systems ``(B, N, 6 + k)``: positions ``[..., 0:3]``, velocities ``[..., 3:6]``,
    then ``k`` invariant features (charges, masses, types).

    ``g`` moves positions as points (rotation and, for SE3()/E3(), translation),
    rotates velocities without translating them, and leaves the features alone. With a padding mask
    ``(B, N)`` bool (``action(g, x, mask=m)``, True: a real particle) the padded rows are left as they are.
    """

    accepts_mask = True

    def __init__(self, group: Group | str) -> None:
        self.group = as_group(group, where=lambda g: g.dim == 3, what="Particles",
                              expected="a 3-D group (SO3, O3, SE3, E3, Octahedral)")
        self._points = Points(group)
        self._vectors = Vectors(group)

    def __repr__(self) -> str:
        return f"Particles({self.group!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Particles) and other.group == self.group

    def __hash__(self) -> int:
        return hash((Particles, self.group))

    def __call__(self, g: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        check_shape(x, "B N F", name="particles")
        if x.shape[-1] < 6:
            raise ShapeError(f"particles: expected (B, N, 6 + k) with positions and velocities, got {tuple(x.shape)}")
        check_floating(x, "particles")
        pos = self._points(g, x[..., 0:3])
        vel = self._vectors(g, x[..., 3:6])
        return _keep_padding(torch.cat([pos, vel, x[..., 6:]], dim=-1), x, mask)

    def example(self, batch: int = 2, *, generator: torch.Generator | None = None,
                dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> torch.Tensor:
        return _randn((batch, 5, 7), generator, dtype, device)
