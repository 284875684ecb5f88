"""Equivariant adaptation of a pretrained model in one call (Mondal et al., NeurIPS 2023).

A canonicalizer in front of a pretrained network makes it exactly invariant (or
equivariant), but hurts it when the canonical poses it picks are not the upright
ones the network was trained on. The *canonicalization prior* fixes that: on
training data, which is upright, pull the pose towards the identity. Only the
canonicalizer has to learn, and it needs no labels::

    model = ec.adapt_pretrained(resnet, ec.C(8), in_channels=3, data=upright_images, steps=500)
    logits = model(rotated_images)          # what resnet says on the upright images

:func:`adapt_pretrained` builds the paper's canonicalizer (a group-equivariant CNN that sees
the centre 80% of the image shrunk to 96 pixels; straight-through gradients; prior
weight 100) and trains it, either alone on unlabelled upright images (the pretrained
network is not touched, not even run) or jointly with fine-tuning on labelled ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .actions import Action
from .adapt import Canonicalized
from .canonicalizers import create
from .canonicalizers.base import Canonicalizer
from .canonicalizers.testtime import TestTime
from .errors import ConfigError, check_number
from .groups import Group, as_group
from .training.step import Data, TaskLoss, device_of, fit

__all__ = ["adapt_pretrained", "train_canonicalizer", "PAPER_VIEW"]

def train_canonicalizer(model: Canonicalized, data: Data, steps: int, *, finetune: bool = False,
                        task_loss: TaskLoss = None, prior_weight: float = 100.0, contrastive_weight: float = 0.0,
                        transform: str | None = "auto",
                        augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
                        lr: float = 1e-3, finetune_lr: float = 1e-4, batch_size: int = 64, seed: int = 0,
                        callback: Callable[[int, dict[str, float]], None] | None = None,
                        prior: str | Canonicalizer = "identity", reference: object = None) -> Canonicalized:
    """Train ``model``'s canonicalizer with the prior (and, with ``finetune``, its predictor too), in place.

    :func:`equicanon.training.fit` with Adam over two parameter groups: every step takes a batch of
    upright inputs ``x`` from ``data``, applies ``augment(x, generator)`` if given (crops, colour jitter:
    anything but the group's transformations), moves it by ``transform`` (default ``"auto"``: images are
    turned by uniform continuous angles and the prior aims at the element nearest each turn, the turn itself
    for SO2()/O2(); other inputs are moved by random group elements ``g`` and the prior aims at ``g``, since
    ``pose(g·x) = g`` when ``pose(x) = e``), then
    minimises

    - ``prior_weight · prior`` alone (the predictor is frozen, and never run), or
    - with ``finetune``: ``task_loss(model(x), y) + prior_weight · prior`` over the canonicalizer
      (learning rate ``lr``) and the predictor (``finetune_lr``); labels ``y`` move with the
      model's output action, so dense targets (masks) work.

    The moved copies matter where the canonicalizer is only approximately equivariant (rotations by
    45° interpolate; SO2()/O2() poses between the coarse network's angles): the prior on upright inputs
    alone (``transform=None``) does not teach the poses of rotated ones, and they drift. Continuous turns
    also teach a fine-tuned predictor the angles between the group's elements (``transform="group"``
    shows it only those).

    Args:
        model: a :class:`~equicanon.Canonicalized` model.
        data: upright inputs: a tensor ``(N, *)``, a pair ``(inputs (N, *), labels (N, *))``, or an
            iterable of batches ``x`` or ``(x, y)`` (e.g. a ``DataLoader``), cycled through.
        steps: optimisation steps (0: nothing is trained).
        finetune: also train the predictor (needs labels).
        task_loss: loss of ``finetune``: ``None`` (cross-entropy of logits ``(B, K)`` against labels ``(B,)``),
            ``"mse"`` or a callable ``loss(prediction, y)``.
        prior_weight: weight of the prior (paper: 100).
        contrastive_weight: weight of the canonicalizer's contrastive loss (for
            :class:`~equicanon.canonicalizers.Contrastive`, EquiOptAdapt; 0: not computed).
        transform: ``"auto"``, ``"angle"``, ``"group"`` or ``None``; see :func:`equicanon.training.step`.
        batch_size: inputs per step when ``data`` is a tensor.
        seed: seeds the batches, the group elements and ``augment``'s generator.
        callback: called as ``callback(step, {"loss": ..., "prior": ..., "task": ...})`` after every step.
        prior: ``"identity"`` (default; Mondal et al.): upright data's pose is the identity, so ``data`` must be
            upright. ``"model"``: the model-driven prior, which distils test-time canonicalization: every
            batch's target is ``softmax(−energy(g⁻¹·x) / τ)`` over the group, the frozen predictor's typicality
            of each turned copy (:class:`~equicanon.canonicalizers.TestTime` of ``model.predictor``, fitted to
            ``reference``), and the prior is the cross-entropy (KL divergence) to it; ``data`` may be in any
            orientation, and afterwards a pose costs one pass of the canonicalizer again. Or a teacher
            canonicalizer of the group (a ``TestTime`` built as you like, or any canonicalizer with logits).
            Finite groups (``C(n)``, ``D(n)``) only.
        reference: with ``prior="model"``: unlabelled upright inputs (a tensor or an iterable of batches) for the
            teacher's typicality; a few hundred suffice.

    Returns:
        ``model``, in eval mode.
    """
    if not isinstance(model, Canonicalized):
        raise ConfigError(f"model must be an ec.Canonicalized, got {type(model).__name__}")
    prior_weight = check_number(prior_weight, "prior_weight", minimum=0.0)
    contrastive_weight = check_number(contrastive_weight, "contrastive_weight", minimum=0.0)
    lr = check_number(lr, "lr", minimum=0.0, strict=True)
    finetune_lr = check_number(finetune_lr, "finetune_lr", minimum=0.0, strict=True)
    if not finetune and prior_weight == 0 and contrastive_weight == 0:
        raise ConfigError("prior_weight and contrastive_weight are 0 and finetune is off: nothing to train")
    canon, predictor = model.canonicalizer, model.predictor
    if not canon.trainable:
        raise ConfigError(f"{type(canon).__name__} has nothing to train (its poses come from a frozen model); use it "
                          "as it is, or distil it into a cheap canonicalizer: train_canonicalizer(Canonicalized(model, "
                          "GroupConv(...)), data, steps, prior=<this canonicalizer>)")
    teacher = _teacher(prior, reference, model)
    if teacher is not None and prior_weight == 0:
        raise ConfigError("prior_weight is 0, so the model-driven prior would not be used; give it a weight")
    if contrastive_weight > 0 and not canon.has_contrastive_loss:
        raise ConfigError(f"contrastive_weight > 0, but {type(canon).__name__} has no contrastive loss")
    params: list[dict[str, Any]] = [{"params": [p for p in canon.parameters() if p.requires_grad], "lr": lr}]
    if finetune:
        params.append({"params": [p for p in predictor.parameters() if p.requires_grad], "lr": finetune_lr})
    if not any(group_["params"] for group_ in params):
        raise ConfigError("the model has no trainable parameters")
    fit(model, data, steps, optimizer=torch.optim.Adam(params), batch_size=batch_size, seed=seed,
        labels=bool(finetune), augment=augment, callback=callback, task_loss=task_loss, prior_weight=prior_weight,
        contrastive_weight=contrastive_weight, transform=transform, teacher=teacher)
    return model.eval()


PRIORS = ("identity", "model")


def _teacher(prior: str | Canonicalizer, reference: object, model: Canonicalized) -> Canonicalizer | None:
    """The model-driven prior's teacher for ``prior`` (``None`` for the identity prior)."""
    if isinstance(prior, Canonicalizer):
        if reference is not None:
            raise ConfigError("reference= is for prior='model'; the teacher you passed is already built")
        teacher = prior
    elif prior == "identity":
        if reference is not None:
            raise ConfigError("reference= is for prior='model' (the frozen predictor's typicality); the identity "
                              "prior takes upright data= only")
        return None
    elif prior == "model":
        if not model.group.is_indexed:
            raise ConfigError(f"prior='model' scores every element of a finite group; {model.group} is not one "
                              "(use C(n) or D(n))")
        if reference is None:
            raise ConfigError("prior='model' needs reference=: unlabelled upright inputs (a few hundred) whose "
                              "features the frozen predictor's typicality is measured against")
        teacher = TestTime(model.group, model.predictor, reference=reference, action=model.canonicalizer.action)
    else:
        raise ConfigError(f"prior must be 'identity', 'model' or a teacher canonicalizer, got {prior!r}")
    if teacher.group != model.group:
        raise ConfigError(f"the teacher's group {teacher.group} is not the model's {model.group}")
    return teacher


