"""The one training step and the one training loop, in plain torch (no Lightning needed).

:func:`step` computes the loss of one batch for a canonicalized model, a canonicalizer alone or
a plain model: the task loss, the canonicalization prior (Mondal et al., 2023) and the contrastive
term (EquiOptAdapt), each with its weight. By default it first moves the batch by random elements
``g`` of the canonicalizer's group and aims the prior at ``g`` (``transform="group"``): for upright
training data ``pose(g·x) = g`` is what an equivariant canonicalizer must give, and where
equivariance is only approximate (45° turns of C(8) interpolate) this is what teaches the poses
of rotated inputs. :func:`fit` runs Adam (or any optimiser) over :func:`step`;
:func:`~equicanon.adapt_pretrained`, the Lightning module, the demo and the experiments all use them.

    >>> import torch, equicanon as ec
    >>> from equicanon.training import fit, step
    >>> canon = ec.canonicalizers.create("group_conv", group="C4", in_channels=1, hidden=4)
    >>> model = ec.Canonicalized(ec.models.SmallCNN(classes=3, width=4), canon)
    >>> x, y = torch.rand(8, 1, 12, 12), torch.randint(0, 3, (8,))
    >>> out = step(model, (x, y), prior_weight=100.0, generator=torch.Generator().manual_seed(0))
    >>> sorted(out.terms), out.loss.shape
    (['prior', 'task'], torch.Size([]))
    >>> logs = fit(model, (x, y), steps=2, batch_size=4, prior_weight=100.0)
    >>> len(logs), sorted(logs[0])
    (2, ['loss', 'prior', 'task'])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from ..actions import Action, Image, Trivial
from ..adapt import Canonicalized
from ..canonicalizers.base import Canonicalization, Canonicalizer
from ..canonicalizers.functional import nearest_element
from ..errors import (
    ConfigError,
    DTypeError,
    GroupMismatchError,
    InputValueError,
    ShapeError,
    check_choice,
    check_number,
    check_positive_int,
)
from ..groups import O2, SO2, FiniteGroup, Group

__all__ = ["TRANSFORMS", "auto_transform", "StepOutput", "step", "fit", "batches", "draw_elements", "move_batch",
           "move_keywords", "split_batch", "task_loss_fn"]

#: values of ``transform``: "auto" is "angle" for images, "group" for other inputs (see :func:`auto_transform`)
TRANSFORMS = ("auto", "group", "angle")


def auto_transform(action: Action | None, output: Action | None = None) -> str | None:
    """What ``transform="auto"`` means for inputs moved by ``action`` and targets moved by ``output``.

    ``"angle"`` for images with invariant targets (class labels; ``output`` ``None`` or
    :class:`~equicanon.actions.Trivial`): images in the wild are turned by any angle, so the batch is turned
    by uniform continuous angles and the prior aims at the nearest element. ``"group"`` (random group
    elements, which dense targets such as masks follow exactly) otherwise; ``None`` without a group.
    """
    if action is None or action.group is None:
        return None
    return "angle" if isinstance(action, Image) and _invariant(output) else "group"


def _invariant(output: Action | None) -> bool:
    """Whether targets stay as they are when the inputs move (no output action, or Trivial: class labels)."""
    return output is None or isinstance(output, Trivial)


Batch = Any
Data = torch.Tensor | tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, Any, Any] | Iterable[Any]
TaskLoss = str | Callable[[Any, Any], torch.Tensor] | None


@dataclass
class StepOutput:
    """What :func:`step` computed for one batch.

    Attributes:
        loss: the weighted sum, a 0-dim tensor with its graph (call ``loss.backward()``).
        terms: the unweighted terms that were computed, detached: ``task``, ``prior``, ``contrastive``.
        result: the :class:`~equicanon.canonicalizers.Canonicalization` of the (moved) batch, if any.
        prediction: the model's prediction on the (moved) batch, if the predictor ran.
        target: the group elements the batch was moved by (the prior's target), if it was moved.
    """

    loss: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    result: Canonicalization | None = None
    prediction: Any = None
    target: torch.Tensor | None = None


def _mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if prediction.shape != target.shape:
        raise ShapeError(f"regression: predictions of shape {tuple(prediction.shape)} and targets of shape "
                         f"{tuple(target.shape)} differ")
    return F.mse_loss(prediction, target.to(prediction.dtype))


_LOSSES: dict[str, Callable[[Any, Any], torch.Tensor]] = {"cross_entropy": F.cross_entropy, "mse": _mse}


def task_loss_fn(task_loss: TaskLoss) -> Callable[[Any, Any], torch.Tensor]:
    """The task loss a name stands for: ``None`` or ``"cross_entropy"`` (logits ``(B, K)``, labels ``(B,)``),
    ``"mse"`` (equal shapes), or a callable ``loss(prediction, target) -> 0-dim tensor`` returned as it is."""
    if task_loss is None:
        return F.cross_entropy
    if callable(task_loss):
        return task_loss
    return _LOSSES[check_choice(task_loss, _LOSSES, "task_loss")]


def _parts(model: nn.Module) -> tuple[Canonicalizer | None, Canonicalized | None]:
    if isinstance(model, Canonicalized):
        return model.canonicalizer, model
    if isinstance(model, Canonicalizer):
        return model, None
    return None, None


def draw_elements(group: Group, batch: int, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """``batch`` random elements of ``group``, drawn on the CPU from ``generator`` (so a seeded run draws the
    same on any device) and moved to ``like``'s device; matrix elements get ``like``'s floating dtype."""
    g = group.sample(batch, generator=generator).to(like.device)
    return g.to(like.dtype) if g.is_floating_point() and like.is_floating_point() else g


def move_batch(transform: str, action: Action, x: torch.Tensor, generator: torch.Generator | None, *,
               shard: tuple[int, int] = (0, 1), mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(g·x, target)`` for random elements: ``"group"`` draws ``g`` from ``action``'s group (target ``g``);
    ``"angle"`` (planar groups) turns by uniform continuous angles, reflected at random if the group has
    reflections, and aims at the group's element nearest to each turn (itself, for SO2/O2).

    ``shard = (rank, world)``: draw for the global batch of ``world`` processes and keep this rank's share
    (global positions ``rank, rank + world, ...``, the layout of a ``DistributedSampler``), so that DDP
    draws exactly what one process with the global batch would. ``mask``: the padding mask ``(B, N)`` of point
    sets, given to actions that take one (their padded rows stay as they are).
    """
    group = action.group
    if group is None:
        raise ConfigError(f"transform={transform!r} needs a group to draw elements from, but {action!r} has none")
    rank, world = shard
    if transform == "group":
        g = draw_elements(group, x.shape[0] * world, generator, x)[rank::world]
        return action.act(g, x, mask), g
    if group.dim != 2:
        raise ConfigError(f"transform='angle' turns images by continuous angles: it needs a planar group "
                          f"(C(n), D(n), SO2, O2), got {group!r}")
    continuous = O2() if group.has_reflections else SO2()
    like = x if x.is_floating_point() else x.float()
    if group.has_reflections:
        m = draw_elements(continuous, x.shape[0] * world, generator, like)[rank::world]
    else:  # uniform angles in degrees, [0, 360)
        degrees = torch.rand(x.shape[0] * world, generator=generator)[rank::world] * 360
        m = SO2().from_angle(degrees, degrees=True).to(device=like.device, dtype=like.dtype)
    padding = getattr(action, "padding", "zeros")
    moved = Image(continuous, padding=padding)(m, x)
    target = m if not group.is_finite else nearest_element(cast(FiniteGroup, group), m)
    return moved, target


def split_batch(batch: Batch) -> tuple[torch.Tensor, Any, dict[str, Any]]:
    """``(x, y or None, keyword arguments)`` of a batch ``x``, ``(x,)``, ``(x, y)`` or ``(x, y, extra)``, where
    ``extra`` is a padding mask ``(B, N)`` (passed as ``mask=``) or a dict of the model's keyword arguments."""
    if isinstance(batch, torch.Tensor):
        return batch, None, {}
    if isinstance(batch, (tuple, list)) and len(batch) in (1, 2, 3) and isinstance(batch[0], torch.Tensor):
        y = batch[1] if len(batch) > 1 else None
        return batch[0], y, _keywords(batch[2]) if len(batch) == 3 else {}
    raise DTypeError(f"batch: expected a tensor x, a pair (x, y) or a triple (x, y, mask or keyword dict), got "
                     f"{type(batch).__name__}" + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""))


