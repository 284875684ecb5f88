"""Group convolutions on the regular representation of C(n) and D(n), in plain torch.

Feature maps are ``(B, C, |G|, H, W)``: one channel-stack per group element.
``g`` acts on them by moving pixels (the image action) and permuting the group
axis (the regular action): ``(g·F)[:, c, k](p) = F[:, c, g⁻¹k](g⁻¹p)``.
:class:`RegularFeatures` is that action, for use with
:func:`equicanon.testing.assert_equivariant`.

Filters come in two kinds (``filters=``):

- ``"free"``: every pixel of the filter is a parameter, and the filter is moved
  by :class:`equicanon.actions.Image` — exact index operations for multiples of
  90° and flips, bilinear interpolation otherwise.
- ``"steerable"``: the filter is a combination of smooth basis functions
  (Gaussian rings times ``cos mφ``, ``sin mφ``), each *evaluated* at the
  rotated sample positions, so a 45° filter is as well sampled as an upright
  one. Interpolating random free filters by 45° blurs them, which biases the
  argmax of C(8) logits towards the quarter-turn elements; steerable filters
  avoid that. The default, ``"auto"``, is free for groups whose rotations are
  all multiples of 90° and steerable otherwise.

Either way, quarter turns and flips move filters by exact index operations,
so layers on C(4)/D(4) and their subgroups, and the quarter-turn elements of
any C(n)/D(n), are exactly equivariant for odd and even image sizes (stride 1,
symmetric "same" zero padding, odd kernels). Other angles are approximate;
``docs/images.md`` gives the measured error.

Downsampling keeps the grid centre: :class:`EquivariantAvgPool2d` (2x2 windows at even sizes,
3x3 with one pixel of padding at odd ones), also available inside the convolutions
(``pool_above=``), where at even sizes the convolution and the pool are one stride-2 convolution.

In eval mode, when no gradient to the weights is needed, both layers build their moved filters once and reuse
them until a parameter or the basis changes (an optimizer step, ``load_state_dict``, ``.to()``: anything that
writes the tensors in place, which bumps their version, or replaces them). A write through ``.data``
bypasses that version count; call :meth:`~LiftingConv2d.clear_filter_cache` after one.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ..actions import Action, Image, Regular
from ..actions.base import _randn
from ..actions.image import transform_image
from ..errors import ConfigError, check_choice, check_positive_int, check_shape
from ..groups import Group, PlanarFiniteGroup, as_group

__all__ = [
    "RegularFeatures",
    "transform_filters",
    "steerable_basis",
    "LiftingConv2d",
    "GroupConv2d",
    "GroupBatchNorm",
    "GroupPool",
    "EquivariantAvgPool2d",
]


def _check_group(group: Group | str, what: str) -> PlanarFiniteGroup:
    checked = as_group(group, where=lambda g: g.is_finite and g.kind == "planar", what=what,
                       expected="a finite planar group C(n) or D(n)")
    return cast(PlanarFiniteGroup, checked)  # finite and planar: C(n) or D(n)


def _check_kernel(kernel_size: object) -> int:
    k = check_positive_int(kernel_size, "kernel_size")
    if k % 2 == 0:
        raise ConfigError(f"kernel_size must be odd (a filter needs a centre pixel to rotate about), got {k}")
    return k


class RegularFeatures(Action):
    """Action of a finite planar group on feature maps ``(B, C, |G|, H, W)``."""

    def __init__(self, group: Group, padding: str = "zeros") -> None:
        self.group = _check_group(group, "RegularFeatures")
        self._image = Image(group, padding=padding)
        self._regular = Regular(group, dim=2)
        self.exact = self._image.exact

    def __repr__(self) -> str:
        return f"RegularFeatures({self.group!r})"

    def __call__(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        sizes = check_shape(x, "B C G H W", G=cast(PlanarFiniteGroup, self.group).order)
        b, c, n, h, w = x.shape
        g = self._elements(g, sizes["B"], x.device)
        moved = self._image(g, x.reshape(b, c * n, h, w)).reshape(b, c, n, h, w)
        return self._regular(g, moved)

    def example(self, batch: int = 2, *, generator: torch.Generator | None = None,
                dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> torch.Tensor:
        return _randn((batch, 2, cast(PlanarFiniteGroup, self.group).order, 13, 13), generator, dtype, device)


FILTERS = ("auto", "free", "steerable")


def steerable_basis(group: PlanarFiniteGroup, kernel_size: int, *, sigma: float = 0.6,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A smooth filter basis sampled at every group element's transformed pixel positions.

    Basis functions are rings of radius ``r = 0 .. k//2`` with a Gaussian profile
    (``sigma`` pixels) times ``cos(mφ)`` and ``sin(mφ)`` for ``m <= min(2r, r+1)``,
    each scaled to unit norm. Entry ``[j, b]`` is basis function ``b`` moved by
    element ``j``: ``b(g_j⁻¹ p)``, evaluated analytically for general angles and by
    exact index permutation of the identity's samples for quarter turns and flips.

    Returns:
        ``(|G|, n_basis, k, k)``.
    """
    from ..actions.functional import permute_image

    k = kernel_size
    half = (k - 1) / 2
    coords = torch.stack(torch.meshgrid(torch.arange(k, dtype=torch.float64) - half,
                                        half - torch.arange(k, dtype=torch.float64), indexing="xy"), -1)
    elements = group.elements()
    mats = group.matrix(elements, dtype=torch.float64)  # (|G|, 2, 2)
    # source positions g^-1 p = M^T p
    q = torch.einsum("gji,hwj->ghwi", mats, coords)
    radius, phi = q.norm(dim=-1), torch.atan2(q[..., 1], q[..., 0])
    functions = []
    for r in range(int(half) + 1):
        ring = torch.exp(-((radius - r) ** 2) / (2 * sigma**2))
        functions.append(ring)
        for m in range(1, (min(2 * r, r + 1) if r > 0 else 0) + 1):
            functions += [ring * torch.cos(m * phi), ring * torch.sin(m * phi)]
    basis = torch.stack(functions, dim=1)  # (|G|, n_basis, k, k)
    basis = basis / basis[0].flatten(1).norm(dim=1)[None, :, None, None]
    quarter = group.is_quarter_turn(elements)
    eye = torch.eye(2, dtype=mats.dtype).expand_as(mats)
    exact = permute_image(basis[:1].expand_as(basis), torch.where(quarter[:, None, None], mats, eye))
    basis = torch.where(quarter[:, None, None, None], exact, basis)
    return basis.to(dtype)


