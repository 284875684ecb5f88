"""Wrapping a predictor: canonicalization (one pass), weighted canonicalization (k passes) and group averaging
(|G| passes)."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from .actions import Action, Image, Trivial
from .canonicalizers.base import Canonicalization, Canonicalizer, call_with_typed_errors
from .canonicalizers.functional import explained
from .errors import (
    ConfigError,
    DTypeError,
    GroupMismatchError,
    InputValueError,
    ShapeError,
    check_floating,
    check_positive_int,
    check_shape,
    format_shape,
)
from .groups import FiniteGroup, Group, RigidGroup, as_group

__all__ = ["Canonicalized", "WeightedCanonicalized", "GroupAveraged", "FrameAveraged", "pca_frames", "top_k_weights"]


def _check_module(obj: object, name: str) -> None:
    if not callable(obj):
        raise ConfigError(f"{name} must be a callable module, got {type(obj).__name__}")


def _check_actions(owner: str, group: Group, **actions: Action) -> None:
    for name, action in actions.items():
        if action.group is not None and action.group != group:
            raise GroupMismatchError(f"{owner}: the {name} action {action!r} uses {action.group}")


class Canonicalized(nn.Module):
    """``f(x) = h(x) ⋆ p(h(x)⁻¹·x)``: any predictor ``p`` made equivariant by a canonicalizer.

    Args:
        predictor: any module; it sees canonical inputs, e.g. ``(B, C, H, W)`` images.
        canonicalizer: a :class:`~equicanon.canonicalizers.Canonicalizer` giving ``h(x)``.
        output: how the pose acts on predictions: :class:`~equicanon.actions.Trivial`
            (default; invariant outputs such as class logits), :class:`~equicanon.actions.Mask`
            or :class:`~equicanon.actions.Image` for dense outputs (segmentation masks,
            heatmaps: mapped back by the pose), :class:`~equicanon.actions.Vectors` or
            :class:`~equicanon.actions.Points` for vector outputs. Its group must be the
            canonicalizer's.

    Example:
        >>> import torch, equicanon as ec
        >>> canon = ec.canonicalizers.GroupConv(ec.C(4), in_channels=1)
        >>> model = ec.Canonicalized(ec.models.SmallCNN(classes=10, in_channels=1), canon).eval()
        >>> images = torch.rand(2, 1, 28, 28)
        >>> logits = model(images)
        >>> torch.allclose(model(torch.rot90(images, 1, dims=(-2, -1))), logits, atol=1e-5)  # invariant to C(4)
        True
        >>> logits, res = model(images, return_canonicalization=True)
        >>> res.pose.shape  # one element of C(4) per image
        torch.Size([2])

        To train it, :func:`equicanon.training.step` adds the prior on copies of the batch moved by
        random group elements to the task loss (:func:`equicanon.training.fit` loops over it).
    """

    def __init__(self, predictor: nn.Module, canonicalizer: Canonicalizer, output: Action | None = None) -> None:
        super().__init__()
        _check_module(predictor, "predictor")
        if not isinstance(canonicalizer, Canonicalizer):
            raise ConfigError(f"canonicalizer must be an equicanon Canonicalizer, got {type(canonicalizer).__name__}")
        self.output = Trivial() if output is None else output
        canonicalizer.check_action(self.output)
        self.predictor = predictor
        self.canonicalizer = canonicalizer

    @property
    def group(self) -> Group:
        """The group the model is equivariant to."""
        return self.canonicalizer.group

    def forward(self, x: torch.Tensor, *, return_canonicalization: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, Canonicalization]:
        """Predict on ``x``; with ``return_canonicalization`` also return the :class:`Canonicalization`."""
        result = self.canonicalizer(x)
        out = self._predict(result.canonical, result.pose)
        return (out, result) if return_canonicalization else out

    def _predict(self, canonical: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """``pose ⋆ predictor(canonical)``: predictions on canonical inputs ``(N, *)``, moved back by their poses ``(N,)``."""
        return self.output(pose, self.predictor(canonical))


def top_k_weights(logits: torch.Tensor, top_k: int, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``top_k`` elements of largest logit and their weights, continuous in the logits.

    With ``ℓ_(1) ≥ ℓ_(2) ≥ …`` a sample's logits sorted and ``t = ℓ_(k+1)`` the largest logit left out,
    element ``h`` weighs

        ``w_h = exp(ℓ_h/τ) · (ℓ_h − t)₊ / Σ_h' exp(ℓ_h'/τ) · (ℓ_h' − t)₊``

    (the softmax over the top ``k`` times the gap to the first excluded logit, normalised; the softmax's own
    normaliser cancels). Elements outside the top ``k`` have ``ℓ_h ≤ t``, so the formula gives them 0 as it
    stands: the top-``k`` cut is no extra switch. ``t`` (an order statistic) and ``(·)₊`` are continuous, so
    every ``w_h`` is a continuous function of the logits wherever the denominator is positive, i.e. unless
    ``k + 1`` logits tie for the largest (then no choice of ``k`` elements is continuous; the weights are
    ``1/k`` on the first ``k`` by index). An element that is about to leave the top ``k`` has ``ℓ_h → t``:
    its weight goes to 0 linearly. ``k = |G|`` has no excluded element: ``w = softmax(ℓ/τ)``, smooth.
    ``τ = inf``: ``w_h ∝ (ℓ_h − t)₊`` (uniform for ``k = |G|``). ``k = 1``: weight 1 on the argmax.
    The weights move with the logits, so regular logits (``ℓ(g·x)[g h] = ℓ(x)[h]``) give equivariant weights,
    ``w_{gh}(g·x) = w_h(x)``.

    Args:
        logits: ``(B, n)`` scores, one per element.
        top_k: ``k``, ``1 ≤ k ≤ n``.
        temperature: ``τ > 0`` of the softmax; ``math.inf`` for none.

    Returns:
        ``(elements, weights)``: ``(B, k)`` int64 indices, best first (ties: lower index first, as
        ``argmax``), and ``(B, k)`` weights ``≥ 0`` summing to 1, differentiable in ``logits``.

    Example:
        >>> elements, weights = top_k_weights(torch.tensor([[2.0, 0.0, 1.0, 1.0]]), 2)
        >>> elements.tolist(), weights.tolist()  # ℓ_(3) = 1: the second-best element ties with it, weight 0
        ([[0, 2]], [[1.0, 0.0]])
    """
    n = logits.shape[-1]
    values, order = torch.sort(logits, dim=-1, descending=True, stable=True)
    top, elements = values[:, :top_k], order[:, :top_k]
    soft = torch.exp((top - top[:, :1].detach()) / temperature)  # exp(ℓ/τ) up to a factor; 1 for the best
    if top_k == n:
        return elements, soft / soft.sum(dim=-1, keepdim=True)
    raw = soft * (top - values[:, top_k:top_k + 1])  # the gaps are >= 0: the values are sorted
    total = raw.sum(dim=-1, keepdim=True)
    tied = total <= 0  # ℓ_(1) = ℓ_(k+1): k + 1 elements tie for the largest logit
    weights = torch.where(tied, torch.full_like(raw, 1.0 / top_k), raw / torch.where(tied, torch.ones_like(total), total))
    return elements, weights


