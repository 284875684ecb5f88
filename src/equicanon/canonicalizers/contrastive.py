"""Optimization-based canonicalization with any network (EquiOptAdapt).

Panigrahi & Mondal, CVPR 2024 workshop, *Improved Canonicalization for Model
Agnostic Equivariance*. For a finite group ``G = {g_0 = e, g_1, ...}``, any network
``φ`` and a fixed reference vector ``r``, the scores

    ``s(x)[k] = cos(φ(g_k⁻¹·x), r)``

permute under the regular representation, ``s(g·x)[g k] = s(x)[k]``, because the
copies of ``g·x`` are the copies of ``x`` in another order. So ``h(x) = argmax_k s(x)[k]``
is an equivariant pose and ``h(x)⁻¹·x`` an invariant canonical form although ``φ`` is
not equivariant at all. A contrastive loss keeps the ``|G|`` copies' embeddings
apart so that the argmax is unique; the prior (Mondal et al., 2023) makes the
identity the pose of upright training data.
"""

from __future__ import annotations

from functools import partial
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from ..actions import Action, Image, Points
from ..errors import (
    ConfigError,
    DTypeError,
    InputValueError,
    ShapeError,
    check_floating,
    check_number,
    check_positive_int,
    check_shape,
    format_shape,
    suggest,
)
from ..groups import C, D, FiniteGroup, Group, Octahedral, as_group
from ..models import ConvEncoder, PointEncoder
from .base import Canonicalization, Canonicalizer, RegistryCase, register
from .functional import all_transforms, discrete_canonicalize, identity_cross_entropy, top_gap
from .image import center_crop_resize

__all__ = ["Contrastive", "seeded_reference", "contrastive_similarity_loss"]

NETWORKS = ("conv_encoder", "point_encoder", "efficientnet_lite0")


