"""Learned canonicalization of images with a group-convolutional network (Kaba et al., 2023)."""

from __future__ import annotations

import math
from functools import partial
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ..actions import Image
from ..errors import ConfigError, GroupMismatchError, ShapeError, check_floating, check_positive_int, check_shape
from ..groups import O2, SO2, C, D, FiniteGroup, Group, PlanarFiniteGroup, as_group
from ..nn import GroupBatchNorm, GroupConv2d, LiftingConv2d
from .base import Canonicalization, Canonicalizer, RegistryCase, register
from .functional import (
    discrete_canonicalize,
    gram_schmidt_with_margin,
    identity_cross_entropy,
    matrix_prior,
    nearest_element,
    regular_to_matrix,
    sample_categorical,
    top_gap,
    top_k_weights,
)

__all__ = ["GroupConv", "center_crop_resize", "resize_square"]


def center_crop_resize(x: torch.Tensor, crop: float | None, resize: int | None) -> torch.Tensor:
    """The centre ``crop`` fraction of ``x`` ``(B, C, H, W)``, shrunk to ``resize`` pixels a side.

    The crop removes the same number of pixels on each side, and the resize
    (bilinear, antialiased, ``align_corners=False``) maps the grid centre to the
    grid centre, so both commute with rotations about the centre. ``resize`` never
    enlarges: a crop whose sides are both at most ``resize`` is returned as it is, so one
    setting (the paper's 96) serves 28-pixel and 224-pixel images alike.
    """
    if crop is not None:
        h, w = x.shape[-2:]
        mh, mw = round(h * (1 - crop) / 2), round(w * (1 - crop) / 2)
        x = x[..., mh:h - mh, mw:w - mw]
    if resize is not None and max(x.shape[-2:]) > resize:
        x = resize_square(x, resize)
    return x