def _keywords(extra: Any) -> dict[str, Any]:
    """The model's keyword arguments from a batch's third entry: a mask tensor or a dict of them."""
    if isinstance(extra, torch.Tensor):
        return {"mask": extra}
    if isinstance(extra, Mapping) and all(isinstance(k, str) for k in extra):
        return dict(extra)
    raise DTypeError(f"batch: the third entry must be a padding mask (B, N) or a dict of the model's keyword "
                     f"arguments, got {type(extra).__name__}")


def move_keywords(model: Canonicalized | None, kwargs: dict[str, Any], transform: str, g: torch.Tensor
                   ) -> dict[str, Any]:
    """The keyword arguments of a batch moved with ``x`` by ``g``: those the model declares in
    ``keyword_actions`` (grid-aligned side inputs); the others (padding masks, per-input values) do not move."""
    moving = [name for name in kwargs if model is not None and name in model.keyword_actions]
    if not moving:
        return kwargs
    if transform != "group":
        raise ConfigError(f"transform={transform!r} moves the inputs by turns that the keyword arguments "
                          f"{moving} (keyword_actions) cannot follow exactly; use transform='group'")
    assert model is not None
    return {**kwargs, **{name: model.keyword_actions[name](g, kwargs[name]) for name in moving}}


def _canonicalize(canon: Canonicalizer, x: torch.Tensor, kwargs: Mapping[str, Any]) -> Canonicalization:
    """``canon(x)``, with the batch's padding mask where the canonicalizer takes one."""
    mask = kwargs.get("mask")
    return canon(x, mask=mask) if mask is not None and canon.accepts_mask else canon(x)


