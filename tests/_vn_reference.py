"""The plain vector-neuron implementation the library had before its fused kernels (issue 20), kept as the
reference the fast layers are tested against (``tests/test_nn_geometric.py``) and timed against
(``benchmarks/performance.py``): every edge's channels are built as vectors, moved by the linear layer, gated
by an explicit direction, then averaged; every point layer is an einsum over ``(..., C, 3)``.

The functions take the library's modules and use only their parameters, so one set of weights runs both ways.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from equicanon.canonicalizers import ParticleVectorNeurons, VectorNeurons
from equicanon.canonicalizers.functional import gram_schmidt_with_margin
from equicanon.canonicalizers.points import _network_dtype
from equicanon.nn import VNBatchNorm, VNEdgeConv, VNLeakyReLU, VNLinear
from equicanon.nn.masking import masked_mean

#: distances per block of the reference k-NN (the library's former default, 64 MiB of float32)
KNN_BLOCK = 2**24


def knn(points: torch.Tensor, k: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, N, k)`` indices of the nearest points: squared distances ``|x_i|² + |x_j|² − 2 x_i·x_j`` in blocks
    of :data:`KNN_BLOCK`, top-k of each block."""
    k = min(k, points.shape[1])
    sq = (points * points).sum(-1)
    b, n = points.shape[:2]
    rows = n if b * n * n <= KNN_BLOCK else max(1, KNN_BLOCK // (b * n))
    parts = []
    for i in range(0, n, rows):
        dist = sq[:, i:i + rows, None] + sq[:, None, :] - 2 * points[:, i:i + rows] @ points.transpose(1, 2)
        if mask is not None:
            dist = dist.masked_fill(~mask[:, None, :], float("inf"))
        parts.append(dist.topk(k, dim=-1, largest=False).indices)
    return torch.cat(parts, dim=1)


def linear(layer: VNLinear, v: torch.Tensor) -> torch.Tensor:
    return torch.einsum("oc,...cd->...od", layer.weight, v)


def leaky_relu(layer: VNLeakyReLU, v: torch.Tensor) -> torch.Tensor:
    k = linear(layer.direction, v)
    dot = (v * k).sum(-1, keepdim=True)
    denominator = (k * k).sum(-1, keepdim=True) + layer.eps
    if layer.smoothing > 0:
        denominator = denominator + layer.smoothing**2 * (v * v).sum(-1, keepdim=True)
    projected = v - dot / denominator * k
    relu = torch.where(dot >= 0, v, projected)
    return layer.negative_slope * v + (1 - layer.negative_slope) * relu


def batch_norm(layer: VNBatchNorm, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    norm = torch.sqrt((v * v).sum(-1) + layer.eps**2)
    if mask is not None and v.ndim == 4:
        scaled = norm.clone()
        scaled[mask] = layer.bn(norm[mask])
        return v * (scaled / norm)[..., None]
    scaled = layer.bn(norm.reshape(-1, norm.shape[-1])).reshape(norm.shape)
    return v * (scaled / norm)[..., None]


def edge_conv(layer: VNEdgeConv, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, N, 3) → (B, N, C, 3)``: edge vectors ``x_j − x_i``, ``x_i`` (and ``x_i × x_j``) of the k nearest
    neighbours, linear layer, leaky ReLU, mean over the (real) neighbours."""
    b, n, _ = x.shape
    idx = knn(x, layer.k, mask)
    neighbours = torch.gather(x[:, None].expand(b, n, n, 3), 2, idx[..., None].expand(*idx.shape, 3))
    centre = x[:, :, None, :].expand_as(neighbours)
    channels = [neighbours - centre, centre]
    if layer.cross:
        channels.append(torch.linalg.cross(centre, neighbours, dim=-1))
    out = leaky_relu(layer.act, linear(layer.linear, torch.stack(channels, dim=-2)))
    if mask is None:
        return out.mean(dim=2)
    valid = torch.gather(mask[:, None].expand(b, n, n), 2, idx).to(out.dtype)[..., None, None]
    return (out * valid).sum(dim=2) / valid.sum(dim=2).clamp_min(1)


def trunk(module: nn.Module, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    for block in cast(nn.ModuleList, module.blocks):
        if module.context:
            v = torch.cat([v, masked_mean(v, mask, keepdim=True).expand_as(v)], dim=-2)
        for layer in cast(nn.Sequential, block):
            if isinstance(layer, VNLinear):
                v = linear(layer, v)
            elif isinstance(layer, VNBatchNorm):
                v = batch_norm(layer, v, mask)
            else:
                v = leaky_relu(cast(VNLeakyReLU, layer), v)
    return v


def head(canon: VectorNeurons | ParticleVectorNeurons, features: torch.Tensor,
         mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's ``(pose (B, 3, 3), vectors (B, 3, m))``: pooled vectors, their degeneracy scale from the
    channel norms (``torch.linalg.vector_norm``), Gram–Schmidt."""
    out = canon.head
    vectors = linear(out.out, masked_mean(features, mask)).transpose(1, 2)
    with torch.no_grad():
        sizes = masked_mean(torch.linalg.vector_norm(features, dim=-1)[..., None], mask)[..., 0]
        scale = (sizes @ out.out.weight.abs().t().to(sizes)).amax(dim=-1)
    least = 2 if out.special else 3
    pose, _ = gram_schmidt_with_margin(vectors[..., :least].double(), special=out.special,
                                       eps=out.threshold(vectors.dtype), scale=scale.double())
    return pose, vectors


def vector_neurons(canon: VectorNeurons, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``VectorNeurons``' ``(pose, vectors)`` (``extras["vectors"]``) computed the plain way."""
    net = x.to(_network_dtype(x, canon.head))
    return head(canon, trunk(canon.trunk, edge_conv(canon.edge, net, mask), mask), mask)


def particle_vector_neurons(canon: ParticleVectorNeurons, x: torch.Tensor,
                            mask: torch.Tensor | None = None) -> torch.Tensor:
    """``ParticleVectorNeurons``' ``(rotation, vectors)`` computed the plain way (its input channels from the
    module)."""
    return head(canon, trunk(canon.trunk, canon._network_input(x, mask)[0], mask), mask)
