"""Finite planar groups: cyclic rotations C(n) and dihedral groups D(n).

Elements are int64 index tensors of shape ``(B,)``. In ``C(n)``, index ``k`` is
the counter-clockwise rotation by ``2πk/n``. In ``D(n)``, index ``k + n·s``
(``0 <= k < n``, ``s ∈ {0, 1}``) is ``r^k f^s``: first the horizontal flip
``f`` (``x → -x``, mirroring left and right) when ``s = 1``, then the rotation
``r^k``. Matrices act on coordinates with ``x`` to the right and ``y`` up, so
``r`` on an image is ``torch.rot90(img, 1, dims=(-2, -1))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import check_positive_int
from .base import FiniteGroup, rotation_2d, snap

__all__ = ["C", "D"]


def _rotation_table(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64)
    return snap(rotation_2d(2 * math.pi * k / n)).to(device=device, dtype=dtype)


class PlanarFiniteGroup(FiniteGroup):
    """Common part of C(n) and D(n): a rotation step ``k`` and a flip bit ``s`` per element."""

    n: int
    dim = 2

    def rotation_step(self, g: torch.Tensor) -> torch.Tensor:
        """Rotation index ``k`` (angle ``2πk/n``) of each element, ``(B,)`` int64."""
        return g % self.n

    def flipped(self, g: torch.Tensor) -> torch.Tensor:
        """Whether each element flips (``s = 1``), ``(B,)`` bool."""
        return g >= self.n

    def angle(self, g: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Rotation angle in radians of each element, ``(B,)``."""
        g = self.check(g)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        return self.rotation_step(g).to(dtype) * (2 * math.pi / self.n)

    def is_quarter_turn(self, g: torch.Tensor) -> torch.Tensor:
        """Whether each element's rotation is a multiple of 90°, so it maps the pixel grid onto itself."""
        return (4 * self.rotation_step(g)) % self.n == 0

    @property
    def all_quarter_turns(self) -> bool:
        """True when every element rotates by a multiple of 90° (n divides 4)."""
        return 4 % self.n == 0

    @property
    def needs_square_images(self) -> bool:
        """True when the group holds the quarter turn (``n % 4 == 0``), an exact index move of square images."""
        return self.n % 4 == 0

    def matrix(self, g: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        g = self.check(g)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        rot = _rotation_table(self.n, g.device, dtype)[self.rotation_step(g)]
        flip_sign = torch.where(self.flipped(g), -1.0, 1.0).to(dtype)
        # R F with F = diag(-1, 1) negates R's first column.
        return torch.stack([rot[..., 0] * flip_sign[:, None], rot[..., 1]], dim=-1)

    def describe(self, g: torch.Tensor) -> str:
        i = int(g.reshape(-1)[0])
        k, s = i % self.n, i // self.n
        deg = 360.0 * k / self.n
        text = f"{self}[{i}] = r^{k}{' f' if s else ''} (rotation by {deg:g}°{' after a horizontal flip' if s else ''})"
        return text


@dataclass(frozen=True, repr=False)
class C(PlanarFiniteGroup):
    """Cyclic group of ``n`` planar rotations by multiples of ``360°/n``.

    Example:
        >>> import equicanon as ec
        >>> G = ec.C(4)
        >>> G.compose(torch.tensor([3]), torch.tensor([2]))
        tensor([1])
    """

    n: int

    def __post_init__(self) -> None:
        check_positive_int(self.n, "C(n): n")

    def __repr__(self) -> str:
        return f"C({self.n})"

    @property
    def order(self) -> int:
        return self.n

    def compose(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (self.check(a, "a") + self.check(b, "b")) % self.n

    def inverse(self, a: torch.Tensor) -> torch.Tensor:
        return (-self.check(a, "a")) % self.n


@dataclass(frozen=True, repr=False)
class D(PlanarFiniteGroup):
    """Dihedral group of order ``2n``: ``n`` rotations and ``n`` reflections.

    Index ``k + n·s`` is ``r^k f^s`` (flip first when ``s = 1``, then rotate by ``2πk/n``).
    """

    n: int
    has_reflections = True

    @property
    def rotation_subgroup(self) -> C:
        """``C(n)``: its elements are the indices ``0 .. n-1`` of ``D(n)``."""
        return C(self.n)

    def __post_init__(self) -> None:
        check_positive_int(self.n, "D(n): n")

    def __repr__(self) -> str:
        return f"D({self.n})"

    @property
    def order(self) -> int:
        return 2 * self.n

    def compose(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = self.check(a, "a"), self.check(b, "b")
        n = self.n
        ka, sa, kb, sb = a % n, a // n, b % n, b // n
        # r^ka f^sa r^kb f^sb = r^(ka + (-1)^sa kb) f^(sa xor sb)
        k = (ka + (1 - 2 * sa) * kb) % n
        return k + n * (sa ^ sb)

    def inverse(self, a: torch.Tensor) -> torch.Tensor:
        a = self.check(a, "a")
        n = self.n
        k, s = a % n, a // n
        return torch.where(s == 0, (-k) % n, k) + n * s
