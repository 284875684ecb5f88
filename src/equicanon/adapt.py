"""Wrapping a predictor: canonicalization (one pass) and group averaging (|G| passes)."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from .actions import Action, Image, Trivial
from .canonicalizers.base import Canonicalization, Canonicalizer, call_with_typed_errors
from .canonicalizers.functional import explained
from .errors import (
    ConfigError,
    GroupMismatchError,
    InputValueError,
    ShapeError,
    check_floating,
    check_positive_int,
    check_shape,
    format_shape,
)
from .groups import FiniteGroup, Group, RigidGroup, as_group

__all__ = ["Canonicalized", "GroupAveraged", "FrameAveraged", "pca_frames"]


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
        prediction = self.predictor(result.canonical)
        out = self.output(result.pose, prediction)
        return (out, result) if return_canonicalization else out


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
