"""Functional core of the image actions: exact index transforms and interpolated rotations.

Coordinates: a pixel at row ``i``, column ``j`` of an ``H x W`` image sits at
``(u, v) = (j - (W-1)/2, (H-1)/2 - i)`` — the origin is the centre of the pixel
grid, ``u`` points right and ``v`` up. A 2x2 matrix ``M`` transforms an image by
``(M·x)(p) = x(M⁻¹ p)``. With this centre, rotating by 90° maps pixel centres
onto pixel centres for odd *and* even sizes, so the interpolated rotation by
90° equals ``torch.rot90(x, 1, dims=(-2, -1))``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ShapeError, check_choice, check_floating, check_shape
from ..groups.base import reads_values

__all__ = ["PADDINGS", "MODES", "permute_image", "rotate_image"]

PADDINGS = ("zeros", "border", "reflection")
MODES = ("bilinear", "nearest")


def permute_image(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Exactly transform images by signed-permutation matrices (multiples of 90° and flips).

    Args:
        x: ``(B, C, H, W)`` images of any dtype.
        matrix: ``(B, 2, 2)`` or ``(1, 2, 2)`` integer matrices with entries in
            ``{-1, 0, 1}`` that map the pixel grid onto itself (a 90° turn needs ``H == W``).

    Returns:
        ``(B, C, H, W)``: a new tensor; each output pixel is copied from one input pixel.
    """
    m = matrix.long().to(x.device)
    if m.shape[0] == 1 or (reads_values(m) and bool((m == m[:1]).all())):
        # one move for the whole batch (on the CPU, outside graph capture, the check waits for nothing): a
        # transpose and flips, about 3x faster than the per-sample gather below
        return _uniform_move(x, m[0])
    return _gather_move(x, m)


# (entries of M, H, W) -> (transpose?, flipped dims) with the same result as _gather_move
_UNIFORM_MOVES: dict[tuple[tuple[int, ...], int, int], tuple[bool, tuple[int, ...]]] = {}


def _uniform_move(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``permute_image`` for one matrix ``m`` ``(2, 2)`` shared by the batch: found once per matrix and image
    size by matching the gather on an index pattern, then a transpose and flips of ``x``."""
    h, w = x.shape[-2:]
    key = (tuple(m.flatten().tolist()), h, w)
    if key not in _UNIFORM_MOVES:
        pattern = torch.arange(h * w).reshape(1, 1, h, w)
        target = _gather_move(pattern, m[None].cpu())
        for transpose in (False, True):
            flips: tuple[int, ...]
            for flips in ((), (-1,), (-2,), (-2, -1)):
                candidate = _transpose_flip(pattern, transpose, flips)
                if candidate.shape == target.shape and torch.equal(candidate, target):
                    _UNIFORM_MOVES[key] = (transpose, flips)
                    break
            if key in _UNIFORM_MOVES:
                break
        else:
            return _gather_move(x, m[None])  # not a move of the grid onto itself: the gather says how
    transpose, dims = _UNIFORM_MOVES[key]
    return _transpose_flip(x, transpose, dims)


def _transpose_flip(x: torch.Tensor, transpose: bool, dims: tuple[int, ...]) -> torch.Tensor:
    y = x.transpose(-1, -2) if transpose else x
    y = y.flip(dims) if dims else y if transpose else y.clone()
    return y.contiguous()


def _gather_move(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``permute_image`` by per-sample matrices ``m`` ``(B or 1, 2, 2)`` (int64): one gather."""
    b, c, h, w = x.shape
    m00, m01, m10, m11 = m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1]
    # The source pixel M^T p of output pixel (i, j) is affine in (i, j): column
    # m00 j - m10 i + ((W-1)(1-m00) + (H-1) m10) / 2, row m11 i - m01 j + ((H-1)(1-m11) + (W-1) m01) / 2
    # (exact integers), so its flat index is  di * i + dj * j + start  per sample.
    di, dj = m11 * w - m10, m00 - m01 * w
    start = ((h - 1) * (1 - m11) + (w - 1) * m01) // 2 * w + ((w - 1) * (1 - m00) + (h - 1) * m10) // 2
    rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    index = (di[:, None, None] * rows[:, None] + (dj[:, None] * cols + start[:, None])[:, None, :])
    index = index.reshape(-1, h * w).expand(b, h * w)
    flat = x.reshape(b, c, h * w)
    return flat.gather(2, index[:, None, :].expand(b, c, h * w)).reshape(b, c, h, w)


def _reflect(coord: torch.Tensor, size: int) -> torch.Tensor:
    """Fold coordinates into ``[0, size-1]`` by mirroring about the edge pixels' centres."""
    if size == 1:
        return torch.zeros_like(coord)
    period = 2 * (size - 1)
    t = torch.remainder(coord, period)
    return torch.where(t > size - 1, period - t, t)


