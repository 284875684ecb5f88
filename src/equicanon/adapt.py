"""Wrapping a predictor: canonicalization (one pass), weighted canonicalization and probabilistic symmetrization
(k passes) and group averaging (|G| passes)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeAlias, cast

import torch
from torch import nn

from .actions import Action, Image
from .actions.structured import apply_action, as_output_action, flatten, unflatten
from .canonicalizers.base import Canonicalization, Canonicalizer, call_with_typed_errors
from .canonicalizers.functional import explained, sample_categorical, top_k_weights
from .errors import (
    ConfigError,
    DTypeError,
    GroupMismatchError,
    InputValueError,
    ShapeError,
    check_floating,
    check_mask,
    check_positive_int,
    check_shape,
    format_shape,
)
from .groups import FiniteGroup, Group, RigidGroup, as_group
from .nn.masking import masked_mean

__all__ = ["Canonicalized", "WeightedCanonicalized", "Symmetrized", "GroupAveraged", "FrameAveraged", "pca_frames",
           "top_k_weights"]


def _check_module(obj: object, name: str) -> None:
    if not callable(obj):
        raise ConfigError(f"{name} must be a callable module, got {type(obj).__name__}")


def _check_actions(owner: str, group: Group, **actions: Action) -> None:
    for name, action in actions.items():
        if action.group is not None and action.group != group:
            raise GroupMismatchError(f"{owner}: the {name} action {action!r} uses {action.group}")


#: what a wrapper's ``output=`` takes: one action for the whole prediction, or one per key / position
OutputSpec = Action | Mapping[str, Action] | Sequence[Action] | None

#: how averaging wrappers merge the predictions of the copies (:class:`GroupAveraged`, :class:`FrameAveraged`)
MERGES = ("mean", "softmax", "geometric", "max")


def _keyword_actions(keyword_actions: Mapping[str, Action] | None, group: Group, owner: str) -> dict[str, Action]:
    """``keyword_actions`` checked: names of the predictor's keyword arguments that live on the input grid and the
    actions that move them."""
    if keyword_actions is None:
        return {}
    if not isinstance(keyword_actions, Mapping):
        raise ConfigError(f"{owner}: keyword_actions must be a dict {{name: action}}, got {type(keyword_actions).__name__}")
    for name, action in keyword_actions.items():
        if not isinstance(name, str) or not isinstance(action, Action):
            raise ConfigError(f"{owner}: keyword_actions maps keyword names to equicanon Actions, got "
                              f"{name!r}: {type(action).__name__}")
    _check_actions(owner, group, **{f"keyword {name!r}": action for name, action in keyword_actions.items()})
    return dict(keyword_actions)


def _copy_kwargs(owner: nn.Module, kwargs: Mapping[str, Any], batch: int, copies: int,
                 inverse: torch.Tensor) -> dict[str, Any]:
    """The predictor's keyword arguments for ``copies`` copies of a batch of ``batch`` inputs, stacked element-major
    (rows ``j·batch … (j+1)·batch − 1`` are copy ``j``), moved by the elements ``inverse`` ``(copies·batch, *)``.

    A tensor with ``batch`` rows is per input: repeated like the inputs, and, if ``owner.keyword_actions`` names
    it, moved by its action as the inputs are. Anything else is passed as it is."""
    moved: dict[str, Any] = {}
    actions: dict[str, Action] = getattr(owner, "keyword_actions", {})
    for name, value in kwargs.items():
        per_input = isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] == batch
        if name in actions and not per_input:
            got = format_shape(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ShapeError(f"keyword argument {name!r} moves with the input ({actions[name]!r}): expected a tensor "
                             f"with one row per input ({batch}), got {got}")
        if per_input:
            value = value.repeat(copies, *([1] * (value.ndim - 1))) if copies > 1 else value
            if name in actions:
                value = actions[name](inverse, value)
        moved[name] = value
    return moved


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
            canonicalizer's. Predictors that return a tuple, dict or dataclass: one action for every
            tensor in it, or a dict ``{key: action}`` (a list ``[action, ...]`` for tuples) with one per part
            (:class:`~equicanon.actions.Structured`); the prediction keeps its structure.
        keyword_actions: ``{name: action}`` for keyword arguments of the predictor that live on the input grid
            (padding masks, dense side inputs): they are moved with ``x``, ``action(pose⁻¹, value)``. Other
            keyword arguments of :meth:`forward` reach the predictor as they are.

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

    def __init__(self, predictor: nn.Module, canonicalizer: Canonicalizer, output: OutputSpec = None, *,
                 keyword_actions: Mapping[str, Action] | None = None) -> None:
        super().__init__()
        _check_module(predictor, "predictor")
        if not isinstance(canonicalizer, Canonicalizer):
            raise ConfigError(f"canonicalizer must be an equicanon Canonicalizer, got {type(canonicalizer).__name__}")
        self.output = as_output_action(output)
        canonicalizer.check_action(self.output)
        self.keyword_actions = _keyword_actions(keyword_actions, canonicalizer.group, type(self).__name__)
        self.predictor = predictor
        self.canonicalizer = canonicalizer

    @property
    def group(self) -> Group:
        """The group the model is equivariant to."""
        return self.canonicalizer.group

    def forward(self, x: torch.Tensor, *, return_canonicalization: bool = False, **kwargs: Any) -> Any:
        """Predict on ``x``; with ``return_canonicalization`` also return the :class:`Canonicalization`. Keyword
        arguments go to the predictor (those in ``keyword_actions`` canonicalized with ``x``); a ``mask`` (a padding
        mask ``(B, N)`` of variable-size point sets) also goes to the canonicalizer where it takes one
        (``canonicalizer.accepts_mask``: VectorNeurons, ParticleVectorNeurons)."""
        result = self._canonicalize(x, kwargs)
        out = self._predict(result.canonical, result.pose, kwargs)
        return (out, result) if return_canonicalization else out

    def _canonicalize(self, x: torch.Tensor, kwargs: Mapping[str, Any]) -> Canonicalization:
        """The canonicalizer on ``x``, with the call's ``mask`` where it takes one."""
        mask = kwargs.get("mask")
        if mask is not None and self.canonicalizer.accepts_mask:
            return self.canonicalizer(x, mask=mask)
        return self.canonicalizer(x)

    def _predict(self, canonical: torch.Tensor, pose: torch.Tensor, kwargs: Mapping[str, Any] | None = None) -> Any:
        """``pose ⋆ predictor(canonical, **kwargs)``: predictions on canonical inputs ``(N, *)``, moved back by their
        poses ``(N, *)``."""
        kw = _copy_kwargs(self, kwargs, canonical.shape[0], 1, self.group.inverse(pose)) if kwargs else {}
        return apply_action(self.output, pose, call_with_typed_errors(self.predictor, self.predictor, canonical, **kw))