def step(model: nn.Module, batch: Batch, *, task_loss: TaskLoss = None, prior_weight: float = 0.0,
         contrastive_weight: float = 0.0, transform: str | None = "auto", action: Action | None = None,
         generator: torch.Generator | None = None, shard: tuple[int, int] = (0, 1),
         teacher: Canonicalizer | None = None) -> StepOutput:
    """The loss of one batch: ``task + prior_weight · prior + contrastive_weight · contrastive``.

    Args:
        model: an :class:`~equicanon.Canonicalized` model (with labels: task loss and regularizers; without:
            regularizers only, the predictor is not run), a
            :class:`~equicanon.canonicalizers.Canonicalizer` alone (regularizers only), or a plain module
            (task loss only).
        batch: ``x``, ``(x, y)`` or ``(x, y, extra)``; ``x`` e.g. images ``(B, C, H, W)``, ``y`` labels ``(B,)``
            or targets that move with the model's output action (dense masks, vectors), or ``None``; ``extra`` a
            padding mask ``(B, N)`` bool of variable-size point sets (passed as ``mask=`` to the model, and to
            the canonicalizer where it takes one) or a dict of the model's keyword arguments (those in
            ``keyword_actions`` move with ``x``).
        task_loss: ``None``/``"cross_entropy"``, ``"mse"`` or a callable ``loss(prediction, y)``.
        prior_weight: weight of the canonicalization prior (0: not computed).
        contrastive_weight: weight of the canonicalizer's contrastive loss (0: not computed).
        transform: move the batch before the loss: ``"group"`` by random elements ``g`` of the group, the
            prior aimed at ``g`` and ``y`` moved by the output action (``y ↦ g ⋆ y``); ``"angle"`` by uniform
            continuous angles, the prior aimed at the nearest group element (planar groups); ``None``: the
            batch as given; ``"auto"`` (default): ``"angle"`` for images, ``"group"`` for other inputs moved by a
            group (a canonicalizer's, or ``action``'s), else ``None`` (:func:`auto_transform`).
        action: how the group moves inputs (default: the canonicalizer's action); lets ``transform`` move the
            inputs of a plain model (rotation augmentation).
        generator: CPU generator the elements are drawn from (seed it for reproducible runs).
        shard: ``(rank, world)`` under data parallelism: see :func:`move_batch`.
        teacher: the model-driven prior: a canonicalizer of the same finite group (e.g.
            :class:`~equicanon.canonicalizers.TestTime`, which scores every pose with the frozen predictor);
            the prior is then the cross-entropy of the model's logits to the teacher's pose distribution
            ``softmax(teacher logits)`` on the (moved) batch, instead of the identity or the moving element.
            The teacher's poses are equivariant, so the batch need not be upright.

    Returns:
        :class:`StepOutput`; ``loss.backward()`` is left to the caller.

    Raises:
        ConfigError: nothing to compute (no labels and no weighted regularizer), a contrastive weight for a
            canonicalizer without a contrastive loss, or a transform without a group.
    """
    prior_weight = check_number(prior_weight, "prior_weight", minimum=0.0)
    contrastive_weight = check_number(contrastive_weight, "contrastive_weight", minimum=0.0)
    if transform is not None:
        check_choice(transform, TRANSFORMS, "transform")
    canon, wrapped = _parts(model)
    x, y, kwargs = split_batch(batch)
    if canon is None and (prior_weight > 0 or contrastive_weight > 0):
        raise ConfigError(f"prior_weight and contrastive_weight need a canonicalizer; model is a plain "
                          f"{type(model).__name__}")
    if contrastive_weight > 0 and canon is not None and not canon.has_contrastive_loss:
        raise ConfigError(f"contrastive_weight > 0, but {type(canon).__name__} has no contrastive loss")
    predicts = y is not None and (wrapped is not None or canon is None)
    if not predicts and prior_weight == 0 and contrastive_weight == 0:
        raise ConfigError("nothing to compute: the batch has no labels y and prior_weight and contrastive_weight "
                          "are 0")
    mover = action if action is not None else (canon.action if canon is not None else None)
    output = wrapped.output if wrapped is not None else None
    if transform == "auto":
        transform = auto_transform(mover, output)
    if transform == "angle" and y is not None and not _invariant(output):
        raise ConfigError(f"transform='angle' turns the inputs by continuous angles, which targets moved by "
                          f"{output!r} cannot follow; use transform='group' (exact group elements) or 'auto'")
    target = None
    if transform is not None:
        if mover is None:
            raise ConfigError(f"transform={transform!r} needs a group: use a canonicalized model or pass action")
        x, target = move_batch(transform, mover, x, generator, shard=shard, mask=kwargs.get("mask"))
        kwargs = move_keywords(wrapped, kwargs, transform, target)
        if y is not None and wrapped is not None:
            y = wrapped.output(target, y)
    terms: dict[str, torch.Tensor] = {}
    loss: torch.Tensor | float = 0.0
    result: Canonicalization | None = None
    prediction: Any = None
    if predicts:
        if wrapped is not None:
            prediction, result = wrapped(x, return_canonicalization=True, **kwargs)
        else:
            prediction = model(x, **kwargs)
        loss = task_loss_fn(task_loss)(prediction, y)
        terms["task"] = loss
    elif canon is not None:
        result = _canonicalize(canon, x, kwargs)
    if teacher is not None and prior_weight > 0 and result is not None:
        target = teacher_distribution(teacher, x, canon)
    if canon is not None and result is not None:
        loss, regularizers = canon.add_regularizers(loss, result, prior_weight=prior_weight,
                                                    contrastive_weight=contrastive_weight, target=target)
        terms.update(regularizers)
    assert isinstance(loss, torch.Tensor)  # a task loss or a weighted regularizer was computed (checked above)
    return StepOutput(loss, {k: v.detach() for k, v in terms.items()}, result, prediction, target)


