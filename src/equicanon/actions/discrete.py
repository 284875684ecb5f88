"""Actions that permute an axis: the regular representation and sets."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch

from ..errors import ConfigError, ShapeError, check_shape
from ..groups import FiniteGroup, Group, S, as_group
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


class _AxisPermutation(Action):
    """An action that permutes one non-batch axis of its input by a per-sample index."""

    _needs: Callable[[Group], bool] = staticmethod(lambda g: True)  # what the group must be (a capability)
    _needs_text = ""
    _size_text = ""
    _size_letter = ""

    def __init__(self, group: Group | str, dim: int = 1) -> None:
        name = type(self).__name__
        group = as_group(group, where=self._needs, expected=self._needs_text, what=name)
        if isinstance(dim, bool) or not isinstance(dim, int) or dim == 0:
            raise ConfigError(f"{name}: dim must be a non-batch axis (an int other than 0), got {dim!r}")
        self.group = group
        self.dim = dim

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.group!r}, dim={self.dim})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and (self.group, self.dim) == (other.group, other.dim)

    def __hash__(self) -> int:
        return hash((type(self), self.group, self.dim))

    def _size(self) -> int:
        raise NotImplementedError

    def _index(self, g: torch.Tensor, device: torch.device) -> torch.Tensor:
        """``(B, size)``: output entry ``j`` reads input entry ``index[b, j]``."""
        raise NotImplementedError

    def __call__(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        size = self._size()
        if not isinstance(x, torch.Tensor) or x.ndim < 2:
            check_shape(x, f"B {self._size_letter}", name="x", **{self._size_letter: size})
        d = _normalise_dim(self.dim, x.ndim, repr(self))
        if x.shape[d] != size:
            raise ShapeError(f"{self}: expected axis {self.dim} of size {self._size_text} = {size}, got shape {tuple(x.shape)}")
        g = self._elements(g, x.shape[0], x.device)
        return _permute_axis(x, d, self._index(g, x.device))


class Regular(_AxisPermutation):
    """The regular representation of a finite group on one axis of size ``|G|``.

    Group-conv features and canonicalizer logits carry one entry per group
    element; ``g`` moves entry ``k`` to ``g k``: ``(g·ℓ)[..., g k, ...] = ℓ[..., k, ...]``.

    Args:
        group: a finite group indexed by integers (C(n), D(n)).
        dim: the axis of size ``|G|`` (default 1, as in logits ``(B, |G|)``).
    """

    _needs = staticmethod(lambda g: g.is_indexed)
    _needs_text = "a finite group with indexed elements (C(n), D(n), Octahedral())"
    _size_text = "|G|"
    _size_letter = "G"

    def _size(self) -> int:
        return cast(FiniteGroup, self.group).order

    def _index(self, g: torch.Tensor, device: torch.device) -> torch.Tensor:
        group = cast(FiniteGroup, self.group)
        # (g·x)[j] = x[g^-1 j]
        return group.compose(group.inverse(g)[:, None], group.elements(device=device)[None, :])

    def example(self, batch: int = 2, *, generator: torch.Generator | None = None,
                dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> torch.Tensor:
        return _randn((batch, self._size()), generator, dtype, device)


class Set(_AxisPermutation):
    """Permutations of the elements of sets ``(B, n, *)``: ``(g·x)[:, p[i]] = x[:, i]``.

    Args:
        group: ``S(n)``.
        dim: the element axis (default 1).
    """

    _needs = staticmethod(lambda g: g.kind == "permutation")
    _needs_text = "a symmetric group S(n)"
    _size_text = "n"
    _size_letter = "n"

    def _size(self) -> int:
        return cast(S, self.group).n

    def _index(self, g: torch.Tensor, device: torch.device) -> torch.Tensor:
        assert self.group is not None
        return self.group.inverse(g)

    def example(self, batch: int = 2, *, generator: torch.Generator | None = None,
                dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> torch.Tensor:
        return _randn((batch, self._size(), 3), generator, dtype, device)
