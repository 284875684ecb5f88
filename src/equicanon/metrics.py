"""Metrics of canonicalizers: identity rate, pose agreement, argmax margin.

All take :class:`~equicanon.canonicalizers.Canonicalization` results, return
detached tensors, and never run a model themselves. :func:`identity_rate` is the share of
inputs whose pose is the identity, :func:`pose_agreement` the share with ``pose(g·x) == g pose(x)``,
:func:`argmax_margin` how clearly the argmax wins (discrete groups), :func:`pose_error` the degrees
between ``pose(g·x)`` and ``g pose(x)`` (continuous groups):

    >>> import torch, equicanon as ec
    >>> from equicanon.metrics import argmax_margin, identity_rate, pose_agreement
    >>> canon = ec.canonicalizers.GroupConv(ec.C(4), in_channels=1).eval()
    >>> x, g = torch.rand(4, 1, 16, 16), ec.C(4).sample(4, generator=torch.Generator().manual_seed(0))
    >>> res, moved = canon(x), canon(canon.action(g, x))
    >>> float(pose_agreement(res, moved, g))  # quarter turns are exact: every pose moves with its input
    1.0
    >>> 0.0 <= float(identity_rate(res)) <= 1.0 and float(argmax_margin(res)) >= 0.0
    True
"""

from __future__ import annotations

import torch

from .canonicalizers.base import Canonicalization
from .errors import ConfigError, GroupMismatchError, ShapeError, check_choice
from .groups import Group

__all__ = ["identity_rate", "pose_agreement", "pose_error", "argmax_margin"]


def _same_elements(group: Group, a: torch.Tensor, b: torch.Tensor, atol: float) -> torch.Tensor:
    """``(B,)`` bool: element ``i`` of ``a`` equals element ``i`` of ``b`` (integers exactly, matrices within ``atol``)."""
    if a.shape != b.shape:
        raise ShapeError(f"poses of shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be compared element-wise")
    if a.is_floating_point() or b.is_floating_point():
        diff = (a.double() - b.double()).abs()
        return (diff.flatten(1) <= atol).all(dim=1) if diff.ndim > 1 else diff <= atol
    eq = a == b
    return eq.flatten(1).all(dim=1) if eq.ndim > 1 else eq


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    check_choice(reduction, ("mean", "none"), "reduction")
    if reduction == "none":
        return values
    if values.numel() == 0:
        raise ShapeError("cannot average over an empty batch")
    return values.float().mean() if not values.is_floating_point() else values.mean()


def identity_rate(result: Canonicalization, *, atol: float = 1e-6, reduction: str = "mean") -> torch.Tensor:
    """Share of inputs whose pose is the identity (the identity metric of EquiOptAdapt, Fig. 2).

    On upright data it measures how well the canonicalization prior has been learned.

    Args:
        result: a canonicalizer's result for ``B`` inputs.
        atol: for matrix poses (SO2, SO3, ...), the largest entry-wise distance to the identity
            matrix that counts as the identity; integer poses (C(n), D(n), S(n), Octahedral) are exact.
        reduction: ``"mean"``: a 0-dim float tensor in ``[0, 1]``; ``"none"``: ``(B,)`` bool.
    """
    pose = result.pose.detach()
    eye = result.group.identity(result.group.batch_size(pose), device=pose.device,
                                dtype=pose.dtype if pose.is_floating_point() else None)
    return _reduce(_same_elements(result.group, pose, eye, atol), reduction)


def _expected_pose(result: Canonicalization, transformed: Canonicalization, g: torch.Tensor) -> torch.Tensor:
    """``g · pose(x)``, on the pose's device and dtype."""
    group = result.group
    if transformed.group != group:
        raise GroupMismatchError(f"results are for {group} and {transformed.group}; compare results of one canonicalizer")
    pose = result.pose.detach()
    g = group.check(g, "g")
    g = group.expand(g.to(pose.device), group.batch_size(pose))
    if g.is_floating_point():
        g = g.to(pose.dtype)
    return group.compose(g, pose)


