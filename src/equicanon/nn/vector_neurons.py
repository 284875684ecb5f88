"""Vector Neuron layers (Deng et al., 2021): O(3)-equivariant networks on 3-D points, in plain torch.

Features are ``(B, N, C, 3)``: ``C`` vector channels per point. Every layer maps
``V R`` to ``f(V) R`` for any orthogonal ``R`` (vectors are rows, rotated on the
right), and acts on each point independently, so it commutes with permuting
points. No layer adds a bias to a vector: a bias would not rotate.

The layers compute in a ``(B, N, 3, C)`` memory layout (channels innermost), where mixing channels is one
matrix product: their ``(B, N, C, 3)`` outputs are transposed views of it (``.reshape``, not ``.view``, or
``.contiguous()`` first, to flatten them). The plain implementation they replaced, which builds every
edge's channels as vectors, is kept in ``tests/_vn_reference.py`` as the tests' reference.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ShapeError, check_number, check_positive_int
from .masking import masked_mean

__all__ = ["knn", "VNLinear", "VNLeakyReLU", "VNBatchNorm", "VNMeanPool", "VNInvariant", "VNEdgeConv"]


#: distances per block of :func:`knn` on an accelerator (``2**24`` float32 = 64 MiB) and on the CPU (1 MiB, which
#: stays in cache between the product and the top-k, and is not a fresh allocation each time: 2.5x faster at
#: 16k points than 64 MiB blocks); smaller clouds are done in one block
KNN_BLOCK = 2**24
KNN_CPU_BLOCK = 2**18


def knn(points: torch.Tensor, k: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Indices ``(B, N, k)`` of the ``k`` nearest points of each point (itself included), plain torch.

    Distances are rotation- and translation-invariant, so neighbourhoods are too. With ``mask (B, N)`` (True:
    a real point) padded points are farther than every real one, so they come last; the caller ignores them.
    Memory is bounded by :data:`KNN_BLOCK` (:data:`KNN_CPU_BLOCK`) distances at a time, not ``B N²``.
    """
    if points.ndim != 3:
        raise ShapeError(f"points: expected (B, N, d), got shape {tuple(points.shape)}")
    k = min(k, points.shape[1])
    # Row i ranks |x_j|² − 2 x_i·x_j, the squared distance less |x_i|², which is the same for the whole row:
    # the same order, from one matrix product of [x_i, 1] with [−2 x_j, |x_j|²] and no elementwise pass.
    b, n = points.shape[:2]
    queries = torch.cat([points, torch.ones_like(points[..., :1])], dim=-1)  # (B, N, d + 1)
    keys = torch.cat([-2 * points, (points * points).sum(-1, keepdim=True)], dim=-1).transpose(1, 2)
    block = KNN_CPU_BLOCK if points.device.type == "cpu" else KNN_BLOCK
    rows = n if b * n * n <= block else max(1, block // (b * n))
    if rows >= n:
        dist = queries @ keys
        if mask is not None:
            dist = dist.masked_fill_(~mask[:, None, :], float("inf"))
        return dist.topk(k, dim=-1, largest=False).indices
    # Block after block into the same buffers: each block's top-k is taken before the next block exists, and
    # the allocator is not asked for (and does not keep) a fresh block each time.
    out = torch.empty(b, n, k, dtype=torch.long, device=points.device)
    dist = points.new_empty(b, rows, n)
    values, indices = points.new_empty(b, rows, k), out.new_empty(b, rows, k)
    far = None if mask is None else ~mask[:, None, :]
    for i in range(0, n, rows):
        m = min(rows, n - i)
        block_dist = dist[:, :m]
        torch.bmm(queries[:, i:i + m], keys, out=block_dist)
        if far is not None:
            block_dist.masked_fill_(far, float("inf"))
        torch.topk(block_dist, k, dim=-1, largest=False, out=(values[:, :m], indices[:, :m]))
        out[:, i:i + m] = indices[:, :m]
    return out


def _mix(v: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``W V`` for ``v (..., C_in, 3)``, ``weight (C_out, C_in)``: one matrix product over the ``(..., 3, C)``
    layout. The result is ``(..., C_out, 3)``, a transposed view of ``(..., 3, C_out)`` memory, which the next
    layer reads without a copy (vector-neuron stacks keep that layout throughout)."""
    vt = v.mT
    if vt.is_contiguous():  # one 2-D product over every point's rows
        return (vt.reshape(-1, vt.shape[-1]) @ weight.mT).reshape(*vt.shape[:-1], weight.shape[0]).mT
    return (vt @ weight.mT).mT


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
        return _mix(v, self.weight)


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
        """``v: (…, C, 3) → (…, C, 3)`` (a view of ``(…, 3, C)`` memory, as :class:`VNLinear`'s), computed as
        ``v − s k`` with ``s = (1 − slope) · min(v·k, 0) / (|k|² + smoothing² |v|² + eps)``: the definition above
        in closed form."""
        k = self.direction(v)
        dot = torch.linalg.vecdot(v, k)
        return torch.addcmul(v, self._scale(dot, torch.linalg.vecdot(k, k), v)[..., None], k, value=-1)

    def _scale(self, dot: torch.Tensor, kk: torch.Tensor, v: torch.Tensor | None = None,
              vv: torch.Tensor | None = None) -> torch.Tensor:
        """``(1 − slope) · min(dot, 0) / denominator`` from the inner products ``dot = v·k``, ``kk = |k|²`` and
        (with smoothing) ``vv = |v|²`` (computed from ``v`` when not given)."""
        denominator = kk + self.eps
        if self.smoothing > 0:
            vv = torch.linalg.vecdot(v, v) if vv is None else vv
            denominator = torch.add(denominator, vv, alpha=self.smoothing**2)
        return dot.clamp(max=0) * (1 - self.negative_slope) / denominator


class VNBatchNorm(nn.Module):
    """Batch-normalise the norms of vector channels, keeping directions: ``(B, N, C, 3)`` or ``(B, C, 3)``."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(channels)
        self.eps = eps

    def forward(self, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask (B, N)`` (True: a real point; for ``(B, N, C, 3)``): the statistics, and the output, come from the
        real points only; padded points keep their vectors."""
        norm = torch.sqrt(torch.linalg.vecdot(v, v) + self.eps**2)  # (..., C)
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


#: edge channels per block of :class:`VNEdgeConv` (points × neighbours × output channels): the per-edge
#: scalars of one block stay in cache; the number of blocks does not change the result
EDGE_BLOCK = 2**18


class VNEdgeConv(nn.Module):
    """First layer on raw points ``(B, N, 3) → (B, N, C, 3)``: k-NN edge vectors, as in VN-DGCNN.

    For each point ``i`` and neighbour ``j`` the vector channels are ``x_j − x_i`` and ``x_i``
    (and ``x_i × x_j`` when ``cross``; the cross product is a pseudo-vector, so it is only
    equivariant to rotations — use ``cross=False`` for O(3)). A VN linear layer and leaky
    ReLU (``smoothing`` as in :class:`VNLeakyReLU`) follow, then the mean over neighbours.

    Computed in closed form, without the ``(B, N, k, C, 3)`` edge features: every edge channel after the
    linear layer is ``Σ_m A_cm e_m`` and its gate direction ``Σ_m B_cm e_m`` (``B = U A``), combinations of
    the 2 or 3 edge vectors ``e``, so the gate needs only the inner products of the edge vectors (``|d|²``,
    ``d·x_i``, ``|x_i|²``, ``|x_i × d|²``, the others vanish) and each channel one scalar ``s`` per edge; the
    mean over neighbours is then one small matrix product of ``s`` with the edge vectors. About ``12 C``
    multiply-adds per edge where the plain layer takes ``3 C² + 15 C``; the same numbers up to rounding.
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
        k = idx.shape[-1]
        flat = x.reshape(b * n, 3)
        neighbours = (idx + (torch.arange(b, device=x.device) * n)[:, None, None]).reshape(b * n, k)
        valid = None if mask is None else mask.reshape(b * n)[neighbours]  # (BN, k)
        # in the points' dtype under autocast too: the inner products cancel, and there are few multiply-adds
        with torch.autocast(x.device.type, enabled=False):
            a = self.linear.weight.to(x.dtype)  # (C, m): channel c is Σ_m a[c, m] e_m
            d = self.act.direction.weight.to(x.dtype) @ a  # its gate direction
            forms = _edge_forms(a, d)
            channels = a.shape[0]
            rows = max(1, EDGE_BLOCK // (k * channels))
            out = [self._block(flat[i:i + rows], flat[neighbours[i:i + rows]],
                               None if valid is None else valid[i:i + rows], a, d, forms)
                   for i in range(0, b * n, rows)]
        out = out or [x.new_zeros(0, 3, channels)]  # an empty batch
        return torch.cat(out).reshape(b, n, 3, channels).mT

    def _block(self, centre: torch.Tensor, neighbours: torch.Tensor, valid: torch.Tensor | None, a: torch.Tensor,
               d: torch.Tensor, forms: torch.Tensor) -> torch.Tensor:
        """``(P, 3, C)`` outputs of ``P`` points from their centres ``(P, 3)`` and neighbours ``(P, k, 3)``."""
        edge = neighbours - centre[:, None, :]  # e_0 = x_j − x_i, (P, k, 3)
        inner = [torch.linalg.vecdot(edge, edge), torch.linalg.vecdot(edge, centre[:, None, :]),
                 torch.linalg.vecdot(centre, centre)[:, None].expand(edge.shape[:2])]
        if self.cross:  # e_2 = x_i × x_j = x_i × e_0, orthogonal to e_0 and e_1 = x_i
            turned = torch.linalg.cross(centre[:, None, :].expand_as(edge), edge, dim=-1)
            inner.append(torch.linalg.vecdot(turned, turned))
        dot, kk, vv = (torch.stack(inner, dim=-1) @ forms).chunk(3, dim=-1)  # (P, k, C) each
        scale = self.act._scale(dot, kk, vv=vv)  # channel c of edge j is Σ_m (a − scale · d)[c, m] e_m
        if valid is None:
            count = edge.new_full((len(edge), 1), edge.shape[1])
        else:
            weight = valid.to(edge.dtype)
            scale, edge = scale * weight[..., None], edge * weight[..., None]
            count = weight.sum(1, keepdim=True).clamp_min(1)
        total = edge.sum(1)  # Σ_j e_0, (P, 3)
        moved = edge.mT @ scale  # Σ_j scale_jc e_0j, (P, 3, C)
        # Σ_j e_1 = count · x_i and Σ_j scale_jc e_1 = (Σ_j scale_jc) x_i
        along = count * a[:, 1] - scale.sum(1) * d[:, 1]  # (P, C)
        out = total[:, :, None] * a[:, 0] - moved * d[:, 0] + centre[:, :, None] * along[:, None, :]
        if self.cross:
            twist = torch.linalg.cross(centre[:, :, None].expand_as(moved), moved, dim=1)
            out = out + torch.linalg.cross(centre, total, dim=-1)[:, :, None] * a[:, 2] - twist * d[:, 2]
        return out / count[:, :, None]


def _edge_forms(a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """``(m + 1 or 4, 3C)``: the inner products ``[|e_0|², e_0·e_1, |e_1|², (|e_2|²)]`` of an edge times this
    matrix are ``(v·k, |k|², |v|²)`` of every channel, for ``v = Σ a_m e_m`` and ``k = Σ d_m e_m``
    (``e_2 ⟂ e_0, e_1``)."""
    def form(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:  # the bilinear form p_cᵀ Gram q_c per channel
        rows = [p[:, 0] * q[:, 0], p[:, 0] * q[:, 1] + p[:, 1] * q[:, 0], p[:, 1] * q[:, 1]]
        if a.shape[1] == 3:
            rows.append(p[:, 2] * q[:, 2])
        return torch.stack(rows)

    return torch.cat([form(a, d), form(d, d), form(a, a)], dim=1)
