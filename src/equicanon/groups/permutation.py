"""The symmetric group S(n) of permutations of ``n`` set elements.

An element is an int64 tensor ``p`` of shape ``(B, n)`` holding a permutation:
``p[i]`` is where element ``i`` goes. ``compose(a, b)[i] = a[b[i]]`` (apply
``b`` first), and ``matrix(p)`` is the permutation matrix ``P`` with
``P[p[i], i] = 1``, so ``P @ x`` moves row ``i`` of ``x`` to row ``p[i]``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from ..errors import ConfigError, ElementError, check_positive_int
from .base import Group, _float_dtype, draw, reads_values

__all__ = ["S"]

_MAX_ENUMERATE = 8


@dataclass(frozen=True, repr=False)
class S(Group):
    """Permutations of ``n`` elements (the symmetry of sets)."""

    n: int

    def __post_init__(self) -> None:
        check_positive_int(self.n, "S(n): n")

    def __repr__(self) -> str:
        return f"S({self.n})"

    dim = None  # acts on sets, not on a space; matrix() gives (B, n, n) permutation matrices

    @property
    def is_finite(self) -> bool:
        return True

    @property
    def order(self) -> int:
        """``n!``."""
        return math.factorial(self.n)

    def element_shape(self) -> tuple[int, ...]:
        return (self.n,)

    def elements(self, *, device: torch.device | str | None = None) -> torch.Tensor:
        """All ``n!`` permutations ``(n!, n)``, lexicographic; only for ``n <= 8``."""
        if self.n > _MAX_ENUMERATE:
            raise ConfigError(f"{self}.elements(): enumerating {self.order} permutations is refused for n > {_MAX_ENUMERATE}")
        return torch.tensor(list(itertools.permutations(range(self.n))), dtype=torch.long, device=device)

    def identity(self, batch: int = 1, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> torch.Tensor:
        return torch.arange(self.n, device=device).expand(batch, self.n).clone()

    def compose(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = self.check(a, "a"), self.check(b, "b")
        a, b = torch.broadcast_tensors(a, b)
        return torch.gather(a, 1, b)

    def inverse(self, a: torch.Tensor) -> torch.Tensor:
        a = self.check(a, "a")
        return torch.argsort(a, dim=1)

    def sample(self, batch: int, *, generator: torch.Generator | None = None,
               device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        check_positive_int(batch, "batch", minimum=0)
        keys = draw(torch.rand, batch, self.n, generator=generator, device=device)
        return torch.argsort(keys, dim=1)

    def matrix(self, g: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        g = self.check(g)
        onehot = torch.nn.functional.one_hot(g, self.n).to(_float_dtype(dtype))  # [b, i, p[i]] = 1
        return onehot.transpose(1, 2)

    def testing_elements(self, *, device: torch.device | str | None = None,
                         dtype: torch.dtype | None = None) -> torch.Tensor:
        n = self.n
        ident = list(range(n))
        swap = ident.copy()
        if n > 1:
            swap[0], swap[1] = 1, 0
        shift = [(i + 1) % n for i in range(n)]
        rev = ident[::-1]
        gen = torch.Generator().manual_seed(0)
        rand = torch.argsort(torch.rand(2, n, generator=gen), dim=1)
        candidates = [ident, swap, shift, rev, *rand.tolist()]
        distinct = list(dict.fromkeys(tuple(p) for p in candidates))  # keeps order
        return torch.tensor(distinct, dtype=torch.long, device=device)

    def check(self, g: object, name: str = "g") -> torch.Tensor:
        if not isinstance(g, torch.Tensor):
            raise ElementError(f"{name}: expected an int64 tensor (B, {self.n}) of permutations, got {type(g).__name__}")
        if g.is_floating_point() or g.is_complex() or g.dtype == torch.bool:
            raise ElementError(f"{name}: expected integer permutations of {self}, got dtype {g.dtype}")
        if g.ndim != 2 or g.shape[1] != self.n:
            raise ElementError(f"{name}: expected {self} permutations of shape (B, {self.n}), got shape {tuple(g.shape)}")
        if reads_values(g):
            ok = torch.equal(torch.sort(g, dim=1).values, torch.arange(self.n).expand_as(g))
            if not ok:
                raise ElementError(f"{name}: each row must be a permutation of 0..{self.n - 1}, got {g.tolist()[:3]}")
        return g.long()

    def describe(self, g: torch.Tensor) -> str:
        return f"{self} permutation {g[0].tolist()}"