def transform_filters(group: PlanarFiniteGroup, weight: torch.Tensor, *, regular_input: bool,
                      basis: torch.Tensor | None = None) -> torch.Tensor:
    """Every group element applied to a filter bank.

    Args:
        group: C(n) or D(n).
        weight: free filters ``(C_out, C_in, [|G|,] k, k)``, or with ``basis`` the
            coefficients ``(C_out, C_in, [|G|,] n_basis)``; the ``|G|`` axis is
            present for group convolutions (``regular_input``).
        basis: ``(|G|, n_basis, k, k)`` from :func:`steerable_basis`, or ``None``
            for free filters (moved with :class:`~equicanon.actions.Image`).

    Returns:
        ``(C_out, |G|, C_in, [|G|,] k, k)``: entry ``[:, j]`` is ``g_j·weight`` —
        spatially moved by ``g_j`` and, for regular inputs, its group axis permuted.
    """
    n = group.order
    elements = group.elements(device=weight.device)
    if basis is None:
        k = weight.shape[-1]
        flat = weight.reshape(1, -1, k, k).expand(n, -1, k, k)
        moved = transform_image(group, elements, flat, mode="bilinear", padding="zeros")
        moved = moved.reshape(n, *weight.shape)  # (|G|, C_out, C_in, [|G|,] k, k)
    else:
        moved = torch.einsum("...b,gbhw->g...hw", weight, basis)
    if regular_input:
        moved = Regular(group, dim=3)(elements, moved)
    return moved.transpose(0, 1)


def _init_filters(module: LiftingConv2d | GroupConv2d, group: PlanarFiniteGroup, shape: tuple[int, ...], kernel_size: int,
                  fan_in: int, filters: str) -> None:
    """Give ``module`` its ``weight`` parameter, ``basis`` buffer (``None`` for free filters) and ``filters`` kind."""
    filters = check_choice(filters, FILTERS, "filters")
    if filters == "auto":
        filters = "free" if group.all_quarter_turns else "steerable"
    module.filters = filters
    if filters == "steerable":
        basis = steerable_basis(group, kernel_size)
        module.register_buffer("basis", basis, persistent=False)
        module.weight = nn.Parameter(torch.randn(*shape, basis.shape[1]) / math.sqrt(fan_in))
    else:
        module.basis = None
        module.weight = nn.Parameter(torch.randn(*shape, kernel_size, kernel_size) / math.sqrt(fan_in))


def _fingerprint(tensors: tuple[torch.Tensor | None, ...]) -> tuple[object, ...]:
    """What changes when a tensor is written in place (its version) or replaced (storage, dtype, device)."""
    return tuple(None if t is None else (t.data_ptr(), t._version, t.dtype, t.device, t.shape) for t in tensors)


