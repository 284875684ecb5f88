"""``CanonicalizationModule``: a LightningModule that trains a canonicalized model (or a plain one).

The loss is the task loss plus the canonicalization prior (Mondal et al., 2023) and
the contrastive term of optimisation-based canonicalizers (EquiOptAdapt), each with
its weight. Validation measures accuracy (or MSE) on the batch as given *and* on the
batch moved by random group elements, and for canonicalized models the identity
rate and pose agreement of :mod:`equicanon.metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from ..actions import Action, Trivial
from ..adapt import Canonicalized
from ..canonicalizers.base import Canonicalization, Canonicalizer
from ..errors import ConfigError, check_choice, check_number
from ..metrics import identity_rate, pose_agreement, pose_error
from .step import TRANSFORMS, auto_transform, draw_elements, move_keywords, split_batch, step, task_loss_fn

__all__ = ["CanonicalizationModule", "TASKS"]

TASKS = ("classification", "regression")


class CanonicalizationModule(pl.LightningModule):
    """Train and validate ``model`` with Lightning's ``Trainer``; batches are ``(x, y)``, or ``(x, y, mask)`` for
    padded point sets (``mask (B, N)`` bool goes to the model as ``mask=``; or a dict of its keyword arguments).

    Loss: ``task + prior_weight · canonicalizer.prior_loss + contrastive_weight ·
    canonicalizer.contrastive_loss`` (terms with weight 0 are not computed). Every term
    is logged as ``train/<term>`` with ``sync_dist=True``, so DDP averages them.

    Validation (and test) log, with ``stage`` ``val`` or ``test``:
    ``{stage}/loss`` (task loss on the batch as given), ``{stage}/acc_upright`` and
    ``{stage}/acc_transformed`` (``mse_…`` for regression), the latter on ``g·x`` for
    random ``g`` drawn from the action's group (a fixed seed per batch index, so epochs
    compare); for a :class:`~equicanon.Canonicalized` model also ``{stage}/identity_rate``
    (on ``x``) and ``{stage}/pose_agreement`` (``pose(g·x) == g pose(x)``). Regression
    targets move with the model's output action (``y ↦ g ⋆ y``); a plain model's targets
    are taken as invariant.

    Args:
        model: a :class:`~equicanon.Canonicalized` model, or any module mapping ``x`` to predictions.
        task: ``"classification"`` (logits ``(B, K)``, integer labels ``(B,)``, cross-entropy)
            or ``"regression"`` (predictions and targets of one shape, MSE).
        prior_weight: weight of the canonicalization prior (Canonicalized models only).
        contrastive_weight: weight of the contrastive loss (canonicalizers that have one,
            e.g. :class:`~equicanon.canonicalizers.Contrastive`).
        lr: Adam learning rate of the predictor (of the whole model if it is not Canonicalized).
        canonicalizer_lr: Adam learning rate of the canonicalizer (default: ``lr``).
        freeze_predictor: do not train the predictor (e.g. a pretrained network, Mondal et al.).
        freeze_canonicalizer: do not train the canonicalizer.
        val_action: how the group acts on inputs for the ``…_transformed`` metrics, e.g.
            ``ec.actions.Image(ec.C(4))``; default: the canonicalizer's action, and no
            transformed metrics for a plain model.
        val_seed: seed of the group elements drawn in validation.
        transform: how training batches are moved before the loss (:func:`equicanon.training.step`):
            ``"group"`` by random elements ``g`` of the group (of ``val_action``), the prior aimed at ``g``
            and regression targets moved with the output action; ``"angle"`` by continuous angles (planar
            groups), the prior aimed at the nearest element; ``None``: as given; ``"auto"`` (default):
            ``"angle"`` for a Canonicalized model of images, ``"group"`` for one of other inputs, ``None`` for a
            plain one (:func:`~equicanon.training.step.auto_transform`). For upright training data the
            moved prior teaches the poses of rotated inputs where equivariance is only approximate (45° steps
            of C(8)). The elements are drawn from a generator seeded by ``val_seed`` and the global step, for
            the global batch (each DDP rank keeps its share), so a resumed run and a run on ``n`` processes
            draw what one uninterrupted process draws.
        pose_atol: entry-wise tolerance of ``pose_agreement`` and ``identity_rate`` for matrix
            poses (continuous groups); for those the module also logs ``{stage}/pose_error_deg``,
            the mean angle between ``pose(g·x)`` and ``g pose(x)`` (:func:`~equicanon.metrics.pose_error`).

    Frozen parts get ``requires_grad = False``, are left out of the optimizer and stay in
    eval mode (their batch-norm statistics do not move). This changes the modules passed in.
    Parameters shared by the predictor and the canonicalizer belong to the predictor.
    """

    def __init__(self, model: Canonicalized | nn.Module, *, task: str = "classification", prior_weight: float = 0.0,
                 contrastive_weight: float = 0.0, lr: float = 1e-3, canonicalizer_lr: float | None = None,
                 freeze_predictor: bool = False, freeze_canonicalizer: bool = False,
                 val_action: Action | None = None, val_seed: int = 0, transform: str | None = "auto",
                 pose_atol: float = 1e-6) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model must be an nn.Module (e.g. ec.Canonicalized), got {type(model).__name__}")
        self.task = check_choice(task, TASKS, "task")
        self.prior_weight = check_number(prior_weight, "prior_weight", minimum=0.0)
        self.contrastive_weight = check_number(contrastive_weight, "contrastive_weight", minimum=0.0)
        self.lr = check_number(lr, "lr", minimum=0.0, strict=True)
        self.canonicalizer_lr = (self.lr if canonicalizer_lr is None
                                 else check_number(canonicalizer_lr, "canonicalizer_lr", minimum=0.0, strict=True))
        self.freeze_predictor = bool(freeze_predictor)
        self.freeze_canonicalizer = bool(freeze_canonicalizer)
        if isinstance(val_seed, bool) or not isinstance(val_seed, int):
            raise ConfigError(f"val_seed must be an integer, got {val_seed!r}")
        self.val_seed = val_seed
        self.pose_atol = check_number(pose_atol, "pose_atol", minimum=0.0)
        self.model = model
        canon = self.canonicalizer
        if canon is None:
            plain = f"model is a plain {type(model).__name__}, not ec.Canonicalized"
            if self.prior_weight > 0 or self.contrastive_weight > 0:
                raise ConfigError(f"prior_weight and contrastive_weight need a canonicalizer; {plain}")
            if self.freeze_canonicalizer or canonicalizer_lr is not None:
                raise ConfigError(f"freeze_canonicalizer and canonicalizer_lr need a canonicalizer; {plain}")
        elif self.contrastive_weight > 0 and not canon.has_contrastive_loss:
            raise ConfigError(f"contrastive_weight > 0, but {type(canon).__name__} has no contrastive loss; "
                              "use canonicalizers.Contrastive or set contrastive_weight=0")
        if self.freeze_predictor and (canon is None or self.freeze_canonicalizer):
            raise ConfigError("freeze_predictor and freeze_canonicalizer leave nothing to train; unfreeze one")
        if val_action is not None and not isinstance(val_action, Action):
            raise ConfigError(f"val_action must be an equicanon action, e.g. ec.actions.Image(ec.C(4)), "
                              f"got {type(val_action).__name__}")
        if val_action is None and canon is not None:
            val_action = canon.action
        if val_action is not None:
            if val_action.group is None:
                raise ConfigError(f"val_action {val_action!r} has no group to draw elements from")
            if canon is not None:
                canon.check_action(val_action, "val_action")
        self.val_action = val_action
        if transform is not None:
            check_choice(transform, TRANSFORMS, "transform")
        if transform == "auto":
            transform = auto_transform(model.canonicalizer.action, model.output) if isinstance(model, Canonicalized) \
                else None
        if transform is not None and val_action is None:
            raise ConfigError(f"transform={transform!r} needs a group to draw elements from: use a Canonicalized "
                              "model or pass val_action")
        self.transform = transform
        for part, frozen in ((self.predictor, self.freeze_predictor), (canon, self.freeze_canonicalizer)):
            if frozen and part is not None:
                part.requires_grad_(False)
                part.eval()
        self.save_hyperparameters(ignore=["model", "val_action"])

    @property
    def canonicalizer(self) -> Canonicalizer | None:
        """The model's canonicalizer (``None`` for a plain model)."""
        return self.model.canonicalizer if isinstance(self.model, Canonicalized) else None

    @property
    def predictor(self) -> nn.Module:
        """The predictor of a Canonicalized model, else the whole model."""
        return self.model.predictor if isinstance(self.model, Canonicalized) else self.model

    def _frozen(self) -> list[nn.Module]:
        parts: list[nn.Module] = []
        if self.freeze_predictor:
            parts.append(self.predictor)
        canon = self.canonicalizer
        if self.freeze_canonicalizer and canon is not None:
            parts.append(canon)
        return parts

    def train(self, mode: bool = True) -> CanonicalizationModule:
        """Set training mode; frozen parts stay in eval mode."""
        super().train(mode)
        if mode:
            for part in self._frozen():
                part.eval()
        return self

    def on_train_start(self) -> None:
        """Keep frozen parts in eval mode (the Trainer does not call ``train()`` itself)."""
        for part in self._frozen():
            part.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's prediction for ``x``."""
        return self.model(x)

    def _run(self, x: torch.Tensor, kwargs: dict[str, Any]) -> tuple[torch.Tensor, Canonicalization | None]:
        if isinstance(self.model, Canonicalized):
            out, res = self.model(x, return_canonicalization=True, **kwargs)
            return out, res
        return self.model(x, **kwargs), None

    def task_loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of logits ``(B, K)`` against labels ``(B,)``, or MSE of equal-shaped tensors."""
        return task_loss_fn(self._loss_name)(prediction, target)

    @property
    def _loss_name(self) -> str:
        return "cross_entropy" if self.task == "classification" else "mse"

    def _score(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.task == "classification":
            return (prediction.argmax(dim=1) == target).float().mean()
        return F.mse_loss(prediction, target.to(prediction.dtype))

    def _move(self, g: torch.Tensor, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(g·x, y)`` for classification, ``(g·x, g ⋆ y)`` for regression (``g`` from ``val_action``'s group);
        the padded rows of point sets (``mask``) stay as they are where the action takes a mask."""
        action = self.val_action
        assert action is not None  # checked in __init__
        output = self.model.output if isinstance(self.model, Canonicalized) else Trivial()
        return action.act(g, x, mask), (y if self.task == "classification" else output(g, y))

    def _draw(self, batch_size: int, seed: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """``batch_size`` random elements of ``val_action``'s group, drawn on the CPU from ``seed``."""
        group = self.val_action.group if self.val_action is not None else None
        assert group is not None  # checked in __init__
        return draw_elements(group, batch_size, torch.Generator().manual_seed(seed), torch.empty(0, device=device, dtype=dtype))

    def losses(self, batch: Sequence[Any]) -> dict[str, torch.Tensor]:
        """The loss terms of a batch (:func:`equicanon.training.step`): ``task``, ``prior`` and ``contrastive``
        when weighted, and ``loss`` (their weighted sum, with its graph).

        With ``transform``, the batch is first moved by random group elements (see the class docstring).
        """
        generator, shard = None, (0, 1)
        if self.transform is not None:
            if self._trainer is not None:
                shard = (self.trainer.global_rank, self.trainer.world_size)
            generator = torch.Generator().manual_seed((self.val_seed * 1_000_003 + self.global_step) * 4_099 + 1)
        out = step(self.model, batch, task_loss=self._loss_name, prior_weight=self.prior_weight,
                   contrastive_weight=self.contrastive_weight, transform=self.transform, action=self.val_action,
                   generator=generator, shard=shard)
        return {**out.terms, "loss": out.loss}

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> torch.Tensor:
        """The weighted loss of ``batch = (x, y)``; logs each term under ``train/``."""
        terms = self.losses(batch)
        size = batch[0].shape[0]
        for name, value in terms.items():
            self.log(f"train/{name}", value.detach(), sync_dist=True, batch_size=size, prog_bar=name == "loss")
        return terms["loss"]

    def _evaluate(self, batch: Sequence[Any], batch_idx: int, stage: str) -> dict[str, torch.Tensor]:
        x, y, kwargs = split_batch(batch)
        kind = "acc" if self.task == "classification" else "mse"
        prediction, res = self._run(x, kwargs)
        metrics = {f"{stage}/loss": self.task_loss(prediction, y), f"{stage}/{kind}_upright": self._score(prediction, y)}
        if res is not None:
            metrics[f"{stage}/identity_rate"] = identity_rate(res, atol=self.pose_atol)
        action = self.val_action
        if action is not None:
            g = self._draw(x.shape[0], self.val_seed * 1_000_003 + batch_idx, x.device, x.dtype)
            moved_x, moved_y = self._move(g, x, y, kwargs.get("mask"))
            wrapped = self.model if isinstance(self.model, Canonicalized) else None
            moved_prediction, moved_res = self._run(moved_x, move_keywords(wrapped, kwargs, "group", g))
            metrics[f"{stage}/{kind}_transformed"] = self._score(moved_prediction, moved_y)
            if res is not None and moved_res is not None:
                metrics[f"{stage}/pose_agreement"] = pose_agreement(res, moved_res, g, atol=self.pose_atol)
                if not res.group.is_finite:
                    metrics[f"{stage}/pose_error_deg"] = pose_error(res, moved_res, g).float()
        for name, value in metrics.items():
            self.log(name, value, sync_dist=True, batch_size=x.shape[0], prog_bar=name.endswith("_transformed"))
        return metrics

    def validation_step(self, batch: Sequence[Any], batch_idx: int) -> dict[str, torch.Tensor]:
        """Log validation metrics of ``batch = (x, y)`` (see the class docstring)."""
        return self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: Sequence[Any], batch_idx: int) -> dict[str, torch.Tensor]:
        """Log the validation metrics under ``test/``."""
        return self._evaluate(batch, batch_idx, "test")

    def param_groups(self) -> list[dict[str, Any]]:
        """Adam parameter groups: ``predictor`` (``lr``) and ``canonicalizer`` (``canonicalizer_lr``), trainable only."""
        seen: set[int] = set()
        groups: list[dict[str, Any]] = []
        canon = self.canonicalizer
        parts = [("predictor" if canon is not None else "model", self.predictor, self.lr)]
        if canon is not None:
            parts.append(("canonicalizer", canon, self.canonicalizer_lr))
        for name, part, lr in parts:
            params = [p for p in part.parameters() if p.requires_grad and id(p) not in seen]
            seen.update(id(p) for p in part.parameters())
            if params:
                groups.append({"params": params, "lr": lr, "name": name})
        if not groups:
            raise ConfigError("the model has no trainable parameters")
        return groups

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam over :meth:`param_groups`."""
        return torch.optim.Adam(self.param_groups())
