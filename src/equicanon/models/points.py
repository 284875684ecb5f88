"""A plain point-cloud network: a small PointNet, deliberately *not* rotation-equivariant.

    >>> PointEncoder(3, out_dim=10, hidden=32)(torch.randn(2, 128, 3)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import check_mask, check_positive_int, check_shape
from ..nn.masking import masked_mean

__all__ = ["PointEncoder"]


class PointEncoder(nn.Module):
    """A small PointNet: a shared two-layer MLP (ReLU) on each point's coordinates, max and mean pooling, a linear layer.

    Two uses: the predictor of the point-cloud configs (``out_dim`` = number of classes, the
    output read as logits) and the default network ``φ`` of
    :class:`~equicanon.canonicalizers.Contrastive` for 3-D groups (``out_dim`` = feature size).

    Args:
        dim: coordinates per point (3 for 3-D clouds).
        out_dim: size of the output (the attribute ``out_dim``).
        hidden: width of the per-point MLP.

    Shapes: ``(N, P, dim)`` to ``(N, out_dim)``; invariant to the order of the ``P`` points. ``mask (N, P)``
    bool (True: a real point) pools over the real points only, so padded clouds (:func:`equicanon.data.pad_sets`)
    give the outputs of the clouds alone.
    """

    def __init__(self, dim: int = 3, out_dim: int = 64, hidden: int = 64) -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        self.out_dim = check_positive_int(out_dim, "out_dim")
        h = check_positive_int(hidden, "hidden")
        self.point_mlp = nn.Sequential(nn.Linear(dim, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU())
        self.head = nn.Linear(2 * h, out_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Outputs ``(N, out_dim)`` of point clouds ``x: (N, P, dim)`` (``mask (N, P)``: over the real points)."""
        check_shape(x, "N P d", d=self.dim)
        f = self.point_mlp(x)
        mask = check_mask(mask, x)
        if mask is None:
            return self.head(torch.cat([f.amax(dim=1), f.mean(dim=1)], dim=-1))
        largest = f.masked_fill(~mask[..., None], float("-inf")).amax(dim=1)
        return self.head(torch.cat([largest, masked_mean(f, mask)], dim=-1))
