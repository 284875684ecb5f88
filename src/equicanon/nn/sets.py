"""Permutation-equivariant layers for sets ``(B, n, F)`` (DeepSets; no positional encodings)."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ShapeError, check_positive_int
from .masking import masked_mean

__all__ = ["DeepSetsLayer", "DeepSetsScorer"]


class DeepSetsLayer(nn.Module):
    """``y_i = A x_i + B mean_j x_j + c``: ``(B, n, F_in) → (B, n, F_out)``, permutation equivariant."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        check_positive_int(in_features, "in_features")
        self.own = nn.Linear(in_features, out_features)
        self.pooled = nn.Linear(in_features, out_features, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask (B, n)`` (True: a real element): the mean is over the real elements only."""
        if x.ndim != 3 or x.shape[-1] != self.own.in_features:
            raise ShapeError(f"DeepSetsLayer: expected (B, n, {self.own.in_features}), got shape {tuple(x.shape)}")
        return self.own(x) + self.pooled(masked_mean(x, mask, keepdim=True))


class DeepSetsScorer(nn.Module):
    """One score per set element: ``(B, n, F) → (B, n)``, permutation equivariant."""

    def __init__(self, in_features: int, hidden: int = 32, layers: int = 2) -> None:
        super().__init__()
        check_positive_int(hidden, "hidden")
        check_positive_int(layers, "layers")
        blocks: list[nn.Module] = []
        width = in_features
        for _ in range(layers):
            blocks += [DeepSetsLayer(width, hidden), nn.ReLU()]
            width = hidden
        blocks.append(DeepSetsLayer(width, 1))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``(B, n)``; with ``mask (B, n)`` the set means are over the real elements."""
        if mask is None:
            return self.net(x).squeeze(-1)
        for layer in self.net:
            x = layer(x, mask) if isinstance(layer, DeepSetsLayer) else layer(x)
        return x.squeeze(-1)