def teacher_distribution(teacher: Canonicalizer, x: torch.Tensor, student: Canonicalizer | None = None) -> torch.Tensor:
    """The model-driven prior's target: ``softmax`` of ``teacher``'s logits on ``x``, ``(B, |G|)``, without
    gradients; a :class:`ConfigError` where the teacher has no logits or its group is not the student's."""
    if not isinstance(teacher, Canonicalizer):
        raise ConfigError(f"teacher must be a canonicalizer (e.g. ec.canonicalizers.TestTime), got {type(teacher).__name__}")
    if student is not None and teacher.group != student.group:
        raise GroupMismatchError(f"the teacher's group {teacher.group} is not the canonicalizer's {student.group}")
    with torch.no_grad():
        logits = teacher(x).logits
    if logits is None:
        raise ConfigError(f"the teacher {type(teacher).__name__} gives no logits: the model-driven prior needs a pose "
                          "distribution over a finite group (TestTime, GroupConv or Contrastive on C(n) / D(n))")
    return logits.float().softmax(dim=-1)


def _index_keywords(kwargs: dict[str, Any], idx: torch.Tensor, count: int) -> dict[str, Any]:
    """The rows ``idx`` of every keyword tensor with ``count`` rows (one per input); other values as they are."""
    return {k: v[idx.to(v.device)] if isinstance(v, torch.Tensor) and v.dim() > 0 and len(v) == count else v
            for k, v in kwargs.items()}