def pose_agreement(result: Canonicalization, transformed: Canonicalization, g: torch.Tensor, *,
                   atol: float = 1e-6, reduction: str = "mean") -> torch.Tensor:
    """Share of inputs with ``pose(g·x) == g pose(x)``: how equivariant the pose is, measured.

    Args:
        result: the canonicalizer's result for ``x`` (``B`` inputs).
        transformed: its result for ``g·x``.
        g: the group elements applied, a batch of ``B`` (or one element for all).
        atol: entry-wise tolerance for matrix poses; integer poses compare exactly. For
            continuous groups acting on images by interpolation, poses agree only approximately:
            raise ``atol`` (``0.05`` ≈ 3°) or read :func:`pose_error` instead.
        reduction: ``"mean"``: 0-dim float tensor in ``[0, 1]``; ``"none"``: ``(B,)`` bool.

    Exact canonicalizers (C(4), D(4), Octahedral) give 1.0; interpolated angles (C(8)'s 45°) less.
    """
    if isinstance(atol, bool) or not isinstance(atol, (int, float)) or not atol >= 0:
        raise ConfigError(f"atol must be a number >= 0, got {atol!r}")
    expected = _expected_pose(result, transformed, g)
    return _reduce(_same_elements(result.group, transformed.pose.detach(), expected, atol), reduction)


def pose_error(result: Canonicalization, transformed: Canonicalization, g: torch.Tensor, *,
               reduction: str = "mean") -> torch.Tensor:
    """Angle in degrees of the rotation between ``pose(g·x)`` and ``g pose(x)``: how far from equivariant.

    For continuous groups (SO2, O2, SO3, O3; the rotation part of SE3 and E3, translations
    not counted) it is the geodesic distance ``arccos((tr R − (d − 2)) / 2)`` of
    ``R = (g pose(x))ᵀ pose(g·x)``; poses that differ by a reflection count as 180°.

    Args:
        result, transformed, g: as in :func:`pose_agreement`.
        reduction: ``"mean"``: 0-dim float64 tensor; ``"none"``: ``(B,)`` float64 degrees in ``[0, 180]``.

    Raises:
        ConfigError: the group is finite (compare poses exactly with :func:`pose_agreement`).
    """
    group = result.group
    if group.is_finite:
        raise ConfigError(f"pose_error measures angles of continuous groups (SO2, O2, SO3, O3, SE3, E3); "
                          f"{group} is finite: use pose_agreement")
    expected = _expected_pose(result, transformed, g).double()
    actual = transformed.pose.detach().double()
    if actual.shape != expected.shape:
        raise ShapeError(f"poses of shapes {tuple(actual.shape)} and {tuple(expected.shape)} cannot be compared")
    actual, expected = group.matrix(actual), group.matrix(expected)  # the orthogonal part (no translation)
    rel = expected.transpose(-1, -2) @ actual
    d = rel.shape[-1]
    cos = ((rel.diagonal(dim1=-2, dim2=-1).sum(-1) - (d - 2)) / 2).clamp(-1.0, 1.0)
    angle = torch.rad2deg(torch.arccos(cos))
    angle = torch.where(torch.linalg.det(rel) < 0, torch.full_like(angle, 180.0), angle)
    return _reduce(angle, reduction)


def argmax_margin(result: Canonicalization, *, reduction: str = "mean") -> torch.Tensor:
    """Top-1 minus top-2 logit of each input: how uniquely the argmax picks the pose (discrete groups).

    The margin is in logit units (for :class:`~equicanon.canonicalizers.Contrastive`,
    ``(s_top1 − s_top2)/τ``). A margin near 0 means two copies score alike and the pose is fragile.

    Args:
        result: a result with ``logits (B, |G|)``, ``|G| >= 2``.
        reduction: ``"mean"``: 0-dim tensor; ``"none"``: ``(B,)``.
    """
    if result.logits is None:
        raise ConfigError("argmax_margin needs a result with logits (C(n), D(n), ... canonicalizers)")
    logits = result.logits.detach()
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ShapeError(f"argmax_margin needs logits (B, |G|) with |G| >= 2, got shape {tuple(logits.shape)}")
    top = logits.topk(2, dim=1).values
    return _reduce(top[:, 0] - top[:, 1], reduction)
