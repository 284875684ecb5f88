"""Vector Neuron layers (Deng et al., 2021): O(3)-equivariant networks on 3-D points, in plain torch.

Features are ``(B, N, C, 3)``: ``C`` vector channels per point. Every layer maps
``V R`` to ``f(V) R`` for any orthogonal ``R`` (vectors are rows, rotated on the
right), and acts on each point independently, so it commutes with permuting
points. No layer adds a bias to a vector: a bias would not rotate.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ShapeError, check_number, check_positive_int
from .masking import masked_mean

__all__ = ["knn", "VNLinear", "VNLeakyReLU", "VNBatchNorm", "VNMeanPool", "VNInvariant", "VNEdgeConv"]


#: distances per block of :func:`knn` (``2**24`` float32 = 64 MiB); smaller clouds are done in one block
KNN_BLOCK = 2**24


def knn(points: torch.Tensor, k: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Indices ``(B, N, k)`` of the ``k`` nearest points of each point (itself included), plain torch.

    Distances are rotation- and translation-invariant, so neighbourhoods are too. With ``mask (B, N)`` (True:
    a real point) padded points are farther than every real one, so they come last; the caller ignores them.
    """
    if points.ndim != 3:
        raise ShapeError(f"points: expected (B, N, d), got shape {tuple(points.shape)}")
    k = min(k, points.shape[1])
    # squared distances from inner products, as cdist does, without the sqrt
    sq = (points * points).sum(-1)
    b, n = points.shape[:2]
    # (B, rows, N) distances at a time: memory O(KNN_BLOCK) rather than O(B N^2) for large clouds;
    # each block's top-k is taken before the next block exists
    rows = n if b * n * n <= KNN_BLOCK else max(1, KNN_BLOCK // (b * n))
    parts = []
    for i in range(0, n, rows):
        dist = sq[:, i:i + rows, None] + sq[:, None, :] - 2 * points[:, i:i + rows] @ points.transpose(1, 2)
        if mask is not None:
            dist = dist.masked_fill(~mask[:, None, :], float("inf"))
        parts.append(dist.topk(k, dim=-1, largest=False).indices)
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


class VNLinear(nn.Module):
    """Mix vector channels: ``(…, C_in, 3) → (…, C_out, 3)``, ``V' = W V``; no bias."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        check_positive_int(in_channels, "in_channels")
        check_positive_int(out_channels, "out_channels")
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels) / math.sqrt(in_channels))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        if v.shape[-1] != 3 or v.shape[-2] != self.weight.shape[1]:
            raise ShapeError(f"VNLinear: expected (…, {self.weight.shape[1]}, 3), got shape {tuple(v.shape)}")
        return torch.einsum("oc,...cd->...od", self.weight, v)


class VNLeakyReLU(nn.Module):
    """Vector leaky ReLU: a learned direction ``k = U V`` per channel; the part of each vector
    pointing against ``k`` is removed (scaled by ``negative_slope``):

        v' = v − (1 − negative_slope) · [v·k < 0] · (v·k) k / (|k|² + smoothing² |v|² + eps)

    ``smoothing`` keeps the gate away from a hard switch. With ``smoothing = 0`` the removed part is the
    projection of Deng et al. (2021), which is continuous where ``v·k`` changes sign, except when ``k`` and
    ``v`` are parallel (one vector per point, e.g. particles at rest): there ``v·k`` can only change sign
    with ``k`` passing through 0, where the output jumps from ``v`` to ``negative_slope · v``. With
    ``smoothing = s > 0`` that jump becomes a ramp over ``|k| ≲ s |v|``, so the layer is Lipschitz in
    ``v`` and ``k`` (relative to ``|v|``, about ``1/s``); where ``|k| ≫ s |v|`` it is the projection as
    before. Both terms scale with the input, so ``f(c V) = c f(V)`` for ``c > 0`` (``eps`` guards
    ``v = k = 0``).
    """

    def __init__(self, channels: int, negative_slope: float = 0.2, eps: float = 1e-6, smoothing: float = 0.0) -> None:
        super().__init__()
        self.direction = VNLinear(channels, channels)
        self.negative_slope = float(negative_slope)
        self.eps = eps
        self.smoothing = check_number(smoothing, "smoothing", minimum=0.0)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        k = self.direction(v)
        dot = (v * k).sum(-1, keepdim=True)
        denominator = (k * k).sum(-1, keepdim=True) + self.eps
        if self.smoothing > 0:
            denominator = denominator + self.smoothing**2 * (v * v).sum(-1, keepdim=True)
        projected = v - dot / denominator * k
        relu = torch.where(dot >= 0, v, projected)
        return self.negative_slope * v + (1 - self.negative_slope) * relu


class VNBatchNorm(nn.Module):
    """Batch-normalise the norms of vector channels, keeping directions: ``(B, N, C, 3)`` or ``(B, C, 3)``."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(channels)
        self.eps = eps

    def forward(self, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask (B, N)`` (True: a real point; for ``(B, N, C, 3)``): the statistics, and the output, come from the
        real points only; padded points keep their vectors."""
        norm = torch.sqrt((v * v).sum(-1) + self.eps**2)  # (..., C)
        if mask is not None and v.ndim == 4:
            scaled = norm.clone()
            scaled[mask] = self.bn(norm[mask])  # (real points, C)
            return v * (scaled / norm)[..., None]
        flat = norm.reshape(-1, norm.shape[-1])
        scaled = self.bn(flat).reshape(norm.shape)
        return v * (scaled / norm)[..., None]


class VNMeanPool(nn.Module):
    """Mean over points: ``(B, N, C, 3) → (B, C, 3)``; permutation invariant, rotation equivariant."""

    def forward(self, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask (B, N)``: the mean over the real points only."""
        return masked_mean(v, mask)


class VNInvariant(nn.Module):
    """Rotation-invariant features ``(…, C, 3) → (…, 3C)``: inner products with 3 learned vector channels.

    ``⟨V R, Z R⟩ = ⟨V, Z⟩`` for orthogonal ``R``, so the output is O(3)-invariant.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.frame = VNLinear(channels, 3)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        z = self.frame(v)
        return torch.einsum("...cd,...fd->...cf", v, z).flatten(-2)


class VNEdgeConv(nn.Module):
    """First layer on raw points ``(B, N, 3) → (B, N, C, 3)``: k-NN edge vectors, as in VN-DGCNN.

    For each point ``i`` and neighbour ``j`` the vector channels are ``x_j − x_i`` and ``x_i``
    (and ``x_i × x_j`` when ``cross``; the cross product is a pseudo-vector, so it is only
    equivariant to rotations — use ``cross=False`` for O(3)). A VN linear layer and leaky
    ReLU (``smoothing`` as in :class:`VNLeakyReLU`) follow, then the mean over neighbours.
    """

    def __init__(self, out_channels: int, k: int = 16, cross: bool = False, smoothing: float = 0.0) -> None:
        super().__init__()
        self.k = check_positive_int(k, "k")
        self.cross = bool(cross)
        self.linear = VNLinear(3 if cross else 2, out_channels)
        self.act = VNLeakyReLU(out_channels, smoothing=smoothing)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask (B, N)`` (True: a real point): padded points are never neighbours (the mean over neighbours is
        over the real ones, ``min(k, N_real)`` of them, as for the unpadded cloud)."""
        if x.ndim != 3 or x.shape[-1] != 3:
            raise ShapeError(f"points: expected (B, N, 3), got shape {tuple(x.shape)}")
        b, n, _ = x.shape
        idx = knn(x, self.k, mask)  # (B, N, k)
        neighbours = torch.gather(x[:, None].expand(b, n, n, 3), 2, idx[..., None].expand(*idx.shape, 3))
        centre = x[:, :, None, :].expand_as(neighbours)
        channels = [neighbours - centre, centre]
        if self.cross:
            channels.append(torch.linalg.cross(centre, neighbours, dim=-1))
        edges = torch.stack(channels, dim=-2)  # (B, N, k, c, 3)
        out = self.act(self.linear(edges))
        if mask is None:
            return out.mean(dim=2)
        valid = torch.gather(mask[:, None].expand(b, n, n), 2, idx).to(out.dtype)[..., None, None]  # (B, N, k, 1, 1)
        return (out * valid).sum(dim=2) / valid.sum(dim=2).clamp_min(1)


