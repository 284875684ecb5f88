"""Padded batches of variable-size sets, point clouds and molecules."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import DTypeError, ShapeError, format_shape

__all__ = ["pad_sets"]


def pad_sets(items: Sequence[torch.Tensor], *, length: int | None = None, value: float = 0.0
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """One padded batch from sets of different sizes: ``items[i]`` ``(N_i, d)`` to ``(x (B, N, d), mask (B, N))``.

    ``x[i, :N_i] = items[i]``, the rest is ``value``; ``mask[i, j]`` is True for the real elements. ``N`` is the
    largest ``N_i`` (or ``length``, at least that). The items keep their dtype and device (all must share them)
    and are not modified.

    Example:
        >>> x, mask = pad_sets([torch.randn(5, 3), torch.randn(2, 3)])
        >>> x.shape, mask.sum(dim=1).tolist()
        (torch.Size([2, 5, 3]), [5, 2])
    """
    if isinstance(items, torch.Tensor) or not isinstance(items, Sequence) or not items:
        raise DTypeError(f"items: expected a non-empty list of tensors (N_i, d), got {type(items).__name__}")
    for i, item in enumerate(items):
        if not isinstance(item, torch.Tensor):
            raise DTypeError(f"items[{i}]: expected a tensor (N_i, d), got {type(item).__name__}")
        if item.ndim != 2 or item.shape[1:] != items[0].shape[1:]:
            raise ShapeError(f"items[{i}]: expected shape (N_i, {items[0].shape[1] if items[0].ndim == 2 else 'd'}) "
                             f"like items[0], got {format_shape(item.shape)}")
        if item.dtype != items[0].dtype or item.device != items[0].device:
            raise DTypeError(f"items[{i}]: dtype {item.dtype} on {item.device}, but items[0] is {items[0].dtype} on "
                             f"{items[0].device}; convert them alike")
    longest = max(item.shape[0] for item in items)
    n = longest if length is None else int(length)
    if n < longest:
        raise ShapeError(f"length={length} is shorter than the largest set ({longest} elements)")
    first = items[0]
    x = torch.full((len(items), n, first.shape[1]), value, dtype=first.dtype, device=first.device)
    mask = torch.zeros(len(items), n, dtype=torch.bool, device=first.device)
    for i, item in enumerate(items):
        x[i, :item.shape[0]] = item
        mask[i, :item.shape[0]] = True
    return x, mask
