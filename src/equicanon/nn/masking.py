"""Padding masks of variable-size point sets and sets: means over the real elements."""

from __future__ import annotations

import torch

__all__ = ["masked_mean"]


def masked_mean(v: torch.Tensor, mask: torch.Tensor | None, dim: int = 1, keepdim: bool = False) -> torch.Tensor:
    """Mean of ``v`` over axis ``dim`` (the points), over the real points only where ``mask (B, N)`` (True: real)
    is given; ``v`` is ``(B, N, ...)``."""
    if mask is None:
        return v.mean(dim=dim, keepdim=keepdim)
    w = mask.to(v.dtype).reshape(*mask.shape, *([1] * (v.ndim - mask.ndim)))
    return (v * w).sum(dim=dim, keepdim=keepdim) / w.sum(dim=dim, keepdim=keepdim).clamp_min(1)