class WeightedCanonicalized(Canonicalized):
    """``f(x) = Σ_j w_j(x) · g_j ⋆ p(g_j⁻¹·x)`` over the canonicalizer's ``top_k`` best poses ``g_j``.

    Weighted canonicalization (weighted frames, Dym, Lawrence & Siegel, ICML 2024) for finite groups: the
    prediction of :class:`Canonicalized` on each of the ``k`` poses of largest logit, moved back by the output
    action as there, averaged with the weights of :func:`top_k_weights` (softmax of ``ℓ/τ`` over the top ``k``
    times the gap to the first excluded logit, normalised). The weights are continuous in the logits, so for a
    continuous predictor and canonicalizer network ``f`` is continuous, also where the argmax pose of
    :class:`Canonicalized` jumps (near-ties, nearly symmetric inputs); an element leaves the top ``k`` with
    weight 0. Exactly equivariant: the weights move with the regular logits, ``w_{gh}(g·x) = w_h(x)``, and
    ``(gh) ⋆ p((gh)⁻¹·g·x) = g ⋆ (h ⋆ p(h⁻¹·x))``.

    ``top_k = 1`` is :class:`Canonicalized` (the same code path: the canonicalizer's pose and canonical form,
    its tie-break, Gumbel noise and straight-through gradients). ``top_k = |G|`` with ``temperature=math.inf``
    is :class:`GroupAveraged`. For ``top_k ≥ 2`` the ``k`` copies ``g_j⁻¹·x`` of every input go through the
    predictor as one batch of ``B·k`` (or ``elements_per_call`` poses at a time), and the task loss reaches
    the canonicalizer's network through the weights; those use the noise-free logits (a canonicalizer's
    Gumbel noise changes only its own ``pose``).

    Args:
        predictor: any module; it sees canonical inputs, e.g. ``(B, C, H, W)`` images.
        canonicalizer: a canonicalizer on a finite group whose results carry ``logits (B, |G|)``, one per
            element: :class:`~equicanon.canonicalizers.GroupConv` on ``C(n)`` / ``D(n)``,
            :class:`~equicanon.canonicalizers.Contrastive`.
        output: how poses act on predictions, as for :class:`Canonicalized` (default
            :class:`~equicanon.actions.Trivial`); for ``top_k ≥ 2`` predictions must be floating (they are
            averaged), so dense outputs are e.g. logits with :class:`~equicanon.actions.Image`, not integer
            labels with :class:`~equicanon.actions.Mask`.
        top_k: ``k``, the number of poses, ``1 ≤ k ≤ |G|``.
        temperature: ``τ > 0`` of the softmax over the logits (``math.inf``: no softmax factor).
        elements_per_call: poses per predictor call, each for the whole batch (``None``: all ``k`` at once).

    Raises:
        ConfigError: a continuous group or ``S(n)`` (not supported yet), ``top_k`` outside ``1..|G|``,
            ``temperature ≤ 0``, ``elements_per_call < 1``; in a call, a canonicalizer result without logits.

    Example:
        >>> import torch, equicanon as ec
        >>> canon = ec.canonicalizers.GroupConv(ec.C(4), in_channels=1)
        >>> predictor = ec.models.SmallCNN(classes=10, in_channels=1)
        >>> model = ec.WeightedCanonicalized(predictor, canon, top_k=2).eval()
        >>> images = torch.rand(2, 1, 28, 28)
        >>> logits = model(images)  # one predictor call on 2 · 2 canonical copies
        >>> torch.allclose(model(torch.rot90(images, 1, dims=(-2, -1))), logits, atol=1e-5)  # invariant to C(4)
        True
        >>> poses, weights = model.top_poses(model.canonicalizer(images).logits)
        >>> poses.shape, bool(torch.allclose(weights.sum(dim=1), torch.ones(2)))
        (torch.Size([2, 2]), True)
    """

    def __init__(self, predictor: nn.Module, canonicalizer: Canonicalizer, output: Action | None = None, *,
                 top_k: int, temperature: float = 1.0, elements_per_call: int | None = None) -> None:
        super().__init__(predictor, canonicalizer, output)
        group = self.group
        if not group.is_finite:
            raise ConfigError(
                f"WeightedCanonicalized: {group} is a continuous group; weighted frames for continuous groups "
                "(Dym et al. 2024) are not supported yet. Use Canonicalized(predictor, canonicalizer) for one "
                "pose, FrameAveraged for SO3/O3/SE3/E3 point clouds, or a canonicalizer on a finite subgroup "
                "(e.g. GroupConv(C(8), ...) instead of GroupConv(SO2(), ...))")
        if not group.is_indexed:
            raise ConfigError(
                f"WeightedCanonicalized: {group} poses are not indexed elements with one logit each (S(n) poses "
                "are sorting permutations); weighting them is not supported yet: use Canonicalized")
        self.order = cast(FiniteGroup, group).order
        self.top_k = check_positive_int(top_k, "top_k")
        if self.top_k > self.order:
            raise ConfigError(f"top_k: expected an integer from 1 to |{group}| = {self.order}, got {top_k}")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ConfigError(f"temperature: expected a number > 0 (math.inf for no softmax factor), got {temperature!r}")
        self.temperature = float(temperature)
        self.elements_per_call = (None if elements_per_call is None
                                  else check_positive_int(elements_per_call, "elements_per_call"))

    def extra_repr(self) -> str:
        return f"top_k={self.top_k}, temperature={self.temperature:g}, elements_per_call={self.elements_per_call}"

    def top_poses(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``top_k`` poses ``(B, k)`` (best first) and their weights ``(B, k)`` for logits ``(B, |G|)``:
        :func:`top_k_weights` with this model's ``top_k`` and ``temperature``."""
        if logits.ndim != 2 or logits.shape[1] != self.order:
            raise ShapeError(f"logits: expected shape (B, {self.order}), one per element of {self.group}, "
                             f"got {format_shape(logits.shape)}")
        return top_k_weights(logits, self.top_k, self.temperature)

    def forward(self, x: torch.Tensor, *, return_canonicalization: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, Canonicalization]:
        """Predict on ``x: (B, *)``; with ``return_canonicalization`` also return the canonicalizer's
        :class:`Canonicalization` (its ``pose`` is the best of the ``k``)."""
        result = self.canonicalizer(x)
        if self.top_k == 1:
            out = self._predict(result.canonical, result.pose)
            return (out, result) if return_canonicalization else out
        if result.logits is None:
            raise ConfigError(f"WeightedCanonicalized: {type(self.canonicalizer).__name__} returned no logits; the "
                              "weights need logits (B, |G|), one per group element (GroupConv on C(n)/D(n), "
                              "Contrastive). Use Canonicalized for this canonicalizer")
        if result.logits.shape[0] != x.shape[0]:
            raise ShapeError(f"logits: expected {x.shape[0]} rows, one per input, got {format_shape(result.logits.shape)}")
        poses, weights = self.top_poses(result.logits)
        group, b, k = cast(FiniteGroup, self.group), x.shape[0], self.top_k
        step = k if self.elements_per_call is None else self.elements_per_call
        total: torch.Tensor | None = None
        for start in range(0, k, step):
            m = min(start + step, k) - start
            # the chunk's copies only, rank-major: g_j^-1 x for the chunk's ranks j, each for every input
            chunk = poses[:, start:start + m].T.reshape(-1)
            copies = x.repeat(m, *([1] * (x.ndim - 1)))
            canonical = explained(self.canonicalizer.action, group, group.inverse(chunk), copies, x)
            mapped = self._predict(canonical, chunk)
            if not mapped.is_floating_point():
                raise DTypeError(f"WeightedCanonicalized averages predictions, but the predictor (through {self.output!r}) "
                                 f"gave dtype {mapped.dtype}; predict floating scores (e.g. logits with "
                                 "actions.Image instead of labels with actions.Mask), or use top_k=1")
            mapped = mapped.reshape(m, b, *mapped.shape[1:])
            w = weights[:, start:start + m].T.to(mapped.dtype).reshape(m, b, *([1] * (mapped.ndim - 2)))
            part = (w * mapped).sum(dim=0)
            total = part if total is None else total + part
        assert total is not None  # k >= 1
        return (total, result) if return_canonicalization else total


class GroupAveraged(nn.Module):
    """``f(x) = mean_k g_k ⋆ p(g_k⁻¹·x)``: the |G|-pass symmetrisation baseline.

    All ``|G|`` copies of the batch go through ``predictor`` as one batch of
    ``B·|G|`` (or ``elements_per_call`` group elements at a time, ``elements_per_call·B`` copies, to bound memory).

    Args:
        predictor: any module.
        group: a finite group with indexed elements (C(n), D(n), Octahedral()), or its name (``"C8"``);
            continuous groups need frame averaging.
        input: how the group acts on inputs; default :class:`~equicanon.actions.Image`.
        output: how it acts on predictions; default :class:`~equicanon.actions.Trivial`
            (invariant logits are averaged); dense outputs are mapped back before averaging.
        elements_per_call: group elements per predictor call, each moving the whole batch
            (``None``: all ``|G|`` at once).
    """

    def __init__(self, predictor: nn.Module, group: Group | str, *, input: Action | None = None,
                 output: Action | None = None, elements_per_call: int | None = None) -> None:
        super().__init__()
        _check_module(predictor, "predictor")
        group = as_group(group, where=lambda g: g.is_indexed, what="GroupAveraged: group",
                         expected="a finite group to average over (C(n), D(n), Octahedral()); for continuous "
                                  "groups use FrameAveraged or a canonicalizer")
        self.predictor = predictor
        self.group: FiniteGroup = cast(FiniteGroup, group)  # is_indexed: elements 0..|G|-1
        self.input = Image(group) if input is None else input
        self.output = Trivial() if output is None else output
        _check_actions(f"GroupAveraged({group})", group, input=self.input, output=self.output)
        self.elements_per_call = (None if elements_per_call is None
                                  else check_positive_int(elements_per_call, "elements_per_call"))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # a DeviceError / DTypeError for x unlike the parameters
        return call_with_typed_errors(self, super().__call__, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Average of the predictor over all transformed copies of ``x: (B, *)``."""
        group, b, n = self.group, x.shape[0], self.group.order
        step = n if self.elements_per_call is None else self.elements_per_call
        total: torch.Tensor | None = None
        for start in range(0, n, step):
            # only this chunk's copies exist at a time: g_k^-1 x for k in the chunk, element-major
            k = torch.arange(start, min(start + step, n), device=x.device)
            repeated = x.repeat(len(k), *([1] * (x.ndim - 1)))
            batch = explained(self.input, group, group.inverse(k).repeat_interleave(b), repeated, x)
            pred = self.predictor(batch)
            mapped = self.output(k.repeat_interleave(b), pred)
            part = mapped.reshape(len(k), b, *mapped.shape[1:]).sum(0)
            total = part if total is None else total + part
        assert total is not None
        return total / n


def pca_frames(points: torch.Tensor, group: Group) -> torch.Tensor:
    """Frames of Puny et al. (2022) from principal axes: ``(B, K, 3, 3)`` orthogonal matrices.

    The covariance of the centred points moves as ``Q C Qᵀ``, so its eigenvectors
    move with ``Q`` up to their signs; all sign choices are kept (``K = 8`` for O(3)
    and E(3)), or those with ``det = +1`` (``K = 4`` for SO(3) and SE(3)). Exact
    when the three eigenvalues are distinct; near-equal eigenvalues make the
    frames, and the averaged prediction, unstable.
    """
    centred = points - points.mean(dim=1, keepdim=True)
    cov = centred.transpose(1, 2) @ centred
    work = cov if cov.dtype in (torch.float32, torch.float64) else cov.float()  # eigh has no float16/bfloat16
    vecs = torch.linalg.eigh(work)[1]  # (B, 3, 3), columns sorted by eigenvalue
    signs = torch.tensor([[a, b, c] for a in (1, -1) for b in (1, -1) for c in (1, -1)],
                         dtype=work.dtype, device=points.device)  # (8, 3)
    frames = vecs[:, None] * signs[None, :, None, :]  # (B, 8, 3, 3)
    if not group.has_reflections:
        keep = torch.linalg.det(frames) > 0  # exactly 4 of the 8 per sample
        frames = frames[keep].reshape(points.shape[0], 4, 3, 3)
    return frames.to(points.dtype)


class FrameAveraged(nn.Module):
    """Frame averaging (Puny et al., 2022) over PCA frames: ``f(x) = mean_F F ⋆ p(F⁻¹·x)``.

    The |G|-averaging baseline is impossible for continuous groups; averaging over
    the 4 (SO(3), SE(3)) or 8 (O(3), E(3)) frames of the input's principal axes is
    the standard replacement. All frames go through ``predictor`` as one batch.

    Args:
        predictor: any module on point clouds ``(B, N, 3)`` (or particles ``(B, N, 6+k)``).
        group: SO3(), O3(), SE3() or E3() (or its name); rigid groups also centre the points.
        input: how the group acts on inputs: :class:`~equicanon.actions.Points` (default)
            or :class:`~equicanon.actions.Particles`.
        output: how it acts on predictions (default :class:`~equicanon.actions.Trivial`).
    """

    def __init__(self, predictor: nn.Module, group: Group | str, *, input: Action | None = None,
                 output: Action | None = None) -> None:
        super().__init__()
        from .actions import Points

        _check_module(predictor, "predictor")
        group = as_group(group, where=lambda g: g.dim == 3 and not g.is_finite, what="FrameAveraged: group",
                         expected="a continuous 3-D group for PCA frames of points: SO3, O3, SE3 or E3")
        self.predictor = predictor
        self.group = group
        self.input = Points(group) if input is None else input
        self.output = Trivial() if output is None else output
        _check_actions(f"FrameAveraged({group})", group, input=self.input, output=self.output)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # a DeviceError / DTypeError for x unlike the parameters
        return call_with_typed_errors(self, super().__call__, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Average of the predictor over the PCA frames of ``x: (B, N, 3 + …)``."""
        sizes = check_shape(x, "B N F", name="points")
        if sizes["N"] < 1 or sizes["F"] < 3:
            raise ShapeError(f"points: expected (B, N, 3 + k) with N >= 1 points, got shape {format_shape(x.shape)}")
        check_floating(x, "points")
        b = x.shape[0]
        positions = x[..., :3]
        try:
            frames = pca_frames(positions, self.group)  # (B, K, 3, 3)
        except torch.linalg.LinAlgError as e:  # eigh reports this itself (no extra host sync on the good path)
            raise InputValueError(f"FrameAveraged: the covariance of the points could not be diagonalised ({e}); "
                                  "the input holds NaN or Inf") from e
        k = frames.shape[1]
        rot = frames.reshape(b * k, 3, 3)
        if self.group.has_translations:
            centre = positions.mean(dim=1).repeat_interleave(k, dim=0)
            elements = cast(RigidGroup, self.group).from_parts(rot, centre)
        else:
            elements = rot
        repeated = x.repeat_interleave(k, dim=0)
        pred = self.predictor(self.input(self.group.inverse(elements), repeated))
        mapped = self.output(elements, pred)
        return mapped.reshape(b, k, *mapped.shape[1:]).mean(dim=1)