def batches(data: Data, batch_size: int, generator: torch.Generator
            ) -> Iterator[tuple[torch.Tensor, Any, dict[str, Any]]]:
    """Endless ``(x, y or None, keyword arguments)`` batches: random draws (with replacement) of ``batch_size``
    from a tensor ``(N, *)``, a pair ``(inputs (N, *), labels (N, *))`` or a triple ``(inputs, labels or None,
    extra)`` (``extra``: padding masks ``(N, M)`` or a dict of per-input keyword tensors ``(N, *)``), or an
    iterable of batches ``x``, ``(x, y)`` or ``(x, y, extra)`` cycled through."""
    if isinstance(data, torch.Tensor) or (isinstance(data, tuple) and len(data) in (2, 3)
                                          and isinstance(data[0], torch.Tensor)
                                          and (data[1] is None or isinstance(data[1], torch.Tensor))
                                          and (len(data) == 2 or isinstance(data[2], (torch.Tensor, Mapping)))):
        x, y, kwargs = split_batch(data)
        if y is not None and len(y) != len(x):
            raise ConfigError(f"data: {len(x)} inputs but {len(y)} labels")
        if len(x) == 0:
            raise ConfigError("data: an empty tensor; give at least one input")
        while True:
            idx = torch.randint(len(x), (batch_size,), generator=generator).to(x.device)
            yield x[idx], (None if y is None else y[idx]), _index_keywords(kwargs, idx, len(x))
    if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise DTypeError(f"data: expected a tensor (N, *), a pair (inputs, labels) or an iterable of batches "
                         f"(e.g. a DataLoader), got {type(data).__name__}")
    while True:
        empty = True
        for item in data:
            empty = False
            if isinstance(item, torch.Tensor):
                yield item, None, {}
            elif isinstance(item, (tuple, list)) and len(item) >= 1 and isinstance(item[0], torch.Tensor):
                y = item[1] if len(item) > 1 and isinstance(item[1], torch.Tensor) else None
                yield item[0], y, (_keywords(item[2]) if len(item) > 2 else {})
            else:
                raise DTypeError(f"data: a batch must be a tensor or a tuple (inputs, labels), got {type(item).__name__}")
        if empty:
            raise ConfigError("data: the iterable gave no batches")


