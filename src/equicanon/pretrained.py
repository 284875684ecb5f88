"""Equivariant adaptation of a pretrained model in one call (Mondal et al., NeurIPS 2023).

A canonicalizer in front of a pretrained network makes it exactly invariant (or
equivariant), but hurts it when the canonical poses it picks are not the upright
ones the network was trained on. The *canonicalization prior* fixes that: on
training data, which is upright, pull the pose towards the identity. Only the
canonicalizer has to learn, and it needs no labels.

    >>> model = ec.adapt_pretrained(resnet, ec.C(8), in_channels=3, data=upright_images, steps=500)
    >>> logits = model(rotated_images)          # what resnet says on the upright images

:func:`adapt_pretrained` builds the paper's canonicalizer (a group-equivariant CNN that sees
the centre 80% of the image shrunk to 96 pixels; straight-through gradients; prior
weight 100) and trains it, either alone on unlabelled upright images (the pretrained
network is not touched, not even run) or jointly with fine-tuning on labelled ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .actions import Action
from .adapt import Canonicalized
from .canonicalizers import GroupConv
from .canonicalizers.base import Canonicalizer
from .errors import ConfigError, DTypeError, InputValueError, check_number, check_positive_int
from .groups import Group

__all__ = ["adapt_pretrained", "train_canonicalizer"]

Batch = tuple[torch.Tensor, torch.Tensor | None]
Data = torch.Tensor | tuple[torch.Tensor, torch.Tensor] | Iterable[Any]


def _device_of(module: nn.Module, fallback: torch.device) -> torch.device:
    for p in module.parameters():
        return p.device
    return fallback


def _batches(data: Data, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
    """Endless ``(x, y or None)`` batches: random draws from tensors, or an iterable cycled through."""
    if isinstance(data, torch.Tensor) or (isinstance(data, tuple) and len(data) == 2
                                          and all(isinstance(t, torch.Tensor) for t in data)):
        x, y = (data, None) if isinstance(data, torch.Tensor) else data
        if y is not None and len(y) != len(x):
            raise ConfigError(f"data: {len(x)} inputs but {len(y)} labels")
        if len(x) == 0:
            raise ConfigError("data: an empty tensor; give at least one upright input")
        while True:
            idx = torch.randint(len(x), (batch_size,), generator=generator).to(x.device)
            yield x[idx], (None if y is None else y[idx])
    if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise DTypeError(f"data: expected a tensor (N, C, H, W), a pair (inputs, labels) or an iterable of batches "
                         f"(e.g. a DataLoader), got {type(data).__name__}")
    while True:
        empty = True
        for item in data:
            empty = False
            if isinstance(item, torch.Tensor):
                yield item, None
            elif isinstance(item, (tuple, list)) and len(item) >= 1 and isinstance(item[0], torch.Tensor):
                yield item[0], (item[1] if len(item) > 1 and isinstance(item[1], torch.Tensor) else None)
            else:
                raise DTypeError(f"data: a batch must be a tensor or a tuple (inputs, labels), got {type(item).__name__}")
        if empty:
            raise ConfigError("data: the iterable gave no batches")


def train_canonicalizer(model: Canonicalized, data: Data, steps: int, *, finetune: bool = False,
                        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                        prior_weight: float = 100.0, contrastive_weight: float = 0.0, transform_inputs: bool = True,
                        augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
                        lr: float = 1e-3, finetune_lr: float = 1e-4, batch_size: int = 64, seed: int = 0,
                        callback: Callable[[int, dict[str, float]], None] | None = None) -> Canonicalized:
    """Train ``model``'s canonicalizer with the prior (and, with ``finetune``, its predictor too), in place.

    Every step takes a batch of upright inputs ``x`` from ``data``; applies ``augment(x, generator)``
    if given (crops, colour jitter: anything but the group's transformations); with
    ``transform_inputs`` moves each input by a random group element ``g`` (the prior's target
    becomes ``g``: ``pose(g·x) = g`` when ``pose(x) = e``); then minimises

    - ``prior_weight · prior`` alone (the predictor is frozen, and never run), or
    - with ``finetune``: ``loss(model(x), y) + prior_weight · prior`` over the canonicalizer
      (learning rate ``lr``) and the predictor (``finetune_lr``); labels ``y`` move with the
      model's output action, so dense targets (masks) work.

    ``transform_inputs`` matters where the canonicalizer is only approximately equivariant
    (rotations by 45° interpolate): the prior on upright inputs alone does not teach the poses
    of rotated ones, and they drift. For exact elements both forms are the same prior.

    Args:
        model: a :class:`~equicanon.Canonicalized` model.
        data: upright inputs: a tensor ``(N, *)``, a pair ``(inputs (N, *), labels (N, *))``, or an
            iterable of batches ``x`` or ``(x, y)`` (e.g. a ``DataLoader``), cycled through.
        steps: optimisation steps (0: nothing is trained).
        finetune: also train the predictor (needs labels).
        loss: task loss of ``finetune`` (default: cross-entropy of logits ``(B, K)`` against labels ``(B,)``).
        prior_weight: weight of the prior (paper: 100).
        contrastive_weight: weight of the canonicalizer's contrastive loss (for
            :class:`~equicanon.canonicalizers.Contrastive`, EquiOptAdapt; 0: not computed).
        batch_size: inputs per step when ``data`` is a tensor.
        seed: seeds the batches, the group elements and ``augment``'s generator.
        callback: called as ``callback(step, {"loss": ..., "prior": ..., "task": ...})`` after every step.

    Returns:
        ``model``, in eval mode.
    """
    if not isinstance(model, Canonicalized):
        raise ConfigError(f"model must be an ec.Canonicalized, got {type(model).__name__}")
    check_positive_int(steps, "steps", minimum=0)
    check_positive_int(batch_size, "batch_size")
    prior_weight = check_number(prior_weight, "prior_weight", minimum=0.0)
    contrastive_weight = check_number(contrastive_weight, "contrastive_weight", minimum=0.0)
    lr = check_number(lr, "lr", minimum=0.0, strict=True)
    finetune_lr = check_number(finetune_lr, "finetune_lr", minimum=0.0, strict=True)
    if not finetune and prior_weight == 0 and contrastive_weight == 0:
        raise ConfigError("prior_weight and contrastive_weight are 0 and finetune is off: nothing to train")
    canon, predictor = model.canonicalizer, model.predictor
    if contrastive_weight > 0 and not canon.has_contrastive_loss:
        raise ConfigError(f"contrastive_weight > 0, but {type(canon).__name__} has no contrastive loss")
    group, action = canon.group, canon.action
    task_loss = F.cross_entropy if loss is None else loss
    if steps == 0:
        return model.eval()
    gen = torch.Generator().manual_seed(seed)
    params: list[dict[str, Any]] = [{"params": [p for p in canon.parameters() if p.requires_grad], "lr": lr}]
    if finetune:
        params.append({"params": [p for p in predictor.parameters() if p.requires_grad], "lr": finetune_lr})
    if not any(group_["params"] for group_ in params):
        raise ConfigError("the model has no trainable parameters")
    optimizer = torch.optim.Adam(params)
    device = _device_of(canon, _device_of(predictor, torch.device("cpu")))
    canon.train()
    predictor.train(finetune)
    batches = _batches(data, batch_size, gen)
    try:
        for step in range(steps):
            x, y = next(batches)
            x = x.to(device)
            if finetune and y is None:
                raise ConfigError("finetune needs labels: give data as (inputs, labels) or batches (x, y)")
            if augment is not None:
                x = augment(x, gen)
            target = None
            if transform_inputs:
                target = group.sample(x.shape[0], generator=gen).to(device)
                target = target.to(x.dtype) if target.is_floating_point() else target
                x = action(target, x)
                if finetune and y is not None:
                    y = y.to(device)
                    y = model.output(target, y)
            terms: dict[str, torch.Tensor] = {}
            if finetune:
                assert y is not None
                out, res = model(x, return_canonicalization=True)
                terms["task"] = task_loss(out, y.to(device))
            else:
                res = canon(x)
            total, regularizers = canon.add_regularizers(terms.get("task", 0.0), res, prior_weight=prior_weight,
                                                         contrastive_weight=contrastive_weight, target=target)
            terms.update(regularizers)
            assert isinstance(total, torch.Tensor)
            if not torch.isfinite(total):
                raise InputValueError(f"step {step}: the loss is {float(total.detach())}, not finite; check the data for "
                                      "NaN/Inf or lower lr")
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            if callback is not None:
                callback(step, {"loss": float(total.detach()), **{k: float(v.detach()) for k, v in terms.items()}})
    finally:
        model.eval()
    return model


def adapt_pretrained(model: nn.Module, group: Group, *, in_channels: int = 3, output: Action | None = None,
                     canonicalizer: Canonicalizer | None = None, data: Data | None = None, steps: int = 0,
                     finetune: bool = False, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                     crop: float | None = 0.8, resize: int | None = 96, hidden: int = 8, layers: int = 3,
                     kernel_size: int = 5, pool: bool = True, prior_weight: float = 100.0, contrastive_weight: float = 0.0,
                     transform_inputs: bool = True,
                     augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
                     lr: float = 1e-3, finetune_lr: float = 1e-4, batch_size: int = 64, seed: int = 0,
                     callback: Callable[[int, dict[str, float]], None] | None = None) -> Canonicalized:
    """Make a pretrained image model equivariant to ``group``, keeping what it does on upright images.

    Wraps ``model`` as ``ec.Canonicalized(model, canonicalizer, output)`` with the paper's
    canonicalizer, :class:`~equicanon.canonicalizers.GroupConv` (``hidden``, ``layers``,
    ``kernel_size``, ``pool``; it sees the centre ``crop`` of the image shrunk to at most ``resize``
    pixels; straight-through gradients), placed on ``model``'s device. With the defaults it costs 7% of
    a ResNet-50's multiply-adds at 224 pixels for C(8), 2% for C(4) (counted with
    ``torch.utils.flop_counter``; without ``pool`` 27%). Then, if ``data`` is given, it trains
    it for ``steps`` with the canonicalization prior (:func:`train_canonicalizer`): alone on
    upright unlabelled images (``model`` is not changed), or with ``finetune`` jointly with
    fine-tuning ``model`` on labelled ones (``model``'s weights change in place; pass
    ``copy.deepcopy(model)`` to keep the original).

    Args:
        model: the pretrained predictor, e.g. logits ``(B, K)`` of images ``(B, C, H, W)``.
        group: ``ec.C(n)``, ``ec.D(n)``, ``ec.SO2()`` or ``ec.O2()``.
        in_channels: image channels ``C``.
        output: how poses act on predictions: :class:`~equicanon.actions.Trivial` (default,
            class logits), :class:`~equicanon.actions.Image` / :class:`~equicanon.actions.Mask`
            for dense outputs, which are mapped back through the pose.
        canonicalizer: use this canonicalizer instead of building a GroupConv (e.g. a
            :class:`~equicanon.canonicalizers.Contrastive`); the network arguments are then ignored.
        data, steps, finetune, loss, prior_weight, contrastive_weight, transform_inputs, augment, lr,
            finetune_lr, batch_size, seed, callback: see :func:`train_canonicalizer`.

    Returns:
        The :class:`~equicanon.Canonicalized` model, in eval mode: ``model(x)`` equals the
        pretrained prediction on ``x``'s canonical form, and ``model(x, return_canonicalization=True)``
        also returns the poses.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be an nn.Module (the pretrained predictor), got {type(model).__name__}")
    if not isinstance(group, Group):
        raise ConfigError(f"group must be an equicanon group such as ec.C(8), got {group!r}")
    if canonicalizer is None:
        canonicalizer = GroupConv(group, in_channels, hidden=hidden, layers=layers, kernel_size=kernel_size,
                                  crop=crop, resize=resize, pool=pool)
    elif not isinstance(canonicalizer, Canonicalizer):
        raise ConfigError(f"canonicalizer must be an equicanon Canonicalizer, got {type(canonicalizer).__name__}")
    elif canonicalizer.group != group:
        raise ConfigError(f"the canonicalizer's group {canonicalizer.group} is not {group}")
    device = _device_of(model, torch.device("cpu"))
    adapted = Canonicalized(model, canonicalizer.to(device), output)
    if data is None:
        if steps:
            raise ConfigError(f"steps={steps} but no data: give upright inputs to train the canonicalizer on")
        return adapted.eval()
    return train_canonicalizer(adapted, data, steps, finetune=finetune, loss=loss, prior_weight=prior_weight,
                               contrastive_weight=contrastive_weight, transform_inputs=transform_inputs, augment=augment,
                               lr=lr, finetune_lr=finetune_lr,
                               batch_size=batch_size, seed=seed, callback=callback)