#: the paper's view of large pretrained inputs: the centre 80%, shrunk to at most 96 pixels (Mondal et al.)
PAPER_VIEW: dict[str, Any] = {"crop": 0.8, "resize": 96}


def adapt_pretrained(model: nn.Module, group: Group | str, *, in_channels: int = 3, output: Action | None = None,
                     canonicalizer: Canonicalizer | str = "group_conv", canonicalizer_args: dict[str, Any] | None = None,
                     data: Data | None = None, steps: int = 0, finetune: bool = False, task_loss: TaskLoss = None,
                     prior_weight: float = 100.0, contrastive_weight: float = 0.0, transform: str | None = "auto",
                     augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
                     lr: float = 1e-3, finetune_lr: float = 1e-4, batch_size: int = 64, seed: int = 0,
                     callback: Callable[[int, dict[str, float]], None] | None = None,
                     prior: str | Canonicalizer = "identity", reference: object = None) -> Canonicalized:
    """Make a pretrained image model equivariant to ``group``, keeping what it does on upright images.

    Wraps ``model`` as ``ec.Canonicalized(model, canonicalizer, output)``, placed on ``model``'s device.
    By default the canonicalizer is ``ec.canonicalizers.create("group_conv", group=group,
    in_channels=in_channels, crop=0.8, resize=96, **canonicalizer_args)``: the paper's
    group-equivariant CNN with its default (fast) network, looking at the centre 80% of the image
    shrunk to at most 96 pixels (:data:`PAPER_VIEW`); straight-through gradients. Then, if ``data`` is
    given, it trains it for ``steps`` with the canonicalization prior (:func:`train_canonicalizer`):
    alone on upright unlabelled images (``model`` is not changed, not even run), or with ``finetune``
    jointly with fine-tuning ``model`` on labelled ones (``model``'s weights change in place; pass
    ``copy.deepcopy(model)`` to keep the original).

    Args:
        model: the pretrained predictor, e.g. logits ``(B, K)`` of images ``(B, C, H, W)``.
        group: ``ec.C(n)``, ``ec.D(n)``, ``ec.SO2()``, ``ec.O2()`` or a name such as ``"C8"``.
        in_channels: image channels ``C``.
        output: how poses act on predictions: :class:`~equicanon.actions.Trivial` (default,
            class logits), :class:`~equicanon.actions.Image` / :class:`~equicanon.actions.Mask`
            for dense outputs, which are mapped back through the pose.
        canonicalizer: a registered canonicalizer name (``"group_conv"``, ``"contrastive"``) built with
            :func:`~equicanon.canonicalizers.create`, or a built :class:`~equicanon.canonicalizers.Canonicalizer`
            of ``group`` (then ``in_channels`` and ``canonicalizer_args`` are not used).
        canonicalizer_args: keyword arguments for ``create`` on top of the group, ``in_channels`` and
            :data:`PAPER_VIEW` (e.g. ``{"resize": 64}``, ``{"hidden": 16}``).
        data, steps, finetune, task_loss, prior_weight, contrastive_weight, transform, augment, lr,
            finetune_lr, batch_size, seed, callback, prior, reference: see :func:`train_canonicalizer`
            (``prior="model", reference=upright`` trains on ``data`` in any orientation).

    Returns:
        The :class:`~equicanon.Canonicalized` model, in eval mode: ``model(x)`` equals the
        pretrained prediction on ``x``'s canonical form, and ``model(x, return_canonicalization=True)``
        also returns the poses.

    Example:
        >>> import torch, equicanon as ec
        >>> pretrained = ec.models.resnet_small(classes=10, in_channels=1)
        >>> model = ec.adapt_pretrained(pretrained, "C4", in_channels=1, data=torch.rand(16, 1, 28, 28), steps=2)
        >>> model(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be an nn.Module (the pretrained predictor), got {type(model).__name__}")
    group = as_group(group)
    if isinstance(canonicalizer, str):
        args = {"group": group, "in_channels": in_channels, **PAPER_VIEW, **(canonicalizer_args or {})}
        canonicalizer = create(canonicalizer, **args)
    elif not isinstance(canonicalizer, Canonicalizer):
        raise ConfigError(f"canonicalizer must be a registered name or an equicanon Canonicalizer, "
                          f"got {type(canonicalizer).__name__}")
    elif canonicalizer_args:
        raise ConfigError("canonicalizer_args is for a canonicalizer given by name; this one is already built")
    elif canonicalizer.group != group:
        raise ConfigError(f"the canonicalizer's group {canonicalizer.group} is not {group}")
    device = device_of(model)
    adapted = Canonicalized(model, canonicalizer.to(device), output)
    if data is None:
        if steps:
            raise ConfigError(f"steps={steps} but no data: give upright inputs to train the canonicalizer on")
        return adapted.eval()
    return train_canonicalizer(adapted, data, steps, finetune=finetune, task_loss=task_loss, prior_weight=prior_weight,
                               contrastive_weight=contrastive_weight, transform=transform, augment=augment,
                               lr=lr, finetune_lr=finetune_lr, batch_size=batch_size, seed=seed, callback=callback,
                               prior=prior, reference=reference)