def seeded_reference(size: int, seed: int = 0, *, dtype: torch.dtype | None = None,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """The default reference vector ``r``: ``(size,)``, a unit-norm Gaussian draw from ``torch.Generator().manual_seed(seed)``.

    Drawn in float64 on the CPU and then cast, so it is the same on every device and in every dtype.
    """
    r = torch.randn(size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    r = r / r.norm()
    return r.to(dtype=dtype or torch.get_default_dtype(), device=device)


def contrastive_similarity_loss(embeddings: torch.Tensor) -> torch.Tensor:
    """Mean over samples and pairs ``k ≠ k'`` of ``|cos(e_k, e_k')|`` for embeddings ``(B, K, d)``; 0-dim.

    Zero for ``K = 1`` (no pairs).
    """
    check_shape(embeddings, "B K d", name="embeddings")
    k = embeddings.shape[1]
    if k < 2:
        return embeddings.sum() * 0.0
    z = F.normalize(embeddings, dim=-1)
    cos = z @ z.transpose(-1, -2)  # (B, K, K)
    off = ~torch.eye(k, dtype=torch.bool, device=embeddings.device)
    return cos.abs()[:, off].mean()


def copies_action(group: Group, action: Action | None, padding: str, owner: str) -> Action:
    """How ``group`` acts on the inputs of a canonicalizer that scores every copy: ``action``, checked, or by
    default ``Image(group)`` for planar groups, ``Points(group)`` for 3-D groups."""
    if action is None:
        if group.kind == "planar":
            return Image(group, padding=padding)
        if group.dim == 3:
            return Points(group)
        raise ConfigError(f"{owner}: no default action for {group!r}; pass action= (how the group acts on your inputs)")
    if not isinstance(action, Action):
        raise ConfigError(f"action must be an equicanon Action, got {type(action).__name__}")
    action.check_group(group, owner)
    return action


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and value > 0):
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
    return float(value)


class Contrastive(Canonicalizer):
    """EquiOptAdapt: canonicalization by *any* network that scores every transformed copy of the input.

    All ``|G|`` copies ``g_k⁻¹·x`` of the batch go through ``network`` as one batch of
    ``B·|G|`` (or ``inputs_per_call`` inputs, i.e. ``inputs_per_call·|G|`` copies, at a time), their
    features are optionally projected to ``embed_dim``, and each copy is scored by its
    cosine similarity with a fixed reference vector ``r``. The pose is the argmax; in
    training the canonical form passes straight-through gradients (forward: the hard
    canonical form; backward: the softmax(logits)-weighted mixture of the copies already
    computed for scoring), so task losses reach ``network``.

    Args:
        group: a finite group with indexed elements, or its name (``"C8"``): ``C(n)``, ``D(n)``
            (images or planar points), ``Octahedral()`` (3-D points), or any other with an ``action``.
        network: ``φ``, any ``nn.Module`` from a batch of ``N`` inputs to features ``(N, d)`` or
            ``(N, d, ...)`` (averaged over the trailing axes: feature maps are pooled). A name:
            ``"conv_encoder"`` (:class:`~equicanon.models.ConvEncoder`, needs ``in_channels``),
            ``"point_encoder"`` (:class:`~equicanon.models.PointEncoder`), ``"efficientnet_lite0"``
            (ImageNet-pretrained, offline). ``None``: ``"conv_encoder"`` for images,
            ``"point_encoder"`` for points.
        in_channels: image channels; checked on every input, and needed by ``"conv_encoder"``.
        embed_dim: if set, a trainable linear layer projects the features to ``embed_dim``.
        feature_dim: ``d``, the size of the network's features; read from ``network.out_dim``
            when present, otherwise found on the first call (the projection is then a
            ``LazyLinear`` and the default reference is drawn then).
        reference: a fixed ``(embed_dim or d,)`` vector ``r`` to score against; by default
            :func:`seeded_reference` with ``seed``. Either way a non-trainable buffer in the state dict.
        seed: seed of the default reference.
        logit_scale: the logits are ``logit_scale · s`` (``s`` the cosine scores in ``[-1, 1]``; the
            paper's ``1/τ``, default 10 = ``τ`` 0.1). The prior and the straight-through softmax use these logits.
        inputs_per_call: how many inputs' copies go through ``network`` per call (``None``: all).
            A call holds all ``|G|`` copies of each of its inputs, so it is closed under the group.
        action: how the group acts on inputs; default ``Image(group)`` for planar groups,
            ``Points(group)`` for 3-D groups.
        crop, resize: images only: the network sees the centre ``crop`` fraction shrunk to at most
            ``resize`` pixels (as in :class:`~equicanon.canonicalizers.GroupConv`); the
            canonical form is the whole input.
        padding: image padding for rotations that interpolate (``C(8)`` and finer).
        learn_reference: make ``r`` a trainable parameter (initialised as above) instead of a fixed buffer, so
            the prior and the task loss move the direction the copies are scored against too (the reference
            stays in ``state_dict`` either way). Needs the reference's size at construction.
        artifact_weight: weight of the rotation-artifact loss (:meth:`artifact_loss`; 0, the default: off). For
            groups whose turns interpolate (``C(8)`` and finer) the prior can be learnt by telling clean copies
            from blurred ones instead of upright content from turned content; this loss asks a copy turned by
            ``g`` and back, ``g·(g⁻¹·x)``, to embed like ``x``. In training (with gradients) the forward pass
            then also embeds the ``|G|`` round trips (twice the network's work) and :meth:`add_regularizers`
            adds ``artifact_weight · artifact_loss``, logged as ``"artifact"``.
        check_inputs: refuse inputs holding NaN or Inf (:class:`~equicanon.canonicalizers.Canonicalizer`).

    Result: ``logits = logit_scale · s`` ``(B, |G|)``; ``margin`` = top minus runner-up logit ``(B,)``;
    ``extras["scores"]`` = ``s`` ``(B, |G|)``;
    ``extras["embeddings"]`` = the copies' (projected) features ``(B, |G|, d)``, entry ``k``
    for ``g_k⁻¹·x``; in training with ``artifact_weight > 0``, ``extras["round_trips"]`` ``(B, |G|, d)``, the
    embeddings of ``g_k·(g_k⁻¹·x)``.

    Exactness: invariance is exact (poses equal, canonical forms bit-identical) when ``φ``
    gives bit-identical features for bit-identical inputs wherever they sit in the batch.
    The copies are exact index permutations (quarter turns, flips, signed permutations of
    coordinates) of the same input, evaluated in one batch, so this holds for ordinary
    layers in ``eval()`` mode and for layers without batch statistics in ``train()`` mode.
    It fails for dropout / drop-connect in training, and is only approximate for batch norm
    in training (batch statistics are the same multiset, summed in another order; chunks
    keep each input's copies together so that stays true) and for any network whose output
    for a sample depends on its position in the batch. Keep such networks in ``eval()``.
    Inputs fixed by some ``g`` (e.g. an all-zero image) tie; the canonical form is still
    invariant, the pose is then only determined up to the input's stabiliser.

    Example:
        >>> canon = Contrastive(C(4), ConvEncoder(3), embed_dim=32)
        >>> res = canon(torch.randn(2, 3, 29, 29))
        >>> res.pose.shape, res.logits.shape, res.extras["embeddings"].shape
        (torch.Size([2]), torch.Size([2, 4]), torch.Size([2, 4, 32]))
        >>> loss = canon.prior_loss(res) + 0.1 * canon.contrastive_loss(res)
    """

    reference: torch.Tensor  # a buffer (d,), empty until the first call draws it; a Parameter with learn_reference

    def __init__(self, group: Group | str, network: nn.Module | str | None = None, *, in_channels: int | None = None,
                 embed_dim: int | None = None, feature_dim: int | None = None, reference: torch.Tensor | None = None,
                 seed: int = 0, logit_scale: float = 10.0, inputs_per_call: int | None = None,
                 action: Action | None = None, crop: float | None = None, resize: int | None = None,
                 padding: str = "zeros", learn_reference: bool = False, artifact_weight: float = 0.0,
                 check_inputs: bool = True) -> None:
        super().__init__(check_inputs=check_inputs)
        group = as_group(group, where=lambda g: g.is_indexed, what="Contrastive: group",
                         expected="a finite group whose elements it can score one by one (C(n), D(n), Octahedral(), ...)")
        self.group: FiniteGroup = cast(FiniteGroup, group)  # is_indexed: elements 0..|G|-1, one logit each
        action = copies_action(group, action, padding, "Contrastive")
        self.action = action
        self.is_image = isinstance(action, Image)
        self.in_channels = None if in_channels is None else check_positive_int(in_channels, "in_channels")
        if (crop is not None or resize is not None) and not self.is_image:
            raise ConfigError(f"crop and resize apply to images only; the action is {action!r}")
        if crop is not None and (isinstance(crop, bool) or not (isinstance(crop, (int, float)) and 0 < crop <= 1)):
            raise ConfigError(f"crop must be a fraction in (0, 1], got {crop!r}")
        self.crop = None if crop is None else float(crop)
        self.resize = None if resize is None else check_positive_int(resize, "resize")
        self.logit_scale = _number(logit_scale, "logit_scale")
        self.inputs_per_call = None if inputs_per_call is None else check_positive_int(inputs_per_call, "inputs_per_call")
        self.artifact_weight = check_number(artifact_weight, "artifact_weight", minimum=0.0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"seed must be an integer, got {seed!r}")
        self.seed = seed
        self.network = self._build_network(network)

        out_dim = getattr(self.network, "out_dim", None)
        if feature_dim is not None:
            self.feature_dim: int | None = check_positive_int(feature_dim, "feature_dim")
        else:
            self.feature_dim = out_dim if isinstance(out_dim, int) and not isinstance(out_dim, bool) else None
        self.embed_dim = None if embed_dim is None else check_positive_int(embed_dim, "embed_dim")
        self.projection: nn.Module | None = None
        if self.embed_dim is not None:
            self.projection = (nn.LazyLinear(self.embed_dim) if self.feature_dim is None
                               else nn.Linear(self.feature_dim, self.embed_dim))
        self.reference_dim = self.embed_dim if self.embed_dim is not None else self.feature_dim
        self.learn_reference = bool(learn_reference)
        if self.learn_reference:
            if self.reference_dim is None and reference is None:
                raise ConfigError("learn_reference=True needs the reference's size up front, to train it from the first "
                                  "step: pass feature_dim= (or embed_dim=, or a network with out_dim)")
            self.reference = nn.Parameter(self._initial_reference(reference))
        else:
            self.register_buffer("reference", self._initial_reference(reference))

    # --- construction helpers ---------------------------------------------------------------------------------

    def _build_network(self, network: nn.Module | str | None) -> nn.Module:
        if network is None:
            network = "conv_encoder" if self.is_image else "point_encoder"
        if isinstance(network, str):
            if network == "conv_encoder":
                if self.in_channels is None:
                    raise ConfigError("Contrastive: the default network 'conv_encoder' needs in_channels=; or pass network=")
                return ConvEncoder(self.in_channels)
            if network == "point_encoder":
                dim = getattr(self.group, "dim", None)
                if not isinstance(dim, int):
                    raise ConfigError(f"Contrastive: 'point_encoder' needs a group with a coordinate dimension, "
                                      f"got {self.group!r}")
                return PointEncoder(dim)
            if network == "efficientnet_lite0":
                from ..models import efficientnet_lite0  # an optional extra, loaded on first use

                return efficientnet_lite0(pretrained=True).eval()
            raise ConfigError(f"unknown network {network!r}; names: {', '.join(NETWORKS)}{suggest(network, NETWORKS)}")
        if not isinstance(network, nn.Module):
            raise ConfigError(f"network must be an nn.Module or one of {', '.join(NETWORKS)}, got {type(network).__name__}")
        return network

    def _initial_reference(self, reference: torch.Tensor | None) -> torch.Tensor:
        if reference is None:
            if self.reference_dim is None:  # drawn on the first call, once d is known
                return torch.empty(0)
            return seeded_reference(self.reference_dim, self.seed)
        if not isinstance(reference, torch.Tensor):
            raise DTypeError(f"reference: expected a 1-d floating tensor, got {type(reference).__name__}")
        check_shape(reference, "d", name="reference")
        check_floating(reference, "reference")
        if not bool(torch.isfinite(reference).all()) or float(reference.abs().max()) == 0.0:
            raise InputValueError("reference: expected a finite, non-zero vector")
        if self.reference_dim is not None and reference.shape[0] != self.reference_dim:
            what = f"embed_dim={self.embed_dim}" if self.embed_dim is not None else f"the network's {self.reference_dim} features"
            raise ShapeError(f"reference: expected shape ({self.reference_dim},) to match {what}, "
                             f"got {format_shape(reference.shape)}")
        if self.reference_dim is None:
            self.reference_dim = int(reference.shape[0])
        return reference.detach().clone()

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # a reference not drawn yet (d unknown until the first call) takes the saved one's shape
        saved = state_dict.get(prefix + "reference")
        if isinstance(saved, torch.Tensor) and self.reference.numel() == 0 and saved.numel() > 0:
            self.reference = torch.empty_like(saved, device=self.reference.device)
            self.reference_dim = int(saved.shape[0])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        parts = [f"group={self.group!r}", f"action={self.action!r}", f"logit_scale={self.logit_scale:g}"]
        if self.embed_dim is not None:
            parts.append(f"embed_dim={self.embed_dim}")
        if self.inputs_per_call is not None:
            parts.append(f"inputs_per_call={self.inputs_per_call}")
        if self.learn_reference:
            parts.append("learn_reference=True")
        if self.artifact_weight > 0:
            parts.append(f"artifact_weight={self.artifact_weight:g}")
        return ", ".join(parts)

    # --- forward ----------------------------------------------------------------------------------------------

    def _features(self, flat: torch.Tensor) -> torch.Tensor:
        """``φ`` on ``N`` copies: ``(N, *)`` to ``(N, d)``, with the output checked and pooled."""
        out = self.network(flat)
        if not isinstance(out, torch.Tensor):
            raise DTypeError(f"network must return a tensor of features (N, d) or (N, d, ...), got {type(out).__name__}")
        if out.ndim < 2 or out.shape[0] != flat.shape[0]:
            raise ShapeError(f"network must return features of shape (N, d) or (N, d, ...) for N = {flat.shape[0]} inputs, "
                             f"got {format_shape(out.shape)}")
        if not out.is_floating_point():
            raise DTypeError(f"network must return floating-point features, got dtype {out.dtype}")
        if out.ndim > 2:
            out = out.mean(dim=tuple(range(2, out.ndim)))
        if self.feature_dim is not None and out.shape[1] != self.feature_dim:
            raise ShapeError(f"network returned {out.shape[1]} features, expected feature_dim={self.feature_dim}")
        return out

    def embed(self, copies: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(B, K, d)`` of copies ``(B, K, *)``: ``φ`` (then the projection) on all of them,
        ``inputs_per_call`` inputs (all their ``K`` copies) per call."""
        b, k = copies.shape[:2]
        step = max(b, 1) if self.inputs_per_call is None else self.inputs_per_call
        chunks = [copies[i:i + step].flatten(0, 1) for i in range(0, b, step)] or [copies.flatten(0, 1)]
        feats = torch.cat([self._features(chunk) for chunk in chunks])
        if self.projection is not None:
            feats = self.projection(feats)
        return feats.reshape(b, k, feats.shape[-1])

    def _reference_for(self, emb: torch.Tensor) -> torch.Tensor:
        d = emb.shape[-1]
        if self.reference.numel() == 0:  # first call with an unknown d: draw the default reference once
            self.reference = seeded_reference(d, self.seed, dtype=emb.dtype, device=emb.device)
            self.reference_dim = d
        if self.reference.shape[0] != d:
            raise ShapeError(f"reference has {self.reference.shape[0]} entries but the embeddings have {d}; pass a reference "
                             f"of shape ({d},), or embed_dim={self.reference.shape[0]} to project the features")
        return self.reference.to(dtype=emb.dtype, device=emb.device)

    def scores(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``s[b, k] = cos(embeddings[b, k], r)``: ``(B, K, d)`` to ``(B, K)``."""
        r = F.normalize(self._reference_for(embeddings), dim=0)
        return F.normalize(embeddings, dim=-1) @ r

    def forward(self, x: torch.Tensor) -> Canonicalization:
        """Canonicalize ``x`` (images ``(B, C, H, W)``, point clouds ``(B, N, d)``, or what ``action`` takes)."""
        if self.is_image:
            if self.in_channels is None:
                check_shape(x, "B C H W")
            else:
                check_shape(x, "B C H W", C=self.in_channels)
        elif not isinstance(x, torch.Tensor):
            raise DTypeError(f"x: expected a tensor, got {type(x).__name__}")
        check_floating(x)
        copies: torch.Tensor | None
        if self.is_image and (self.crop is not None or self.resize is not None):
            view = all_transforms(self.group, self.action, center_crop_resize(x, self.crop, self.resize))
            # full-size copies only when gradients need the mixture of all of them (training);
            # at inference discrete_canonicalize transforms each input once, by its pose
            copies = None
        else:
            view = copies = all_transforms(self.group, self.action, x)  # (B, |G|, *): entry k is g_k⁻¹·x
        embeddings = self.embed(view)
        s = self.scores(embeddings)
        logits = s * self.logit_scale
        canonical, pose = discrete_canonicalize(x, logits, self.group, self.action, temperature=1.0,
                                                copies=copies)
        extras = {"scores": s, "embeddings": embeddings}
        if self.artifact_weight > 0 and self.training and torch.is_grad_enabled():
            extras["round_trips"] = self.embed(self._round_trips(view))
        return Canonicalization(canonical, pose, self.group, logits=logits, extras=extras, margin=top_gap(logits))

    def _round_trips(self, copies: torch.Tensor) -> torch.Tensor:
        """``g_k·(g_k⁻¹·x)`` ``(B, |G|, *)`` from the copies ``g_k⁻¹·x`` ``(B, |G|, *)``: each copy turned back."""
        elements = self.group.elements(device=copies.device).repeat(copies.shape[0])  # entry b·K + k is g_k
        return self.action(elements, copies.flatten(0, 1)).reshape(copies.shape)

    # --- losses -----------------------------------------------------------------------------------------------

    def prior_loss(self, result: Canonicalization, target: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-entropy of the logits ``logit_scale · s`` against the identity (index 0; ``target`` ``(B,)`` indices instead)."""
        if result.logits is None:
            raise ConfigError("prior_loss needs a result with logits (from a discrete canonicalizer)")
        return identity_cross_entropy(result.logits, target)

    def contrastive_loss(self, result: Canonicalization) -> torch.Tensor:
        """Mean over the batch and over pairs ``k ≠ k'`` of ``|cos(φ(g_k⁻¹x), φ(g_k'⁻¹x))|``; 0-dim.

        Pushes the copies' embeddings towards orthogonality, so their scores differ and the argmax is unique.
        """
        emb = result.extras.get("embeddings")
        if emb is None:
            raise ConfigError("contrastive_loss needs a result from Contrastive (extras['embeddings'] is missing)")
        return contrastive_similarity_loss(emb)

    def artifact_loss(self, result: Canonicalization) -> torch.Tensor:
        """Mean over the batch and the elements of ``1 − cos(φ(g_k·(g_k⁻¹·x)), φ(x))``; 0-dim.

        ``φ(x)`` (the identity copy's embedding) is the target and gets no gradient from this loss: the
        network learns to embed a turned-and-back copy, with the blur of two interpolations, like the clean
        input, so the prior cannot be met by telling interpolated copies from exact ones. 0 for exact
        actions (quarter turns, flips). Needs a result computed in training with ``artifact_weight > 0``.
        """
        trips, emb = result.extras.get("round_trips"), result.extras.get("embeddings")
        if trips is None or emb is None:
            raise ConfigError("artifact_loss needs a result from Contrastive(artifact_weight > 0) computed in training "
                              "mode with gradients (extras['round_trips'] is missing)")
        target = F.normalize(emb[:, :1].detach(), dim=-1)
        return (1 - (F.normalize(trips, dim=-1) * target).sum(-1)).mean()

    def _own_regularizers(self, result: Canonicalization) -> dict[str, tuple[float, torch.Tensor]]:
        """``"artifact"``: :meth:`artifact_loss` with ``artifact_weight``, when the result carries round trips
        (training with ``artifact_weight > 0``)."""
        if "round_trips" not in result.extras:
            return {}
        return {"artifact": (self.artifact_weight, self.artifact_loss(result))}


def _with_conv_encoder(group: Group) -> Contrastive:
    return Contrastive(group, ConvEncoder(3, out_dim=16, hidden=4))


def _cases() -> list[RegistryCase]:
    image = (2, 3, "size", "size")
    cases = [RegistryCase(f"{g} conv_encoder", partial(_with_conv_encoder, g), image) for g in (C(4), D(4))]
    cases.append(RegistryCase("D(4) embed_dim+chunks", lambda: Contrastive(D(4), ConvEncoder(3, out_dim=16, hidden=4),
                                                                          embed_dim=8, inputs_per_call=1), image))
    cases.append(RegistryCase("C(4) crop+resize", lambda: Contrastive(C(4), ConvEncoder(3, out_dim=16, hidden=4),
                                                                      crop=0.8, resize=15), image))
    cases.append(RegistryCase("C(8) conv_encoder", lambda: Contrastive(C(8), ConvEncoder(3, out_dim=16, hidden=4)), image,
                              exact=False))
    cases.append(RegistryCase("Octahedral point_encoder",
                              lambda: Contrastive(Octahedral(), PointEncoder(3, out_dim=16, hidden=16)), (2, 12, 3)))
    return cases


register("contrastive", _cases)(Contrastive)