def device_of(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (CPU for a module without parameters)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _frozen(module: nn.Module) -> bool:
    params = list(module.parameters())
    return bool(params) and not any(p.requires_grad for p in params)


def fit(model: nn.Module, data: Data, steps: int, *, optimizer: torch.optim.Optimizer | None = None, lr: float = 1e-3,
        lr_schedule: str | None = None, batch_size: int = 64, seed: int = 0,
        generator: torch.Generator | None = None, labels: bool | None = None,
        augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
        callback: Callable[[int, dict[str, float]], None] | None = None, task_loss: TaskLoss = None,
        prior_weight: float = 0.0, contrastive_weight: float = 0.0, transform: str | None = "auto",
        action: Action | None = None, teacher: Canonicalizer | None = None) -> list[dict[str, float]]:
    """Train ``model`` in place for ``steps`` optimiser steps of :func:`step`; returns the logged terms per step.

    Every step takes a batch from ``data``, moves it to the model's device, applies ``augment(x, generator)``
    if given (crops, colour jitter, continuous turns: anything the prior's target does not depend on), then
    :func:`step` (which moves it by ``transform``) and an optimiser step. The model is in training mode
    while it runs, except parts whose parameters are all frozen (``requires_grad=False``: their batch-norm
    statistics do not move), and in eval mode afterwards, also if a step fails.

    Args:
        model, task_loss, prior_weight, contrastive_weight, transform, action, teacher: see :func:`step`.
        data: a tensor ``(N, *)`` (inputs only), a pair ``(inputs, labels)`` (random batches of
            ``batch_size``), a triple ``(inputs, labels or None, masks (N, M) or {name: (N, *)})`` (padded point
            sets: :func:`equicanon.data.pad_sets`), or an iterable of batches ``x`` / ``(x, y)`` / ``(x, y, extra)``
            such as a ``DataLoader`` (cycled); see :func:`step`.
        steps: optimiser steps (0: nothing happens).
        optimizer: default ``Adam(lr)`` over the trainable parameters.
        lr: learning rate of the default optimiser, and the peak of ``lr_schedule``.
        lr_schedule: ``None`` (constant) or ``"onecycle"`` (warm-up over 15% of the steps, then cosine decay).
        batch_size: inputs per step when ``data`` is a tensor or a pair.
        seed: seeds the batches, ``augment`` and the transform's elements (one generator, in that order).
        generator: a CPU generator to draw from instead of a new one seeded by ``seed`` (so that several calls
            continue one random stream).
        labels: ``None`` use labels where the batches have them; ``True`` require them; ``False`` ignore them
            (regularizers only: the predictor is not run).
        callback: ``callback(step, {"loss": ..., "task": ..., "prior": ...})`` after every step.

    Raises:
        InputValueError: a loss that is not finite (NaN/Inf in the data, or a learning rate too high).
    """
    check_positive_int(steps, "steps", minimum=0)
    check_positive_int(batch_size, "batch_size")
    if lr_schedule is not None:
        check_choice(lr_schedule, ("onecycle",), "lr_schedule")
    if optimizer is None:
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ConfigError("the model has no trainable parameters")
        optimizer = torch.optim.Adam(params, lr=check_number(lr, "lr", minimum=0.0, strict=True))
    if steps == 0:
        return []
    schedule = None
    if lr_schedule == "onecycle":
        peaks = [group["lr"] for group in optimizer.param_groups]
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peaks, total_steps=steps, pct_start=0.15)
    if generator is None:
        generator = torch.Generator().manual_seed(seed)
    device = device_of(model)
    source = batches(data, batch_size, generator)
    logs: list[dict[str, float]] = []
    model.train()
    for part in model.modules():
        if part is not model and _frozen(part):
            part.eval()
    try:
        for i in range(steps):
            x, y, kwargs = next(source)
            x = x.to(device)
            kwargs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
            if labels and y is None:
                raise ConfigError("fine-tuning needs labels (labels=True): give data as (inputs, labels) or "
                                  "batches (x, y)")
            if augment is not None:
                x = augment(x, generator)
            y = None if (y is None or labels is False) else y.to(device)
            batch = (x, y, kwargs) if kwargs else (x if y is None else (x, y))
            out = step(model, batch, task_loss=task_loss, prior_weight=prior_weight,
                       contrastive_weight=contrastive_weight, transform=transform, action=action, generator=generator,
                       teacher=teacher)
            if not torch.isfinite(out.loss):
                raise InputValueError(f"step {i}: the loss is {float(out.loss.detach())}, not finite; check the data "
                                      "for NaN/Inf or lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
            log = {"loss": float(out.loss.detach()), **{k: float(v) for k, v in out.terms.items()}}
            logs.append(log)
            if callback is not None:
                callback(i, log)
    finally:
        model.eval()
    return logs