def _candidates(model: Canonicalized, top_k: bool) -> int | None:
    """How many poses ``model``'s canonicalizer ranks (``top_k``) or whether it samples poses at all (else
    ``None``): a :class:`ConfigError` saying what to use instead where it does neither."""
    owner, group, canon = type(model).__name__, model.group, model.canonicalizer
    count = canon.candidate_count
    if (count if top_k else canon.samples_poses):
        return count
    what = "rank several poses" if top_k else "sample poses"
    if not group.is_finite:
        raise ConfigError(
            f"{owner}: {type(canon).__name__} on {group} does not {what} (continuous groups need a canonicalizer "
            "that does: GroupConv on SO2()/O2() with refine (its default), VectorNeurons or ParticleVectorNeurons"
            f"{' with vectors >= 3 (SO3, SE3) or >= 4 (O3, E3)' if top_k else ''}). Use Canonicalized for one "
            "pose, or FrameAveraged for SO3/O3/SE3/E3 point clouds")
    raise ConfigError(
        f"{owner}: {group} poses are not indexed elements with one logit each (S(n) poses are sorting "
        f"permutations); {type(canon).__name__} does not {what}: use Canonicalized")


def _check_temperature(temperature: object, infinite: str) -> float:
    """``temperature`` as a float ``τ > 0`` (``math.inf`` allowed, meaning ``infinite``), else a ConfigError."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ConfigError(f"temperature: expected a number > 0 (math.inf for {infinite}), got {temperature!r}")
    return float(temperature)


def _check_logits(logits: torch.Tensor, order: int, group: Group) -> None:
    if logits.ndim != 2 or logits.shape[1] != order:
        raise ShapeError(f"logits: expected shape (B, {order}), one per element of {group}, "
                         f"got {format_shape(logits.shape)}")


Leaves = list[torch.Tensor]
#: the wrappers that run their predictor on several copies of the batch
Wrapper: TypeAlias = "Canonicalized | _Averaging"


def _pose_predictions(model: Wrapper, action: Action, x: torch.Tensor, poses: torch.Tensor,
                      elements_per_call: int | None, otherwise: str | None, kwargs: Mapping[str, Any]
                      ) -> Iterator[tuple[slice, Leaves, Any]]:
    """``g_j ⋆ p(g_j⁻¹·x)`` for poses ``(B, k, *)`` (indices or matrices), ``elements_per_call`` columns at a time
    (``None``: all ``k``):
    ``model``'s predictor on the inputs moved by ``action``, its predictions moved back by ``model.output``.

    Yields ``(columns, leaves, tree)``: the chunk's columns of ``poses``, the tensors of its mapped predictions,
    each ``(m, B, *)`` (:func:`~equicanon.actions.structured.flatten`), and how to rebuild a prediction from them;
    one predictor call on ``m·B`` copies (column-major: the chunk's ``j``, each for every input; only this
    chunk's copies exist at a time). Predictions must be floating (they are averaged), else a DTypeError
    ending in ``otherwise`` (``None``: not checked).
    """
    group, b, k = model.group, x.shape[0], poses.shape[1]
    step = k if elements_per_call is None else elements_per_call
    for start in range(0, k, step):
        columns = slice(start, min(start + step, k))
        m = columns.stop - start
        chunk = poses[:, columns].transpose(0, 1).reshape(m * b, *poses.shape[2:])
        copies = x.repeat(m, *([1] * (x.ndim - 1)))
        inverse = group.inverse(chunk)
        canonical = explained(action, group, inverse, copies, x)
        kw = _copy_kwargs(model, kwargs, b, m, inverse) if kwargs else {}
        pred = call_with_typed_errors(model.predictor, model.predictor, canonical, **kw)
        leaves, tree = flatten(apply_action(model.output, chunk, pred))
        for leaf in leaves:
            if otherwise is not None and not leaf.is_floating_point():
                raise DTypeError(f"{type(model).__name__} averages predictions, but the predictor (through "
                                 f"{model.output!r}) gave dtype {leaf.dtype}; predict floating scores (e.g. logits "
                                 f"with actions.Image instead of labels with actions.Mask), or {otherwise}")
        yield columns, [leaf.reshape(m, b, *leaf.shape[1:]) for leaf in leaves], tree


def _broadcast(weights: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-pose weights ``(B, m)`` as ``(m, B, 1, …)`` in ``like``'s dtype, to scale mapped predictions ``(m, B, *)``."""
    return weights.T.to(like.dtype).reshape(*weights.T.shape, *([1] * (like.ndim - 2)))


def _merged(model: Wrapper, action: Action, x: torch.Tensor, poses: torch.Tensor, elements_per_call: int | None,
            otherwise: str | None, kwargs: Mapping[str, Any], merge: str = "sum") -> Any:
    """The predictions ``g_j ⋆ p(g_j⁻¹·x)`` for poses ``(B, k, *)`` merged over ``j``, tensor by tensor: ``"sum"``
    (unweighted), ``"mean"``, ``"softmax"`` (mean of the softmax over the last axis), ``"geometric"`` (softmax of the
    mean log-softmax: the normalised geometric mean of the probabilities) or ``"max"`` (see
    :func:`_pose_predictions`)."""
    k = poses.shape[1]
    total: Leaves | None = None
    tree: Any = None
    for _, leaves, tree in _pose_predictions(model, action, x, poses, elements_per_call, otherwise, kwargs):  # noqa: B007
        if merge == "max":
            parts = [leaf.amax(dim=0) for leaf in leaves]
            total = parts if total is None else [torch.maximum(a, b) for a, b in zip(total, parts, strict=True)]
            continue
        if merge == "softmax":
            leaves = [leaf.softmax(dim=-1) for leaf in leaves]
        elif merge == "geometric":
            leaves = [leaf.log_softmax(dim=-1) for leaf in leaves]
        parts = [leaf.sum(dim=0) for leaf in leaves]
        total = parts if total is None else [a + b for a, b in zip(total, parts, strict=True)]
    assert total is not None  # k >= 1
    if merge in ("mean", "softmax"):
        total = [t / k for t in total]
    elif merge == "geometric":
        total = [(t / k).softmax(dim=-1) for t in total]
    return unflatten(tree, total)


def _weighted_sum(model: Canonicalized, x: torch.Tensor, poses: torch.Tensor, weights: torch.Tensor,
                  elements_per_call: int | None, otherwise: str, kwargs: Mapping[str, Any]) -> Any:
    """``Σ_j w_j · g_j ⋆ p(g_j⁻¹·x)`` for poses ``(B, k, *)`` and weights ``(B, k)``: ``(B, *)`` (tensor by tensor
    for structured predictions)."""
    total: Leaves | None = None
    tree: Any = None
    for columns, leaves, tree in _pose_predictions(model, model.canonicalizer.action, x, poses,  # noqa: B007
                                                   elements_per_call, otherwise, kwargs):
        parts = [(_broadcast(weights[:, columns], leaf) * leaf).sum(dim=0) for leaf in leaves]
        total = parts if total is None else [a + b for a, b in zip(total, parts, strict=True)]
    assert total is not None  # k >= 1
    return unflatten(tree, total)


class WeightedCanonicalized(Canonicalized):
    """``f(x) = Σ_j w_j(x) · g_j ⋆ p(g_j⁻¹·x)`` over the canonicalizer's ``top_k`` best poses ``g_j``.

    Weighted canonicalization (weighted frames, Dym, Lawrence & Siegel, ICML 2024). Finite groups: the
    prediction of :class:`Canonicalized` on each of the ``k`` poses of largest logit, moved back by the output
    action as there, averaged with the weights of :func:`top_k_weights` (softmax of ``ℓ/τ`` over the top ``k``
    times the gap to the first excluded logit, normalised). The weights are continuous in the logits, so for a
    continuous predictor and canonicalizer network ``f`` is continuous, also where the argmax pose of
    :class:`Canonicalized` jumps (near-ties, nearly symmetric inputs); an element leaves the top ``k`` with
    weight 0. Exactly equivariant: the weights move with the regular logits, ``w_{gh}(g·x) = w_h(x)``, and
    ``(gh) ⋆ p((gh)⁻¹·g·x) = g ⋆ (h ⋆ p(h⁻¹·x))``.

    Continuous groups: the canonicalizer ranks its own candidate poses
    (:meth:`~equicanon.canonicalizers.Canonicalizer.weighted_poses`). A refined ``GroupConv`` on ``SO2()`` /
    ``O2()`` takes its ``k`` best coarse elements (weights as above, of the coarse logits) and refines each by
    its residual turn; ``VectorNeurons`` / ``ParticleVectorNeurons`` with ``vectors = m`` output vectors take
    the frames of the ``C(m, 2)`` pairs (``C(m, 3)`` triples with reflections) of vectors that are farthest from
    dependent, weighted by :func:`~equicanon.canonicalizers.functional.weighted_frames` so that a frame weighs 0
    where its Gram–Schmidt jumps.

    ``top_k = 1`` is :class:`Canonicalized` (the same code path: the canonicalizer's pose and canonical form,
    its tie-break, Gumbel noise and straight-through gradients). ``top_k = |G|`` with ``temperature=math.inf``
    is :class:`GroupAveraged`. For ``top_k ≥ 2`` the ``k`` copies ``g_j⁻¹·x`` of every input go through the
    predictor as one batch of ``B·k`` (or ``elements_per_call`` poses at a time), and the task loss reaches
    the canonicalizer's network through the weights; those use the noise-free logits (a canonicalizer's
    Gumbel noise changes only its own ``pose``).

    Args:
        predictor: any module; it sees canonical inputs, e.g. ``(B, C, H, W)`` images.
        canonicalizer: one that ranks poses (``canonicalizer.candidate_count`` is not ``None``): on a finite
            group, one whose results carry ``logits (B, |G|)``, one per element
            (:class:`~equicanon.canonicalizers.GroupConv` on ``C(n)`` / ``D(n)``,
            :class:`~equicanon.canonicalizers.Contrastive`); refined ``GroupConv`` on ``SO2()`` / ``O2()``;
            ``VectorNeurons`` / ``ParticleVectorNeurons`` (``top_k ≥ 2`` needs ``vectors ≥ 3``, or ``≥ 4`` with
            reflections).
        output: how poses act on predictions, as for :class:`Canonicalized` (default
            :class:`~equicanon.actions.Trivial`); for ``top_k ≥ 2`` predictions must be floating (they are
            averaged), so dense outputs are e.g. logits with :class:`~equicanon.actions.Image`, not integer
            labels with :class:`~equicanon.actions.Mask`.
        top_k: ``k``, the number of poses, ``1 ≤ k ≤ canonicalizer.candidate_count`` (``|G|`` for finite groups).
        temperature: ``τ > 0`` of the softmax over the logits (``math.inf``: no softmax factor).
        elements_per_call: poses per predictor call, each for the whole batch (``None``: all ``k`` at once).

    Raises:
        ConfigError: a canonicalizer that ranks no poses (``S(n)``, unrefined ``SO2()`` / ``O2()``), ``top_k``
            outside ``1..candidate_count``, ``temperature ≤ 0``, ``elements_per_call < 1``; in a call, a
            canonicalizer result without logits.

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

    def __init__(self, predictor: nn.Module, canonicalizer: Canonicalizer, output: OutputSpec = None, *,
                 top_k: int, temperature: float = 1.0, elements_per_call: int | None = None,
                 keyword_actions: Mapping[str, Action] | None = None) -> None:
        super().__init__(predictor, canonicalizer, output, keyword_actions=keyword_actions)
        self.order = cast(int, _candidates(self, top_k=True))
        self.top_k = check_positive_int(top_k, "top_k")
        if self.top_k > self.order:
            what = f"|{self.group}|" if self.group.is_indexed else f"the {type(canonicalizer).__name__}'s candidates"
            raise ConfigError(f"top_k: expected an integer from 1 to {what} = {self.order}, got {top_k}")
        self.temperature = _check_temperature(temperature, "no softmax factor")
        self.elements_per_call = (None if elements_per_call is None
                                  else check_positive_int(elements_per_call, "elements_per_call"))

    def extra_repr(self) -> str:
        return f"top_k={self.top_k}, temperature={self.temperature:g}, elements_per_call={self.elements_per_call}"

    def top_poses(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``top_k`` poses ``(B, k)`` (best first) and their weights ``(B, k)`` for logits ``(B, |G|)``:
        :func:`top_k_weights` with this model's ``top_k`` and ``temperature`` (groups of indexed elements; for
        any canonicalizer, :meth:`weighted_poses`)."""
        if not self.group.is_indexed:
            raise ConfigError(f"top_poses takes logits, one per element; {self.group} poses are not indexed "
                              "elements: use model.weighted_poses(x)")
        _check_logits(logits, self.order, self.group)
        return top_k_weights(logits, self.top_k, self.temperature)

    def weighted_poses(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``top_k`` poses ``(B, k, *)`` of inputs ``x (B, *)`` (best first: element indices, or matrices
        ``(B, k, d, d)`` for continuous groups) and their weights ``(B, k)``
        (:meth:`~equicanon.canonicalizers.Canonicalizer.weighted_poses`)."""
        return self.canonicalizer.weighted_poses(x, self.canonicalizer(x), self.top_k, self.temperature)

    def forward(self, x: torch.Tensor, *, return_canonicalization: bool = False, **kwargs: Any) -> Any:
        """Predict on ``x: (B, *)``; with ``return_canonicalization`` also return the canonicalizer's
        :class:`Canonicalization` (its ``pose`` is the best of the ``k``). Keyword arguments go to the predictor,
        per-input tensors repeated for the ``k`` copies (those in ``keyword_actions`` moved with them)."""
        result = self._canonicalize(x, kwargs)
        if self.top_k == 1:
            out = self._predict(result.canonical, result.pose, kwargs)
            return (out, result) if return_canonicalization else out
        poses, weights = self.canonicalizer.weighted_poses(x, result, self.top_k, self.temperature)
        total = _weighted_sum(self, x, poses, weights, self.elements_per_call, "use top_k=1", kwargs)
        return (total, result) if return_canonicalization else total


class Symmetrized(Canonicalized):
    """``f(x) = E_{h ~ p(·|x)} h ⋆ p(h⁻¹·x)``, estimated by the mean over ``samples`` poses drawn from ``p(·|x)``.

    Probabilistic symmetrization (Kim et al., NeurIPS 2023). Finite groups: the canonicalizer's logits give
    an equivariant distribution over poses, ``p(h|x) = softmax(ℓ(x)/τ)_h``, a categorical. Every input draws
    ``k = samples`` poses ``h_1 … h_k`` i.i.d. from it (with replacement: ``samples = |G|`` is *not* a
    permutation of ``G``, some elements come twice and some not at all), the predictor runs on each
    ``h_j⁻¹·x`` and each prediction is moved back by the output action, as in :class:`Canonicalized`:

        ``f̂(x) = (1/k) Σ_j h_j ⋆ p(h_j⁻¹·x)``,   ``E f̂(x) = f(x) = Σ_h p(h|x) · h ⋆ p(h⁻¹·x)`` (:meth:`expected`).

    Equivariant in distribution: the logits are regular, ``ℓ(g·x)[g h] = ℓ(x)[h]``, so
    ``p(g h | g·x) = p(h | x)`` and ``f̂(g·x)`` has the law of ``g ⋆ f̂(x)``; the expectation ``f`` is exactly
    equivariant. A single draw with a fixed seed is not (the noise does not move with ``g``). It is a
    randomized model in evaluation mode too (``model.eval()`` changes only the modules' own behaviour);
    :meth:`expected` is its deterministic version (all ``|G|`` poses, weighted by ``p(h|x)``: the same as
    ``WeightedCanonicalized(top_k=|G|, temperature=τ)``). As ``τ → 0`` every draw is the argmax pose, the
    prediction of :class:`Canonicalized` (ties aside); ``τ = math.inf`` samples uniformly (Monte-Carlo group
    averaging, nothing for the canonicalizer to learn).

    Continuous groups: the canonicalizer draws its own poses
    (:meth:`~equicanon.canonicalizers.Canonicalizer.sampled_poses`). A refined ``GroupConv`` on ``SO2()`` /
    ``O2()`` draws coarse elements from the softmax of its coarse logits and refines each (the coarse draw has
    the score-function gradients below, the residual turn pathwise ones; :meth:`expected` sums the coarse
    elements). ``VectorNeurons`` / ``ParticleVectorNeurons`` draw noisy frames, Gram–Schmidt of their output
    vectors plus isotropic Gaussian noise whose standard deviation is ``τ`` times the vectors' RMS length
    (:func:`~equicanon.canonicalizers.functional.noisy_frames`): the normal law is rotation invariant, so the
    frames are equivariant in distribution, and they are differentiable in the vectors, so the canonicalizer
    gets pathwise (reparameterized) gradients, as in Kim et al., and no score-function term; the distribution
    is continuous, so there is no :meth:`expected` (average many draws).

    Gradients. The predictor gets ordinary (pathwise) gradients: ``∂f̂/∂θ_p = (1/k) Σ_j ∂y_j/∂θ_p`` with
    ``y_j = h_j ⋆ p(h_j⁻¹·x)``, unbiased for ``∂f/∂θ_p``. The poses are discrete draws and ``y_j`` does not
    depend on the logits except through which ``h_j`` was drawn, so there is no pathwise gradient to the
    canonicalizer; straight-through (as in :class:`Canonicalized`) or a Gumbel-softmax mixture of transformed
    inputs would be biased (a mixture of copies is not in the orbit). The output therefore carries the
    score-function (REINFORCE) surrogate with the leave-one-out baseline ``b_j = (1/(k−1)) Σ_{i≠j} y_i``
    (Kool, van Hoof & Welling 2019, "Buy 4 REINFORCE samples, get a baseline for free"):

        ``out = f̂ + (1/k) Σ_j (log p(h_j|x) − ⊥log p(h_j|x)) · ⊥(y_j − b_j)``   (``⊥``: detached),

    whose added term is exactly 0 in the forward pass (``out`` is ``f̂``), and whose Jacobian in the logits is
    ``(1/k) Σ_j ∇ log p(h_j|x) · (y_j − b_j)ᵀ``. Since ``E ∇ log p(h|x) = 0`` and ``b_j`` is independent of
    ``h_j``, this is an unbiased estimate of ``∂f/∂ℓ``, the gradient of the expectation; the baseline removes
    the mean of ``y`` from the score term (the main source of variance) at no cost: it reuses the other
    ``k − 1`` predictions, no extra predictor pass. ``k = 1`` has no baseline (plain REINFORCE). Hence
    ``loss.backward()`` of any loss linear in the output (a weighted sum, the expected prediction's score) gives
    unbiased gradients to the logits and the canonicalizer's network. For a non-linear task loss
    (cross-entropy, MSE) the gradient is ``∂L/∂f`` at the ``k``-sample estimate times that unbiased Jacobian,
    as ``L(f̂)`` is itself a ``k``-sample estimate of ``L(f)``: both tighten as ``k`` grows.

    Args:
        predictor: any module; it sees transformed inputs, e.g. ``(B, C, H, W)`` images.
        canonicalizer: one that samples poses (``canonicalizer.samples_poses``): on a finite group, one whose
            results carry ``logits (B, |G|)`` (:class:`~equicanon.canonicalizers.GroupConv` on ``C(n)`` / ``D(n)``,
            :class:`~equicanon.canonicalizers.Contrastive`; only its noise-free logits are used: a
            canonicalizer's Gumbel noise changes only its own ``pose``); refined ``GroupConv`` on ``SO2()`` /
            ``O2()``; ``VectorNeurons``, ``ParticleVectorNeurons``; ``Sort`` on ``S(n)`` (Plackett–Luce
            permutations: Gumbel-perturbed sorts of its scores, with score-function gradients; no :meth:`expected`).
        output: how poses act on predictions, as for :class:`Canonicalized` (default
            :class:`~equicanon.actions.Trivial`); for ``samples ≥ 2`` predictions must be floating (they are
            averaged). With ``samples = 1`` integer predictions (labels) come back as drawn, without gradients.
        samples: ``k ≥ 1``, draws per input; the ``k`` copies of the batch go through the predictor as one
            batch of ``B·k`` (or ``elements_per_call`` draws at a time).
        temperature: ``τ > 0`` of ``p(h|x) = softmax(ℓ/τ)`` (``math.inf``: uniform); for noisy frames, the
            noise's standard deviation relative to the output vectors' RMS length (``math.inf``: Haar-uniform
            rotations).
        elements_per_call: draws per predictor call, each for the whole batch (``None``: all ``k`` at once).
        generator: where the draws come from (``None``: torch's global generator). It is advanced by every
            call; pass a per-call ``generator=`` to :meth:`forward` to share one model between threads.

    Raises:
        ConfigError: a canonicalizer that samples no poses (unrefined ``SO2()`` / ``O2()``),
            ``samples < 1``, ``temperature ≤ 0``,
            ``elements_per_call < 1``, a ``generator`` that is not a ``torch.Generator``; in a call, a
            canonicalizer result without logits.
        DTypeError: in a call, integer predictions with ``samples ≥ 2``.

    Example:
        >>> import torch, equicanon as ec
        >>> canon = ec.canonicalizers.create("group_conv", group="C4", in_channels=1)
        >>> model = ec.Symmetrized(ec.models.SmallCNN(classes=10, in_channels=1), canon, samples=4).eval()
        >>> images = torch.rand(2, 1, 28, 28)
        >>> logits = model(images, generator=torch.Generator().manual_seed(0))  # one predictor call on 2 · 4 copies
        >>> torch.equal(model(images, generator=torch.Generator().manual_seed(0)), logits)  # reproducible
        True
        >>> model.sample_poses(canon(images).logits, torch.Generator().manual_seed(0)).shape  # (B, samples)
        torch.Size([2, 4])
        >>> with torch.no_grad():  # the expectation is exactly invariant to C(4)
        ...     mean = model.expected(images)
        ...     torch.allclose(model.expected(torch.rot90(images, 1, dims=(-2, -1))), mean, atol=1e-5)
        True
    """

    def __init__(self, predictor: nn.Module, canonicalizer: Canonicalizer, output: OutputSpec = None, *,
                 samples: int, temperature: float = 1.0, elements_per_call: int | None = None,
                 generator: torch.Generator | None = None, keyword_actions: Mapping[str, Action] | None = None) -> None:
        super().__init__(predictor, canonicalizer, output, keyword_actions=keyword_actions)
        self.order = _candidates(self, top_k=False)  # None: a continuous distribution (no finite support)
        self.samples = check_positive_int(samples, "samples")
        self.temperature = _check_temperature(temperature, "uniform sampling")
        self.elements_per_call = (None if elements_per_call is None
                                  else check_positive_int(elements_per_call, "elements_per_call"))
        self.generator = _check_generator(generator)

    def extra_repr(self) -> str:
        return f"samples={self.samples}, temperature={self.temperature:g}, elements_per_call={self.elements_per_call}"

    def log_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """``log p(h|x) = log_softmax(ℓ/τ)``: ``(B, |G|)`` for logits ``(B, |G|)``, differentiable (groups of
        indexed elements)."""
        self._check_indexed(logits)
        return torch.log_softmax(logits / self.temperature, dim=-1)

    def sample_poses(self, logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``samples`` i.i.d. draws per row from ``softmax(ℓ/τ)``: ``(B, k)`` int64 elements for logits ``(B, |G|)``
        (groups of indexed elements; for any canonicalizer, :meth:`draw_poses`).

        Inverse-CDF sampling of uniforms drawn from ``generator`` (default: the model's, else torch's global one)
        on the generator's device, so a seeded CPU generator draws the same poses for inputs on any device.
        Elements of probability 0 are never drawn.
        """
        self._check_indexed(logits)
        return sample_categorical(logits, self.samples, self.temperature, _check_generator(generator) or self.generator)

    def draw_poses(self, x: torch.Tensor, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``samples`` poses per input ``x (B, *)`` from ``p(·|x)`` and their log-probabilities:
        ``(poses (B, k, *), log_p (B, k) or None)``
        (:meth:`~equicanon.canonicalizers.Canonicalizer.sampled_poses`; ``None``: reparameterized draws)."""
        gen = _check_generator(generator) or self.generator
        return self.canonicalizer.sampled_poses(x, self.canonicalizer(x), self.samples, self.temperature, gen)

    def _check_indexed(self, logits: torch.Tensor) -> None:
        if self.order is None or not self.group.is_indexed:
            raise ConfigError(f"this takes logits, one per element; {self.group} poses are not indexed elements: "
                              "use model.draw_poses(x)")
        _check_logits(logits, self.order, self.group)

    def forward(self, x: torch.Tensor, *, return_canonicalization: bool = False,
                generator: torch.Generator | None = None, **kwargs: Any) -> Any:
        """A ``samples``-draw estimate ``(B, *)`` of :meth:`expected` for ``x: (B, *)``, carrying the score-function
        surrogate (see the class); ``generator`` overrides the model's for this call. With
        ``return_canonicalization`` also the canonicalizer's :class:`Canonicalization` (its ``pose`` is the argmax,
        not a draw). Keyword arguments go to the predictor, per-input tensors repeated for the draws (those in
        ``keyword_actions`` moved with them); structured predictions are estimated tensor by tensor."""
        result = self._canonicalize(x, kwargs)
        gen = _check_generator(generator) or self.generator
        poses, log_p = self.canonicalizer.sampled_poses(x, result, self.samples, self.temperature, gen)
        k = self.samples
        otherwise = "use samples=1" if k > 1 else None
        if log_p is None:  # reparameterized draws: the poses carry pathwise gradients, the mean is the estimate
            out = _merged(self, self.canonicalizer.action, x, poses, self.elements_per_call, otherwise, kwargs,
                          "sum" if k == 1 else "mean")
            return (out, result) if return_canonicalization else out
        score = log_p / k
        score = score - score.detach()  # exactly 0, gradient ∇ log p(h_j|x) / k
        sums: list[list[torch.Tensor]] = []  # per tensor: Σ_j y_j, Σ_j c_j ⊥y_j, Σ_j c_j, Σ_j ⊥y_j (c_j: score terms)
        tree: Any = None
        for columns, leaves, tree in _pose_predictions(self, self.canonicalizer.action, x, poses,
                                                       self.elements_per_call, otherwise, kwargs):
            if not all(leaf.is_floating_point() for leaf in leaves):  # samples = 1: drawn labels, nothing to differentiate
                out = unflatten(tree, [leaf[0] for leaf in leaves])
                return (out, result) if return_canonicalization else out
            parts = []
            for leaf in leaves:
                c, y = _broadcast(score[:, columns], leaf), leaf.detach()
                parts.append([leaf.sum(dim=0), (c * y).sum(dim=0), c.sum(dim=0), y.sum(dim=0)])
            sums = parts if not sums else [[a + b for a, b in zip(old, new, strict=True)]
                                           for old, new in zip(sums, parts, strict=True)]
        estimates = []
        for total, score_y, score_sum, y_sum in sums:
            if k == 1:
                estimates.append(total + score_y)
            else:  # Σ_j c_j (y_j − b_j) with b_j = (Σ_i y_i − y_j) / (k − 1)
                estimates.append(total / k + (k / (k - 1)) * score_y - y_sum * (score_sum / (k - 1)))
        out = unflatten(tree, estimates)
        return (out, result) if return_canonicalization else out

    def expected(self, x: torch.Tensor, **kwargs: Any) -> Any:
        """The exact expectation ``Σ_h p(h|x) · h ⋆ p(h⁻¹·x)`` ``(B, *)`` for ``x: (B, *)``: all ``|G|`` poses,
        ``elements_per_call`` at a time; deterministic, exactly equivariant, and differentiable in the logits
        (the gradient the sampled estimate's surrogate estimates). Keyword arguments as for :meth:`forward`."""
        if self.order is None:
            raise ConfigError(f"{type(self.canonicalizer).__name__} draws {self.group} poses from a continuous "
                              "distribution (or, for S(n), one over n! permutations), which has no expectation to "
                              "sum here: average forward over many samples (e.g. samples=64) instead")
        poses, weights = self.canonicalizer.pose_distribution(x, self._canonicalize(x, kwargs), self.temperature)
        return _weighted_sum(self, x, poses, weights, self.elements_per_call, "use forward with samples=1", kwargs)


def _check_generator(generator: object) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ConfigError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
    return generator


class _Averaging(nn.Module):
    """What :class:`GroupAveraged` and :class:`FrameAveraged` share: the predictor, the input and output actions,
    ``merge`` and ``keyword_actions``, and typed errors for inputs unlike the parameters."""

    group: Group

    def _configure(self, owner: str, predictor: nn.Module, group: Group, input: Action, output: OutputSpec,
                   merge: str, keyword_actions: Mapping[str, Action] | None) -> None:
        self.predictor = predictor
        self.input = input
        self.output = as_output_action(output)
        _check_actions(f"{owner}({group})", group, input=self.input, output=self.output)
        self.merge = _check_merge(merge, owner)
        self.keyword_actions = _keyword_actions(keyword_actions, group, owner)

    def __call__(self, x: torch.Tensor, **kwargs: Any) -> Any:  # a DeviceError / DTypeError for x unlike the parameters
        return call_with_typed_errors(self, super().__call__, x, **kwargs)

    def _average(self, x: torch.Tensor, poses: torch.Tensor, elements_per_call: int | None,
                 kwargs: Mapping[str, Any]) -> Any:
        """The predictions at ``poses (B, k, *)``, mapped back and merged by ``merge`` (floating predictions
        required unless it is the mean)."""
        otherwise = None if self.merge == "mean" else "use merge='mean'"
        return _merged(self, self.input, x, poses, elements_per_call, otherwise, kwargs, self.merge)


class GroupAveraged(_Averaging):
    """``f(x) = mean_k g_k ⋆ p(g_k⁻¹·x)``: the |G|-pass symmetrisation baseline.

    All ``|G|`` copies of the batch go through ``predictor`` as one batch of
    ``B·|G|`` (or ``elements_per_call`` group elements at a time, ``elements_per_call·B`` copies, to bound memory).

    Args:
        predictor: any module.
        group: a finite group with indexed elements (C(n), D(n), Octahedral()), or its name (``"C8"``);
            continuous groups need frame averaging.
        input: how the group acts on inputs; default :class:`~equicanon.actions.Image`.
        output: how it acts on predictions; default :class:`~equicanon.actions.Trivial`
            (invariant logits are averaged); dense outputs are mapped back before averaging. Structured
            predictions (tuple, dict, dataclass): one action for all their tensors, or a dict / list of actions,
            one per part (:class:`~equicanon.actions.Structured`); each tensor is merged on its own.
        elements_per_call: group elements per predictor call, each moving the whole batch
            (``None``: all ``|G|`` at once).
        merge: how the mapped predictions of the ``|G|`` copies combine, tensor by tensor (as test-time
            augmentation libraries offer): ``"mean"`` (default), ``"softmax"`` (the mean of the softmax over the
            last axis: probabilities), ``"geometric"`` (the softmax of the mean log-softmax: the normalised
            geometric mean of the probabilities) or ``"max"`` (elementwise). Each is invariant (equivariant)
            because the copies of ``g·x`` are those of ``x`` in another order.
        keyword_actions: ``{name: action}`` for keyword arguments of the predictor that live on the input grid;
            they are moved with every copy. Other per-input tensors given to :meth:`forward` are repeated for
            the copies; other values are passed as they are.
    """

    def __init__(self, predictor: nn.Module, group: Group | str, *, input: Action | None = None,
                 output: OutputSpec = None, elements_per_call: int | None = None, merge: str = "mean",
                 keyword_actions: Mapping[str, Action] | None = None) -> None:
        super().__init__()
        _check_module(predictor, "predictor")
        group = as_group(group, where=lambda g: g.is_indexed, what="GroupAveraged: group",
                         expected="a finite group to average over (C(n), D(n), Octahedral()); for continuous "
                                  "groups use FrameAveraged or a canonicalizer")
        self.group: FiniteGroup = cast(FiniteGroup, group)  # is_indexed: elements 0..|G|-1
        self._configure("GroupAveraged", predictor, group, Image(group) if input is None else input, output, merge,
                        keyword_actions)
        self.elements_per_call = (None if elements_per_call is None
                                  else check_positive_int(elements_per_call, "elements_per_call"))

    def forward(self, x: torch.Tensor, **kwargs: Any) -> Any:
        """The predictor over all transformed copies of ``x: (B, *)``, mapped back and merged (``merge``).
        Keyword arguments go to the predictor (see ``keyword_actions``)."""
        n = self.group.order
        every = torch.arange(n, device=x.device).expand(x.shape[0], n)  # element-major copies, as for k poses
        return self._average(x, every, self.elements_per_call, kwargs)


def _check_merge(merge: object, owner: str) -> str:
    if merge not in MERGES:
        raise ConfigError(f"{owner}: merge must be one of {', '.join(map(repr, MERGES))}, got {merge!r}")
    return str(merge)


def pca_frames(points: torch.Tensor, group: Group, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Frames of Puny et al. (2022) from principal axes: ``(B, K, 3, 3)`` orthogonal matrices.

    ``mask (B, N)`` bool (True: a real point) restricts the mean and the covariance to the real points, so
    padding (any amount, any content) does not change the frames.

    The covariance of the centred points moves as ``Q C Qᵀ``, so its eigenvectors
    move with ``Q`` up to their signs; all sign choices are kept (``K = 8`` for O(3)
    and E(3)), or those with ``det = +1`` (``K = 4`` for SO(3) and SE(3)). Exact
    when the three eigenvalues are distinct; near-equal eigenvalues make the
    frames, and the averaged prediction, unstable.
    """
    centred = points - masked_mean(points, mask, keepdim=True)
    if mask is not None:
        centred = centred * mask[..., None].to(points.dtype)  # padded rows add nothing to the covariance
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


class FrameAveraged(_Averaging):
    """Frame averaging (Puny et al., 2022) over PCA frames: ``f(x) = mean_F F ⋆ p(F⁻¹·x)``.

    The |G|-averaging baseline is impossible for continuous groups; averaging over
    the 4 (SO(3), SE(3)) or 8 (O(3), E(3)) frames of the input's principal axes is
    the standard replacement. All frames go through ``predictor`` as one batch.

    Args:
        predictor: any module on point clouds ``(B, N, 3)`` (or particles ``(B, N, 6+k)``).
        group: SO3(), O3(), SE3() or E3() (or its name); rigid groups also centre the points.
        input: how the group acts on inputs: :class:`~equicanon.actions.Points` (default)
            or :class:`~equicanon.actions.Particles`.
        output: how it acts on predictions (default :class:`~equicanon.actions.Trivial`); one per part of a
            structured prediction, as for :class:`GroupAveraged`.
        merge, keyword_actions: as for :class:`GroupAveraged`, over the frames.
    """

    def __init__(self, predictor: nn.Module, group: Group | str, *, input: Action | None = None,
                 output: OutputSpec = None, merge: str = "mean",
                 keyword_actions: Mapping[str, Action] | None = None) -> None:
        super().__init__()
        from .actions import Points

        _check_module(predictor, "predictor")
        group = as_group(group, where=lambda g: g.dim == 3 and not g.is_finite, what="FrameAveraged: group",
                         expected="a continuous 3-D group for PCA frames of points: SO3, O3, SE3 or E3")
        self.group = group
        self._configure("FrameAveraged", predictor, group, Points(group) if input is None else input, output, merge,
                        keyword_actions)

    def frame_poses(self, positions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The group elements ``(B, K, *)`` the predictions are averaged over: the PCA frames of ``positions
        (B, N, 3)`` (:func:`pca_frames`; ``mask (B, N)`` as in :meth:`forward`), with the centre of the real
        points as translation for rigid groups; the predictor sees ``F⁻¹·x`` for each frame ``F``.

        Raises:
            ShapeError, DTypeError: ``positions`` is not ``(B, N, 3)`` floating point, or a bad ``mask``.
            InputValueError: the covariance cannot be diagonalised (NaN or Inf in ``positions``).
        """
        check_shape(positions, "B N D", name="positions", D=3)
        check_floating(positions, "positions")
        return self._frame_poses(positions, check_mask(mask, positions))

    def _frame_poses(self, positions: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """:meth:`frame_poses` of checked inputs."""
        try:
            frames = pca_frames(positions, self.group, mask)  # (B, K, 3, 3)
        except torch.linalg.LinAlgError as e:  # eigh reports this itself (no extra host sync on the good path)
            raise InputValueError(f"FrameAveraged: the covariance of the points could not be diagonalised ({e}); "
                                  "the input holds NaN or Inf") from e
        b, k = frames.shape[:2]
        rot = frames.reshape(b * k, 3, 3)
        if self.group.has_translations:
            centre = masked_mean(positions, mask).repeat_interleave(k, dim=0)
            elements = cast(RigidGroup, self.group).from_parts(rot, centre)
        else:
            elements = rot
        return elements.reshape(b, k, *elements.shape[1:])

    def forward(self, x: torch.Tensor, *, mask: torch.Tensor | None = None, **kwargs: Any) -> Any:
        """The predictor over the PCA frames of ``x: (B, N, 3 + …)``, mapped back and merged (``merge``).
        Keyword arguments go to the predictor (see ``keyword_actions``).

        ``mask``: ``(B, N)`` bool, True for the real points of a padded batch (:func:`equicanon.data.pad_sets`):
        the frames and the centre come from the real points only, and the predictor receives ``mask=`` too (it
        must ignore the padded rows for the prediction not to depend on the padding)."""
        sizes = check_shape(x, "B N F", name="points")
        if sizes["N"] < 1 or sizes["F"] < 3:
            raise ShapeError(f"points: expected (B, N, 3 + k) with N >= 1 points, got shape {format_shape(x.shape)}")
        check_floating(x, "points")
        if mask is not None:
            mask = check_mask(mask, x)
            kwargs = {**kwargs, "mask": mask}
        return self._average(x, self._frame_poses(x[..., :3], mask), None, kwargs)
