"""Actions that permute an axis: the regular representation and sets."""

from __future__ import annotations

import torch

from ..errors import ConfigError, GroupMismatchError, ShapeError, check_shape
from ..groups import FiniteGroup, Group, S
from .base import Action, _randn

__all__ = ["Regular", "Set"]


def _permute_axis(x: torch.Tensor, dim: int, index: torch.Tensor) -> torch.Tensor:
    """``out[b, ..., j, ...] = x[b, ..., index[b, j], ...]`` along ``dim`` (``dim != 0``)."""
    shape = [1] * x.ndim
    shape[0], shape[dim] = index.shape[0], index.shape[1]
    return x.gather(dim, index.reshape(shape).expand(x.shape))


def _normalise_dim(dim: int, ndim: int, what: str) -> int:
    d = dim if dim >= 0 else ndim + dim
    if not 0 < d < ndim:
        raise ShapeError(f"{what}: axis {dim} is not a non-batch axis of a tensor with {ndim} dimensions")
    return d


class Regular(Action):
    """The regular representation of a finite group on one axis of size ``|G|``.

    Group-conv features and canonicalizer logits carry one entry per group
    element; ``g`` moves entry ``k`` to ``g k``: ``(g·ℓ)[..., g k, ...] = ℓ[..., k, ...]``.

    Args:
        group: a finite group indexed by integers (C(n), D(n)).
        dim: the axis of size ``|G|`` (default 1, as in logits ``(B, |G|)``).
    """

    def __init__(self, group: Group, dim: int = 1) -> None:
        if not isinstance(group, FiniteGroup):
            raise GroupMismatchError(f"Regular needs a finite group with indexed elements (C(n), D(n)), got {group!r}")
        if not isinstance(dim, int) or dim == 0:
            raise ConfigError(f"Regular: dim must be a non-batch axis (an int other than 0), got {dim!r}")
        self.group = group
        self.dim = dim

    def __repr__(self) -> str:
        return f"Regular({self.group!r}, dim={self.dim})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Regular) and (self.group, self.dim) == (other.group, other.dim)

    def __hash__(self) -> int:
        return hash((Regular, self.group, self.dim))

    def __call__(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        group = self.group
        assert isinstance(group, FiniteGroup)
        if not isinstance(x, torch.Tensor) or x.ndim < 2:
            check_shape(x, "B G", G=group.order, name="x")
        d = _normalise_dim(self.dim, x.ndim, repr(self))
        if x.shape[d] != group.order:
            raise ShapeError(f"{self}: expected axis {self.dim} of size |G| = {group.order}, got shape {tuple(x.shape)}")
        g = self._elements(g, x.shape[0], x.device)
        # (g·x)[j] = x[g^-1 j]
        index = group.compose(group.inverse(g)[:, None], group.elements(device=x.device)[None, :])
        return _permute_axis(x, d, index)

    def example(self, batch: int = 2, *, generator: torch.Generator | None = None,
                dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> torch.Tensor:
        assert isinstance(self.group, FiniteGroup)
        return _randn((batch, self.group.order), generator, dtype, device)


class Set(Action):
    """Permutations of the elements of sets ``(B, n, *)``: ``(g·x)[:, p[i]] = x[:, i]``.

    Args:
        group: ``S(n)``.
        dim: the element axis (default 1).
    """

    def __init__(self, group: Group, dim: int = 1) -> None:
        if not isinstance(group, S):
            raise GroupMismatchError(f"Set acts with a symmetric group S(n), got {group!r}")
        if not isinstance(dim, int) or dim == 0:
            raise ConfigError(f"Set: dim must be a non-batch axis (an int other than 0), got {dim!r}")
        self.group = group
        self.dim = dim

    def __repr__(self) -> str:
        return f"Set({self.group!r}, dim={self.dim})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Set) and (self.group, self.dim) == (other.group, other.dim)

    def __hash__(self) -> int:
        return hash((Set, self.group, self.dim))

    def __call__(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        group = self.group
        assert isinstance(group, S)
        if not isinstance(x, torch.Tensor) or x.ndim < 2:
            check_shape(x, "B n", n=group.n, name="x")
        d = _normalise_dim(self.dim, x.ndim, repr(self))
        if x.shape[d] != group.n:
            raise ShapeError(f"{self}: expected axis {self.dim} of size n = {group.n}, got shape {tuple(x.shape)}")
        g = self._elements(g, x.shape[0], x.device)
        return _permute_axis(x, d, group.inverse(g))

    def example(self, batch: int = 2, *, generator: torch.Generator | None = None,
                dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> torch.Tensor:
        assert isinstance(self.group, S)
        return _randn((batch, self.group.n, 3), generator, dtype, device)