def resize_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """Images ``(B, C, H, W)`` resized to ``(B, C, size, size)``: bilinear, ``align_corners=False``
    (grid centre to grid centre), antialiased when shrinking; unchanged if already that size."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < min(x.shape[-2:]))


def _network_group(group: Group, rotations: int) -> PlanarFiniteGroup:
    if group.kind != "planar":
        raise GroupMismatchError(f"GroupConv canonicalizes images under C(n), D(n), SO2() or O2(), got {group!r}")
    if group.is_finite:
        return cast(PlanarFiniteGroup, group)  # finite and planar: C(n) or D(n)
    return D(rotations) if group.has_reflections else C(rotations)


class GroupConv(Canonicalizer):
    """Learned canonicalization of images by a group-equivariant CNN.

    A lifting convolution and ``layers - 1`` group convolutions on the regular
    representation produce logits ``ℓ (B, |G|)`` that permute under the group.
    Each convolution but the last is followed by group batch norm and a ReLU; feature maps
    larger than ``pool_above`` pixels are halved right after their convolution.
    For ``C(n)``/``D(n)`` the pose is ``argmax ℓ`` (straight-through gradients
    in training). For ``SO2()``/``O2()`` the network runs on ``C(rotations)`` / ``D(rotations)``;
    with ``refine`` (default) its argmax is a coarse pose ``h_k``, exact on quarter turns, and a small
    plain CNN (:class:`~equicanon.models.ConvEncoder`) reads the coarse canonical view ``h_k⁻¹·x`` and
    gives the residual turn ``δ`` (within ``±360°/rotations``): the pose is ``h_k R(δ)``, any angle. Without
    ``refine`` the pose is the orthogonal part of ``Σ_h ℓ_h ρ(h)`` (smooth, but a few times less accurate:
    ``docs/images.md``); where the logits (nearly) tie, so that this matrix is rounding noise next to
    ``Σ_h |ℓ_h|`` (blank, constant or rotation-symmetric images), Gram–Schmidt completes it to the identity.
    ``margin``: the top minus the runner-up logit (``C(n)``, ``D(n)``, refined coarse pose) or the smallest
    relative Gram–Schmidt residual (unrefined).

    Args:
        group: pose group: ``C(n)``, ``D(n)``, ``SO2()`` or ``O2()``, or its name (``"C8"``).
        in_channels: channels of the input images.
        hidden: channels per group element in the hidden layers.
        layers: number of convolution layers (>= 2).
        kernel_size: odd filter size.
        crop: if set, the network sees only the centre ``crop`` fraction of the image
            (the paper's setup for large inputs: 0.8); the canonical form is always
            computed on the whole input.
        resize: if set, a (cropped) view larger than ``resize`` pixels is shrunk to ``resize`` a side
            (paper: 96 for 224-pixel images); smaller views are left as they are.
        temperature: softmax temperature of the straight-through backward pass.
        gumbel: add Gumbel noise to the logits in training mode (never in eval mode).
        padding: how :class:`equicanon.actions.Image` fills pixels that rotations by
            angles other than multiples of 90° bring in.
        rotations: size of the rotation subgroup the network uses for SO2()/O2() poses.
        batch_norm: use :class:`equicanon.nn.GroupBatchNorm` between layers.
        pool: halve the output of every convolution but the last whose input's shorter side is
            longer than ``pool_above`` pixels, with :class:`equicanon.nn.EquivariantAvgPool2d`
            (centred, so equivariance is kept; fused into the convolution as one stride-2
            convolution). The pose is one global quantity, so full resolution in every layer is
            wasted work: on the paper's 96-pixel view (maps 96 → 48 → 24) the network has a tenth
            of the multiply-adds of the unpooled one, 2.7% of a ResNet-50's (``docs/benchmarks.md``).
        pool_above: the longest map side that is not pooled: 96 → 48 → 24, 48 → 24 → 12 and
            28 → 14 → 14 pixels, while a 16-pixel view (the demo's) keeps full resolution, where
            pooling it to 4 pixels costs pose accuracy and saves little time. ``0`` pools every layer.
        filters: ``"free"``, ``"steerable"`` or ``"auto"`` (steerable when the network's group has
            angles other than multiples of 90°); see :mod:`equicanon.nn`.
        refine: SO2()/O2() only (``None``: on for them): the coarse pose of the ``C(rotations)`` network refined
            by a residual turn, as above. The residual network starts at ``δ = 0`` (a fresh canonicalizer's
            poses are the coarse ones) and learns from the prior on inputs moved by continuous angles
            (``transform="angle"`` or ``"group"`` in :func:`equicanon.training.step`).
        refine_hidden: channels of the residual network's first convolution (then twice as many).
        check_inputs: refuse images holding NaN or Inf (:class:`~equicanon.canonicalizers.Canonicalizer`).

    Example:
        >>> canon = GroupConv(C(4), in_channels=3)
        >>> res = canon(torch.randn(2, 3, 29, 29))
        >>> res.canonical.shape, res.pose.shape, res.logits.shape
        (torch.Size([2, 3, 29, 29]), torch.Size([2]), torch.Size([2, 4]))
    """

    def __init__(self, group: Group | str, in_channels: int, *, hidden: int = 8, layers: int = 3, kernel_size: int = 5,
                 crop: float | None = None, resize: int | None = None, temperature: float = 1.0,
                 gumbel: bool = False, padding: str = "zeros", rotations: int = 8, batch_norm: bool = True,
                 filters: str = "auto", pool: bool = True, pool_above: int = 16, refine: bool | None = None,
                 refine_hidden: int = 32, check_inputs: bool = True) -> None:
        super().__init__(check_inputs=check_inputs)
        check_positive_int(hidden, "hidden")  # here, so a bad width is reported as hidden, not out_channels
        group = as_group(group, where=lambda g: g.kind == "planar", expected="C(n), D(n), SO2() or O2()")
        self.group = group
        self.pool = bool(pool)
        self.pool_above = check_positive_int(pool_above, "pool_above", minimum=0)
        self.net_group = _network_group(group, check_positive_int(rotations, "rotations"))
        self.action = Image(group, padding=padding)
        self.in_channels = check_positive_int(in_channels, "in_channels")
        check_positive_int(layers, "layers", minimum=2)
        if crop is not None and (isinstance(crop, bool) or not (isinstance(crop, (int, float)) and 0 < crop <= 1)):
            raise ConfigError(f"crop must be a fraction in (0, 1], got {crop!r}")
        self.crop = None if crop is None else float(crop)
        self.resize = None if resize is None else check_positive_int(resize, "resize")
        if isinstance(temperature, bool) or not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ConfigError(f"temperature must be a positive number, got {temperature!r}")
        self.temperature = float(temperature)
        self.gumbel = bool(gumbel)
        g = self.net_group
        # A bias is dead weight before batch norm (which removes it) and in the last layer (a shift
        # of all logits changes neither the argmax nor the softmax): convolutions have one only
        # when a ReLU follows them directly.
        above = self.pool_above if self.pool else None
        blocks: list[nn.Module] = [LiftingConv2d(g, in_channels, hidden, kernel_size, bias=not batch_norm,
                                                 filters=filters, pool_above=above)]
        for i in range(layers - 1):
            if batch_norm:
                blocks.append(GroupBatchNorm(hidden))
            blocks.append(nn.ReLU(inplace=True))
            last = i == layers - 2
            blocks.append(GroupConv2d(g, hidden, 1 if last else hidden, kernel_size, bias=not (batch_norm or last),
                                      filters=filters, pool_above=None if last else above))
        self.net = nn.Sequential(*blocks)
        if refine and group.is_finite:
            raise ConfigError(f"refine is for continuous poses (SO2(), O2()); {group} poses are its elements: "
                              "leave refine unset")
        self.refine = (not group.is_finite) if refine is None else bool(refine)
        self.refine_hidden = check_positive_int(refine_hidden, "refine_hidden")
        #: the largest residual turn, radians: one step of the coarse network's rotations
        self.max_residual = 2 * math.pi / self.net_group.n
        self.residual: nn.Module | None = None
        if self.refine:
            from ..models.images import ConvEncoder

            self.residual = ConvEncoder(in_channels, out_dim=1, hidden=self.refine_hidden)
            nn.init.zeros_(self.residual.head.weight)  # δ = 0 at first: the coarse poses, exact on quarter turns
            nn.init.zeros_(self.residual.head.bias)
            self._coarse_action = Image(self.net_group, padding=padding)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Regular logits ``(B, |G_net|)`` of images ``(B, C, H, W)``."""
        return self._view_logits(center_crop_resize(x, self.crop, self.resize))

    def _view_logits(self, view: torch.Tensor) -> torch.Tensor:
        """Regular logits of the network's (cropped, resized) view of the images."""
        return self.net(view).mean(dim=(1, 3, 4))

    def forward(self, x: torch.Tensor) -> Canonicalization:
        """Canonicalize images ``x: (B, C, H, W)``."""
        check_shape(x, "B C H W", C=self.in_channels)
        check_floating(x)
        view = center_crop_resize(x, self.crop, self.resize)
        logits = self._view_logits(view)
        if self.group.is_finite:
            noise = None
            if self.gumbel and self.training:
                u = torch.rand_like(logits).clamp(1e-10, 1 - 1e-10)
                noise = -torch.log(-torch.log(u))
            group = cast(FiniteGroup, self.group)  # is_finite: C(n) or D(n)
            canonical, pose = discrete_canonicalize(x, logits, group, self.action, temperature=self.temperature,
                                                    noise=noise)
            margin = top_gap(logits if noise is None else logits + noise)
            return Canonicalization(canonical, pose, self.group, logits=logits, margin=margin)
        if self.residual is not None:
            return self._refined(x, view, logits)
        matrix = regular_to_matrix(self.net_group, logits)
        # measured against Σ|ℓ_h|, the largest a column of M can be: logits that (nearly) tie cancel in M,
        # leaving rounding noise, which is a degeneracy (e.g. blank, constant or rotation-symmetric images)
        pose, margin = gram_schmidt_with_margin(matrix, special=not self.group.has_reflections,
                                                scale=logits.detach().abs().sum(dim=-1))
        canonical = self.action(self.group.inverse(pose.to(x.dtype)), x)
        return Canonicalization(canonical, pose, self.group, logits=None, extras={"matrix": matrix}, margin=margin)

    def _refined(self, x: torch.Tensor, view: torch.Tensor, logits: torch.Tensor) -> Canonicalization:
        """Coarse pose ``h_k = argmax ℓ``, residual turn ``δ`` read from the coarse canonical view: ``h_k R(δ)``."""
        coarse = logits.detach().argmax(dim=1)
        pose, delta = self._refine(view, coarse)
        canonical = self.action(self.group.inverse(pose.to(x.dtype)), x)  # one interpolation of the full input
        return Canonicalization(canonical, pose.to(x.dtype), self.group, logits=None,
                                extras={"coarse_logits": logits, "coarse": coarse, "residual": delta},
                                margin=top_gap(logits))

    def _refine(self, view: torch.Tensor, coarse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Poses ``h R(δ)`` ``(N, 2, 2)`` and residual turns ``δ (N,)`` for coarse elements ``h (N,)`` of the
        views ``(N, C, h, w)``: ``δ`` is read from ``h⁻¹·view``."""
        assert self.residual is not None
        net_group = self.net_group
        if view.shape[-1] == view.shape[-2]:  # quarter turns by exact index moves
            upright = self._coarse_action(net_group.inverse(coarse), view)
        else:  # a quarter turn does not map a rectangle onto itself: interpolate (only half turns and flips occur)
            upright = self.action(net_group.matrix(net_group.inverse(coarse), dtype=view.dtype), view)
        delta = self.max_residual * torch.tanh(self.residual(upright)[:, 0])
        pose = net_group.matrix(coarse, dtype=view.dtype) @ SO2().from_angle(delta).to(view.dtype)
        return pose, delta

    def _refine_at(self, x: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """Refined poses ``(B, k, 2, 2)`` of images ``x (B, C, H, W)`` at coarse elements ``(B, k)``: each of the
        ``k`` coarse canonical views goes through the residual network (one batch of ``B·k``)."""
        b, k = coarse.shape
        view = center_crop_resize(x, self.crop, self.resize)
        pose, _ = self._refine(view.repeat_interleave(k, dim=0), coarse.reshape(-1))
        return pose.to(x.dtype).reshape(b, k, 2, 2)

    # --- several poses per input (WeightedCanonicalized, Symmetrized): refined SO2()/O2() poses at the coarse
    # network's best or drawn elements, each refined as the single pose is ---------------------------------------

    @property
    def candidate_count(self) -> int | None:
        """``|G|`` for ``C(n)``/``D(n)``; with ``refine``, the coarse network's ``|C(rotations)|`` (or ``D``)
        elements, each refined; ``None`` for unrefined ``SO2()``/``O2()`` poses."""
        return self.net_group.order if self.residual is not None else super().candidate_count

    @property
    def samples_poses(self) -> bool:
        """Finite groups and refined ``SO2()``/``O2()`` (draws of the coarse element, each refined)."""
        return self.residual is not None or super().samples_poses

    def weighted_poses(self, x: torch.Tensor, result: Canonicalization, top_k: int, temperature: float = 1.0
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`Canonicalizer.weighted_poses`; with ``refine``, the ``top_k`` coarse elements of largest
        logit (:func:`~equicanon.canonicalizers.functional.top_k_weights` of the coarse logits), each refined:
        rotation matrices ``(B, k, 2, 2)``. Equivariant as the refined pose is (exactly for quarter turns and
        flips, to interpolation error otherwise)."""
        if self.residual is None:
            return super().weighted_poses(x, result, top_k, temperature)
        elements, weights = top_k_weights(self._coarse_logits(result, x), top_k, temperature)
        return self._refine_at(x, elements), weights

    def sampled_poses(self, x: torch.Tensor, result: Canonicalization, samples: int, temperature: float = 1.0,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """As :meth:`Canonicalizer.sampled_poses`; with ``refine``, coarse elements drawn from
        ``softmax(ℓ/τ)`` of the coarse logits, each refined: ``(poses (B, k, 2, 2), log p (B, k))`` (the coarse
        draw has score-function gradients, the residual turn pathwise ones)."""
        if self.residual is None:
            return super().sampled_poses(x, result, samples, temperature, generator)
        logits = self._coarse_logits(result, x)
        drawn = sample_categorical(logits, samples, temperature, generator)
        log_p = torch.log_softmax(logits / temperature, dim=-1).gather(1, drawn)
        return self._refine_at(x, drawn), log_p

    def pose_distribution(self, x: torch.Tensor, result: Canonicalization, temperature: float = 1.0
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`Canonicalizer.pose_distribution`; with ``refine``, every coarse element refined, with
        ``softmax(ℓ/τ)`` of the coarse logits."""
        if self.residual is None:
            return super().pose_distribution(x, result, temperature)
        logits = self._coarse_logits(result, x)
        elements, probabilities = top_k_weights(logits, logits.shape[1], temperature)
        return self._refine_at(x, elements), probabilities

    def _coarse_logits(self, result: Canonicalization, x: torch.Tensor) -> torch.Tensor:
        logits = result.extras.get("coarse_logits")
        if logits is None or logits.shape != (x.shape[0], self.net_group.order):
            raise ShapeError(f"expected the refined result of this GroupConv for {x.shape[0]} images, with coarse "
                             f"logits ({x.shape[0]}, {self.net_group.order}) in result.extras['coarse_logits']")
        return logits

    def prior_loss(self, result: Canonicalization, target: torch.Tensor | None = None) -> torch.Tensor:
        """The prior, averaged over the batch: cross-entropy to the identity (discrete groups); for SO2/O2 with
        ``refine``, cross-entropy of the coarse logits to the element nearest the target plus the squared error
        of the residual turn (in units of half a coarse step; inputs whose coarse pose is more than a step off
        count in the cross-entropy only); without ``refine``, ``‖R − I‖²_F``.

        ``target``: element indices ``(B,)`` (discrete) or matrices ``(B, 2, 2)`` to pull towards instead.
        """
        if result.logits is not None:
            return identity_cross_entropy(result.logits, target)
        if "coarse_logits" not in result.extras:
            return matrix_prior(result.pose, target)
        logits, coarse, delta = (result.extras[k] for k in ("coarse_logits", "coarse", "residual"))
        b = logits.shape[0]
        if target is None:
            target = torch.eye(2, dtype=delta.dtype, device=delta.device).expand(b, 2, 2)
        elif target.shape != (b, 2, 2):
            raise ShapeError(f"prior target: expected {b} matrices, shape ({b}, 2, 2), got shape {tuple(target.shape)}")
        target = target.to(device=delta.device, dtype=delta.dtype)
        loss = F.cross_entropy(logits, nearest_element(self.net_group, target))
        # the turn left after the coarse pose: h_k⁻¹ T, a rotation when h_k and T agree on reflection
        rest = self.net_group.matrix(coarse, dtype=delta.dtype).transpose(1, 2) @ target
        wanted = torch.atan2(rest[:, 1, 0], rest[:, 0, 0])
        valid = (torch.linalg.det(rest) > 0) & (wanted.abs() < self.max_residual)
        squared = ((delta - wanted) / (self.max_residual / 2)) ** 2
        return loss + (squared * valid).sum() / valid.sum().clamp_min(1)


def _with_residual(canon: GroupConv) -> GroupConv:
    """``canon`` with a random (non-zero) residual head, so the registry tests see the refinement at work."""
    assert canon.residual is not None
    with torch.no_grad():
        head = cast(nn.Linear, canon.residual.head)
        head.weight.normal_(0.0, 0.2, generator=torch.Generator().manual_seed(1))
        head.bias.fill_(0.1)
    return canon


def _cases() -> list[RegistryCase]:
    shape = (2, 3, "size", "size")
    cases = [
        RegistryCase(f"{g}", partial(GroupConv, g, 3, hidden=4, layers=3, kernel_size=3), shape)
        for g in (C(4), D(4), C(2), D(1))
    ]
    cases.append(RegistryCase("C(4) crop+resize", lambda: GroupConv(C(4), 3, hidden=4, crop=0.8, resize=15), shape))
    cases.append(RegistryCase("D(4) pool every layer", lambda: GroupConv(D(4), 3, hidden=4, kernel_size=3, pool_above=0),
                              shape))
    cases.append(RegistryCase("C(4) no pool", lambda: GroupConv(C(4), 3, hidden=4, kernel_size=3, pool=False), shape))
    cases.append(RegistryCase("C(8)", lambda: GroupConv(C(8), 3, hidden=4, kernel_size=3), shape, exact=False))
    cases.append(RegistryCase("SO2", lambda: GroupConv(SO2(), 3, hidden=4, kernel_size=3), shape, exact=False))
    cases.append(RegistryCase("O2", lambda: GroupConv(O2(), 3, hidden=4, kernel_size=3), shape, exact=False))
    cases.append(RegistryCase("SO2 residual at work",
                              lambda: _with_residual(GroupConv(SO2(), 3, hidden=4, kernel_size=3, refine_hidden=4)), shape,
                              exact=False))
    cases.append(RegistryCase("O2 residual at work",
                              lambda: _with_residual(GroupConv(O2(), 3, hidden=4, kernel_size=3, refine_hidden=4)), shape,
                              exact=False))
    cases.append(RegistryCase("SO2 unrefined", lambda: GroupConv(SO2(), 3, hidden=4, kernel_size=3, refine=False), shape,
                              exact=False))
    cases.append(RegistryCase("O2 unrefined", lambda: GroupConv(O2(), 3, hidden=4, kernel_size=3, refine=False), shape,
                              exact=False))
    return cases


register("group_conv", _cases)(GroupConv)
