"""Finite subgroups of SO(3): the 24 rotations of the cube.

``Octahedral()`` is the chiral octahedral group ``O`` (isomorphic to ``S_4``): the
rotations that map the cube ``[-1, 1]³`` onto itself. Its matrices are exactly the
3 x 3 signed permutation matrices with determinant ``+1``, so they act on points
by index permutations and sign flips — exactly, with no rounding. Elements are
int64 indices ``0..23``; index 0 is the identity.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from .base import FiniteGroup, _float_dtype

__all__ = ["Octahedral"]


_TABLES: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []


def _octahedral_tables() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tables of :func:`_build_tables`, built on first use (every :class:`Octahedral` builds them when it is
    made, so a graph capture of its methods only reads them)."""
    if not _TABLES:
        _TABLES.append(_build_tables())
    return _TABLES[0]


def _build_tables() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(matrices (24, 3, 3) float64, cayley (24, 24) int64, inverse (24,) int64)``, all computed from the matrices.

    Order: permutations in ``itertools.permutations`` order, then signs in
    ``itertools.product((1, -1), repeat=3)`` order, keeping ``det = +1``; the identity comes first.
    Matrix ``M`` has ``M[i, perm[i]] = signs[i]``.
    """
    mats: list[torch.Tensor] = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            m = torch.zeros(3, 3, dtype=torch.float64)
            for i in range(3):
                m[i, perm[i]] = signs[i]
            if round(float(torch.linalg.det(m))) == 1:
                mats.append(m)
    table = torch.stack(mats)
    keys = {tuple(int(v) for v in m.flatten().tolist()): k for k, m in enumerate(table)}

    def index(m: torch.Tensor) -> int:
        return keys[tuple(int(v) for v in m.flatten().tolist())]

    cayley = torch.tensor([[index(a @ b) for b in table] for a in table], dtype=torch.long)
    inverse = torch.tensor([index(a.T) for a in table], dtype=torch.long)
    return table, cayley, inverse


@dataclass(frozen=True, repr=False)
class Octahedral(FiniteGroup):
    """The 24 rotations of the cube (chiral octahedral group ``O ≅ S_4``), a finite subgroup of ``SO3()``.

    Elements are int64 indices ``(B,)``; ``matrix(g)`` gives exact signed permutation
    matrices (entries 0 and ±1, ``det = +1``), and :meth:`compose` / :meth:`inverse`
    read tables computed from those matrices. The group holds the identity, 9 rotations
    by ±90° and 180° about the coordinate axes, 8 rotations by ±120° about the cube's
    diagonals and 6 rotations by 180° about the axes through the midpoints of opposite edges.

    Example:
        >>> G = Octahedral()
        >>> G.order, G.dim
        (24, 3)
        >>> g = G.sample(5, generator=torch.Generator().manual_seed(0))
        >>> torch.equal(G.compose(g, G.inverse(g)), G.identity(5))
        True
    """

    dim = 3

    def __post_init__(self) -> None:
        _octahedral_tables()  # built here, outside any graph capture of the methods below

    def __repr__(self) -> str:
        return "Octahedral()"

    @property
    def order(self) -> int:
        return 24

    def compose(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = self.check(a, "a"), self.check(b, "b")
        a, b = torch.broadcast_tensors(a, b)
        return _octahedral_tables()[1].to(a.device)[a, b]

    def inverse(self, a: torch.Tensor) -> torch.Tensor:
        a = self.check(a, "a")
        return _octahedral_tables()[2].to(a.device)[a]

    def matrix(self, g: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        g = self.check(g)
        return _octahedral_tables()[0].to(device=g.device, dtype=_float_dtype(dtype))[g]

    def rotation_angle(self, g: torch.Tensor) -> torch.Tensor:
        """Rotation angle in degrees of each element, ``(B,)`` float64: 0, 90, 120 or 180."""
        m = self.matrix(g, dtype=torch.float64)
        cos = ((m.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
        return torch.rad2deg(torch.acos(cos)).round()

    def describe(self, g: torch.Tensor) -> str:
        i = int(g.reshape(-1)[0])
        m = _octahedral_tables()[0][i]
        angle = float(self.rotation_angle(torch.tensor([i])))
        if angle == 0:
            return f"{self}[{i}] = identity"
        if angle == 180:  # the axis spans the image of (M + I) / 2
            sym = (m + torch.eye(3, dtype=torch.float64)) / 2
            axis = sym[:, int(sym.norm(dim=0).argmax())]
        else:  # the axis is the vector of the skew-symmetric part
            axis = torch.stack([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]])
        axis = axis / axis.abs().max()
        if axis[axis != 0][0] < 0 and angle == 180:  # ±axis is the same half turn: show the positive one
            axis = -axis
        text = ", ".join(str(round(float(v))) for v in axis)
        return f"{self}[{i}] = rotation by {angle:g}° about ({text}) (right-hand rule)"
