"""The action protocol: ``action(g, x)`` computes ``g·x`` for a batch."""

from __future__ import annotations

import abc
from typing import Any

import torch

from ..errors import DeviceError, GroupMismatchError, ShapeError
from ..groups import Group, as_group
from ..groups.base import draw

__all__ = ["Action", "Trivial"]


class Action(abc.ABC):
    """How a group acts on one kind of data.

    ``action(g, x)`` returns ``g·x`` where ``g`` is a batch of ``B`` elements
    (or one element, applied to every sample) and ``x`` a batch of ``B``
    samples. It returns a new tensor and never modifies ``x``.
    """

    #: the group acting, or ``None`` for actions that accept any group
    group: Group | None = None
    #: whether ``act(g, act(h, x)) == act(compose(g, h), x)`` holds to rounding error
    #: (False for interpolated image rotations, whose law holds only approximately)
    exact: bool = True
    #: whether ``action(g, x, mask=m)`` takes a padding mask ``(B, N)`` of point sets (padded rows left as they are)
    accepts_mask: bool = False

    @abc.abstractmethod
    def __call__(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``g·x``."""

    @abc.abstractmethod
    def example(self, batch: int = 2, *, generator: torch.Generator | None = None,
                dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> torch.Tensor:
        """A random input this action accepts (used when a checker gets no input)."""

    def act(self, g: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``g·x``; with a padding mask ``(B, N)`` of point sets, given to actions that take one
        (:attr:`accepts_mask`: their padded rows stay as they are) and ignored by the others."""
        if mask is None or not self.accepts_mask:
            return self(g, x)
        call: Any = self  # the actions that accept a mask take it as a keyword
        return call(g, x, mask=mask)

    def _elements(self, g: torch.Tensor, batch: int, device: torch.device | None = None) -> torch.Tensor:
        """Validate ``g``, broadcast it to ``batch`` elements and move it to ``device`` (the data's)."""
        assert self.group is not None
        g = self.group.check(g)
        n = self.group.batch_size(g)
        if n not in (1, batch):
            raise ShapeError(f"{self}: got {n} group elements for a batch of {batch} samples; pass {batch} or 1")
        if device is not None and g.device != torch.device(device):
            try:
                g = g.to(device)
            except NotImplementedError as e:  # e.g. elements on the meta device, which hold no values to move
                raise DeviceError(f"{self}: the group elements are on {g.device} and cannot be moved to the data's "
                                  f"device {device}; create them there") from e
        return self.group.expand(g, batch) if n == 1 and batch != 1 else g

    def check_group(self, group: Group, what: str = "the canonicalizer") -> None:
        """Raise :class:`GroupMismatchError` unless ``group`` is the action's group."""
        if self.group is not None and group != self.group:
            raise GroupMismatchError(f"{self} acts with {self.group}, but {what} uses {group}")


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, dtype: torch.dtype | None,
           device: torch.device | str | None) -> torch.Tensor:
    return draw(torch.randn, shape, generator=generator, device=device, dtype=dtype)


class Trivial(Action):
    """The trivial action ``g·x = x``: invariant outputs such as class logits."""

    def __repr__(self) -> str:
        return "Trivial()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Trivial)

    def __hash__(self) -> int:
        return hash("Trivial")

    def __call__(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x

    def example(self, batch: int = 2, *, generator: torch.Generator | None = None,
                dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> torch.Tensor:
        return _randn((batch, 4), generator, dtype, device)


class Pose(Action):
    """A group acting on its own elements by left multiplication: ``g·h = g h``.

    Poses are equivariant exactly when ``pose(g·x) == Pose(G)(g, pose(x))``.
    """

    def __init__(self, group: Group | str) -> None:
        self.group = as_group(group, what="Pose")

    def __repr__(self) -> str:
        return f"Pose({self.group!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pose) and other.group == self.group

    def __hash__(self) -> int:
        return hash((Pose, self.group))

    def __call__(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        assert self.group is not None
        h = self.group.check(x, "pose")
        g = self._elements(g, self.group.batch_size(h), h.device)
        return self.group.compose(g.to(h.dtype) if g.is_floating_point() else g, h)

    def example(self, batch: int = 2, *, generator: torch.Generator | None = None,
                dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> torch.Tensor:
        assert self.group is not None
        return self.group.sample(batch, generator=generator, dtype=dtype, device=device)