class _CachedFilters(nn.Module):
    """Builds the layer's moved filters and bias; in eval mode without weight gradients, once per parameter state."""

    weight: nn.Parameter
    bias: nn.Parameter | None
    basis: torch.Tensor | None
    _filter_cache: tuple[tuple[object, ...], torch.Tensor, torch.Tensor | None] | None = None

    in_channels: int
    out_channels: int
    kernel_size: int
    group: PlanarFiniteGroup
    #: whether the input carries a group axis (group convolution) or not (lifting convolution)
    _regular_input: bool

    def _build(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(filters (C_out |G|, C_in [|G|], k, k), bias (C_out |G|,) or None)`` for one ``conv2d``."""
        n, k = self.group.order, self.kernel_size
        filters = transform_filters(self.group, self.weight, regular_input=self._regular_input, basis=self.basis)
        bias = self.bias.repeat_interleave(n) if self.bias is not None else None
        width = self.in_channels * (n if self._regular_input else 1)
        return filters.reshape(self.out_channels * n, width, k, k), bias

    def clear_filter_cache(self) -> None:
        """Forget the filters built in eval mode (needed only after writing a parameter through ``.data``)."""
        self._filter_cache = None

    def _filters(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        needs_graph = torch.is_grad_enabled() and any(
            p.requires_grad for p in (self.weight, self.bias) if p is not None)
        if self.training or needs_graph or torch.compiler.is_compiling() or torch.jit.is_tracing():
            return self._build()
        try:
            key = _fingerprint((self.weight, self.bias, self.basis))
        except RuntimeError:  # tensors without storage (torch.func transforms, meta tensors): nothing to key on
            return self._build()
        cache = self._filter_cache
        # filters built under inference_mode cannot be saved for a backward to the input outside it
        if cache is None or cache[0] != key or (cache[1].is_inference() and not torch.is_inference_mode_enabled()):
            with torch.no_grad():
                filters, bias = self._build()
            cache = self._filter_cache = (key, filters, bias)
        return cache[1], cache[2]

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state.pop("_filter_cache", None)  # built again after unpickling (torch.save of a whole module)
        return state


def _check_pool_above(pool_above: object) -> int | None:
    if pool_above is None:
        return None
    return check_positive_int(pool_above, "pool_above", minimum=0)


def _conv(x: torch.Tensor, filters: torch.Tensor, bias: torch.Tensor | None, pool_above: int | None) -> torch.Tensor:
    """"Same" zero-padded stride-1 convolution of ``x (B, C, H, W)``, then, if the shorter side of ``x``
    is longer than ``pool_above`` pixels, :class:`EquivariantAvgPool2d`.

    At even sizes the convolution and the 2x2 average pool are one stride-2 convolution with
    the filters smoothed by the 2x2 box (``(k+1) x (k+1)``): the same numbers for
    ``(k+1)² / 4k²`` of the multiply-adds (0.36 for ``k = 5``), and the full-size map is never
    stored. Odd sizes pool with the centred 3x3 window after the convolution.
    """
    k = filters.shape[-1]
    h, w = x.shape[-2:]
    if pool_above is None or min(h, w) <= pool_above:
        return F.conv2d(x, filters, bias, padding=k // 2)
    if h % 2 or w % 2:
        return EquivariantAvgPool2d()(F.conv2d(x, filters, bias, padding=k // 2))
    # out[j] = (y[2j] + y[2j+1]) / 2 = sum_b f[b] x[2j + b - k//2] with f[b] = (w[b] + w[b-1]) / 2, per axis
    smooth = F.pad(filters, (0, 1)) + F.pad(filters, (1, 0))
    smooth = (F.pad(smooth, (0, 0, 0, 1)) + F.pad(smooth, (0, 0, 1, 0))) / 4
    return F.conv2d(x, smooth, bias, stride=2, padding=k // 2)


class LiftingConv2d(_CachedFilters):
    """Lifting convolution: images ``(B, C_in, H, W)`` to regular features ``(B, C_out, |G|, H, W)``.

    Equivariant: ``lift(g·x) = g·lift(x)`` with :class:`equicanon.actions.Image` on the
    input and :class:`RegularFeatures` on the output. Stride 1, "same" zero padding.
    With ``pool_above`` set, outputs of inputs whose shorter side is longer than ``pool_above``
    pixels are halved by :class:`EquivariantAvgPool2d` (``0``: always), at even sizes fused into
    the convolution (one stride-2 convolution, about a third of the multiply-adds).
    """

    weight: nn.Parameter  # these three from _init_filters
    basis: torch.Tensor | None
    filters: str
    _regular_input = False

    def __init__(self, group: Group, in_channels: int, out_channels: int, kernel_size: int = 5,
                 bias: bool = True, filters: str = "auto", pool_above: int | None = None) -> None:
        super().__init__()
        self.pool_above = _check_pool_above(pool_above)
        self.group = _check_group(group, "LiftingConv2d")
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.out_channels = check_positive_int(out_channels, "out_channels")
        self.kernel_size = _check_kernel(kernel_size)
        _init_filters(self, self.group, (out_channels, in_channels), self.kernel_size,
                      in_channels * kernel_size**2, filters)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def extra_repr(self) -> str:
        return (f"{self.group}, {self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"filters={self.filters!r}" + (f", pool_above={self.pool_above}" if self.pool_above is not None else ""))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, C_in, H, W)`` → ``(B, C_out, |G|, H, W)`` (``H/2``, ``W/2`` rounded up when pooled)."""
        sizes = check_shape(x, "B C H W", C=self.in_channels)
        filters, bias = self._filters()
        out = _conv(x, filters, bias, self.pool_above)
        return out.reshape(sizes["B"], self.out_channels, self.group.order, *out.shape[-2:])


class GroupConv2d(_CachedFilters):
    """Group convolution on regular features: ``(B, C_in, |G|, H, W)`` → ``(B, C_out, |G|, H, W)``.

    Equivariant under :class:`RegularFeatures` on input and output. Stride 1,
    "same" zero padding; the bias is one number per output channel, shared over
    the group axis (a per-element bias would break equivariance). ``pool_above`` halves the
    output as in :class:`LiftingConv2d`.
    """

    weight: nn.Parameter  # these three from _init_filters
    basis: torch.Tensor | None
    filters: str
    _regular_input = True

    def __init__(self, group: Group, in_channels: int, out_channels: int, kernel_size: int = 3,
                 bias: bool = True, filters: str = "auto", pool_above: int | None = None) -> None:
        super().__init__()
        self.pool_above = _check_pool_above(pool_above)
        self.group = _check_group(group, "GroupConv2d")
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.out_channels = check_positive_int(out_channels, "out_channels")
        self.kernel_size = _check_kernel(kernel_size)
        n = self.group.order
        _init_filters(self, self.group, (out_channels, in_channels, n), self.kernel_size,
                      in_channels * n * kernel_size**2, filters)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def extra_repr(self) -> str:
        return (f"{self.group}, {self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"filters={self.filters!r}" + (f", pool_above={self.pool_above}" if self.pool_above is not None else ""))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, C_in, |G|, H, W)`` → ``(B, C_out, |G|, H, W)`` (``H/2``, ``W/2`` rounded up when pooled)."""
        n = self.group.order
        sizes = check_shape(x, "B C G H W", C=self.in_channels, G=n)
        filters, bias = self._filters()
        out = _conv(x.reshape(sizes["B"], self.in_channels * n, *x.shape[-2:]), filters, bias, self.pool_above)
        return out.reshape(sizes["B"], self.out_channels, n, *out.shape[-2:])


class GroupBatchNorm(nn.BatchNorm3d):
    """Batch normalisation of regular features ``(B, C, |G|, H, W)``.

    Statistics and affine parameters are per channel, shared over the group
    axis and space, so normalisation commutes with the group action.
    """


class GroupPool(nn.Module):
    """Pool the group axis: ``(B, C, |G|, H, W)`` → ``(B, C, H, W)``, invariant features.

    ``mode`` is ``"max"`` or ``"mean"``.
    """

    def __init__(self, mode: str = "max") -> None:
        super().__init__()
        if mode not in ("max", "mean"):
            raise ConfigError(f"GroupPool: mode must be 'max' or 'mean', got {mode!r}")
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(x, "B C G H W")
        return x.amax(dim=2) if self.mode == "max" else x.mean(dim=2)


class EquivariantAvgPool2d(nn.Module):
    """Halve the spatial size while keeping the grid centre: rotation-equivariant downsampling.

    A plain stride-2 pool of an odd-sized image is centred off the grid centre,
    so it breaks rotation equivariance. This pool uses a window of 2 pixels along
    an even axis (``28 → 14``) and of 3 pixels with one pixel of zero padding
    on each side along an odd axis (``29 → 15``): the output grid is symmetric
    about the input's centre (on rectangles of mixed parity too, for the half
    turns and flips that keep their shape). Works on ``(B, C, H, W)`` and
    ``(B, C, |G|, H, W)``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 5:
            b, c, n, h, w = x.shape
            return self(x.reshape(b, c * n, h, w)).reshape(b, c, n, (h + 1) // 2, (w + 1) // 2)
        check_shape(x, "B C H W")
        h, w = x.shape[-2:]
        if h % 2 == 0 and w % 2 == 0:
            return F.avg_pool2d(x, 2, 2)
        return F.avg_pool2d(x, (2 + h % 2, 2 + w % 2), 2, padding=(h % 2, w % 2), count_include_pad=True)