def _padded_size(n: int) -> int:
    """The smallest ``2**k + 1 >= n``: with it, ``grid_sample(align_corners=True)`` maps
    integer pixel positions to normalised coordinates and back without rounding."""
    k = max(n - 2, 0).bit_length()
    return 2**k + 1


def rotate_image(x: torch.Tensor, matrix: torch.Tensor, *, mode: str = "bilinear",
                 padding: str = "zeros") -> torch.Tensor:
    """Transform images by arbitrary 2x2 matrices with interpolation.

    The centre is the centre of the pixel grid ``((W-1)/2, (H-1)/2)``. Sample
    positions are computed in float64 and handed to ``grid_sample`` on an input
    zero-padded (right and bottom) to ``2**k + 1`` pixels, so integer positions
    survive its float32 normalisation exactly: a rotation by a multiple of 90°
    reproduces ``torch.rot90`` to rounding error at any size (plain
    ``grid_sample`` is off by up to 1e-4 at 224 px). Gradients flow to ``x``
    and to ``matrix``.

    Args:
        x: ``(B, C, H, W)`` floating images.
        matrix: ``(B, 2, 2)`` or ``(1, 2, 2)`` transforms (``x`` right, ``y`` up).
        mode: ``"bilinear"`` (default) or ``"nearest"``.
        padding: the value outside the input: ``"zeros"``, ``"border"`` (nearest edge
            pixel) or ``"reflection"`` (mirrored about the edge pixels' centres).

    Returns:
        ``(B, C, H, W)``, a new tensor in the dtype of ``x`` (float16/bfloat16
        are computed in float32).
    """
    check_shape(x, "B C H W")
    check_floating(x)
    check_choice(mode, MODES, "mode")
    check_choice(padding, PADDINGS, "padding")
    b, _, h, w = x.shape
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    ph, pw = _padded_size(h), _padded_size(w)
    m = matrix.to(device=x.device, dtype=work)
    # Sample position of output pixel (i, j), whose centred coordinates are p = (u, v):
    #   column = (M^T p)_0 + (W-1)/2,  row = (H-1)/2 - (M^T p)_1.
    # One batched matmul of [u, v, 1] with a (B, 3, 2) affine map; every product and
    # sum is exact for quarter turns (entries 0, ±1 and half-integer coordinates).
    base = _centred_grid(h, w, x.device, work)  # (H*W, 3)
    zero = torch.zeros_like(m[:, 0, 0])
    affine = torch.stack([
        torch.stack([m[:, 0, 0], -m[:, 0, 1]], -1),
        torch.stack([m[:, 1, 0], -m[:, 1, 1]], -1),
        torch.stack([zero + (w - 1) / 2, zero + (h - 1) / 2], -1),
    ], dim=1)  # (B, 3, 2) mapping [u, v, 1] to (column, row)
    pixel = torch.matmul(base, affine)  # (B, H*W, 2)
    if padding == "border":
        pixel = torch.stack([pixel[..., 0].clamp(0, w - 1), pixel[..., 1].clamp(0, h - 1)], -1)
    elif padding == "reflection":
        pixel = torch.stack([_reflect(pixel[..., 0], w), _reflect(pixel[..., 1], h)], -1)
    scale = torch.tensor([2 / (pw - 1), 2 / (ph - 1)], device=x.device, dtype=work)
    grid = (pixel * scale - 1).reshape(pixel.shape[0], h, w, 2).expand(b, h, w, 2)
    out = F.grid_sample(F.pad(x.to(work), (0, pw - w, 0, ph - h)), grid, mode=mode, padding_mode="zeros",
                        align_corners=True)
    return out.to(x.dtype)


def _centred_grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Rows ``[u, v, 1]`` of centred pixel coordinates, row-major: ``(H*W, 3)``."""
    u = torch.arange(w, device=device, dtype=dtype) - (w - 1) / 2
    v = (h - 1) / 2 - torch.arange(h, device=device, dtype=dtype)
    return torch.stack([u.repeat(h), v.repeat_interleave(w), torch.ones(h * w, device=device, dtype=dtype)], -1)


def require_square(x: torch.Tensor, what: str) -> None:
    """Raise :class:`ShapeError` unless the last two dimensions of ``x`` are equal."""
    h, w = x.shape[-2:]
    if h != w:
        raise ShapeError(
            f"{what} rotates by 90°, which needs square images; got H={h}, W={w}. "
            "Crop or pad to a square first, or use C(2)/D(2)/SO2() whose elements keep the shape."
        )
