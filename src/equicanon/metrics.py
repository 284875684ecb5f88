"""Metrics of canonicalizers: identity rate, pose agreement, argmax margin, pose error.

All take :class:`~equicanon.canonicalizers.Canonicalization` results (:func:`pose_error` also a group
and two batches of poses), return detached tensors, and never run a model themselves. :func:`identity_rate`
is the share of inputs whose pose is the identity, :func:`pose_agreement` the share with
``pose(g·x) == g pose(x)``, :func:`argmax_margin` how clearly the argmax wins (discrete groups),
:func:`pose_error` the degrees between ``pose(g·x)`` and ``g pose(x)``, between poses and target
elements, or between any two batches of poses (continuous groups):

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

from typing import overload

import torch

from .canonicalizers.base import Canonicalization
from .errors import ConfigError, DTypeError, GroupMismatchError, ShapeError, check_choice, format_shape
from .groups import Group, as_group

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


def _expected_pose(result: Canonicalization, transformed: Canonicalization, g: object) -> torch.Tensor:
    """``g · pose(x)``, on the pose's device and dtype."""
    group = result.group
    if transformed.group != group:
        raise GroupMismatchError(f"results are for {group} and {transformed.group}; compare results of one canonicalizer")
    pose = result.pose.detach()
    elements = group.expand(group.check(g, "g").to(pose.device), group.batch_size(pose))
    if elements.is_floating_point():
        elements = elements.to(pose.dtype)
    return group.compose(elements, pose)


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


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {format_shape(x.shape)} and dtype {x.dtype}"
    if isinstance(x, Canonicalization):
        return f"a Canonicalization for {x.group}"
    if isinstance(x, Group):
        return f"the group {x}"
    return f"{type(x).__name__} {x!r}"[:200]


def _continuous(group: Group, hint: str = "") -> None:
    """Raise the ConfigError of :func:`pose_error` for a finite group."""
    if group.is_finite:
        raise ConfigError(f"pose_error measures angles of continuous groups (SO2, O2, SO3, O3, SE3, E3); "
                          f"{group} is finite: use pose_agreement{hint}")


def _broadcast(group: Group, a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``a`` and ``b`` at one batch size: a batch of one repeats to the other's size; else a ShapeError."""
    na, nb = group.batch_size(a), group.batch_size(b)
    if na == nb:
        return a, b
    if na == 1:
        return group.expand(a, nb), b
    if nb == 1:
        return a, group.expand(b, na)
    raise ShapeError(f"{name_a} and {name_b}: expected batches of the same size (or one element for all), "
                     f"got {na} and {nb} elements of {group}")


def _angle_between(group: Group, actual: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """``(B,)`` float64 degrees of ``R = expectedᵀ actual`` (orthogonal parts only), 180 where the two differ by a
    reflection. ``atan2(‖R − Rᵀ‖_F / 2√2, (tr R − (d − 2)) / 2)`` (d = 2, 3) is the geodesic angle without the
    precision floor of an arccos near 0°."""
    actual, expected = actual.detach().double(), expected.detach().double()
    if actual.shape != expected.shape:
        raise ShapeError(f"poses of shapes {tuple(actual.shape)} and {tuple(expected.shape)} cannot be compared")
    actual, expected = group.matrix(actual), group.matrix(expected)  # the orthogonal part (no translation)
    rel = expected.transpose(-1, -2) @ actual
    d = rel.shape[-1]
    cos = (rel.diagonal(dim1=-2, dim2=-1).sum(-1) - (d - 2)) / 2
    sin = (rel - rel.transpose(-1, -2)).flatten(1).norm(dim=1) / (2 * 2**0.5) if d in (2, 3) else None
    angle = torch.rad2deg(torch.atan2(sin, cos) if sin is not None else torch.arccos(cos.clamp(-1.0, 1.0)))
    return torch.where(torch.linalg.det(rel) < 0, torch.full_like(angle, 180.0), angle)


@overload
def pose_error(result: Canonicalization, transformed: Canonicalization, g: torch.Tensor, /, *,
               reduction: str = "mean") -> torch.Tensor: ...


@overload
def pose_error(result: Canonicalization, target: torch.Tensor, /, *, reduction: str = "mean") -> torch.Tensor: ...


@overload
def pose_error(group: Group | str, pose_a: torch.Tensor, pose_b: torch.Tensor, /, *,
               reduction: str = "mean") -> torch.Tensor: ...


def pose_error(a: object, b: object = None, c: object = None, /, *, reduction: str = "mean") -> torch.Tensor:
    """Angle in degrees of the rotation between two batches of poses of a continuous group.

    Three forms, told apart by the first argument and the number of arguments:

    * ``pose_error(result, transformed, g)``: between ``pose(g·x)`` and ``g pose(x)``, how far the
      canonicalizer is from equivariant. ``result`` and ``transformed`` are its
      :class:`~equicanon.canonicalizers.Canonicalization` results for ``x`` and ``g·x`` (``B`` inputs),
      ``g`` the elements applied, a batch of ``B`` or one element for all (as in :func:`pose_agreement`).
    * ``pose_error(result, target)``: between ``result.pose`` and ``target``, a batch of ``B`` elements
      of ``result.group`` or one for all: e.g. for upright inputs moved by ``target``, how far the
      canonical form is from upright.
    * ``pose_error(group, pose_a, pose_b)``: between two batches of elements of ``group`` (a
      :class:`~equicanon.groups.Group` or a name such as ``"SO2"``); either may be one element for all.

    Elements are ``(B, d, d)`` float matrices (SO2, O2: ``d = 2``; SO3, O3: ``d = 3``) or ``(B, 4, 4)``
    homogeneous matrices (SE3, E3), float32 or float64. The angle is the geodesic distance (the angle whose
    cosine is ``(tr R − (d − 2)) / 2``) of ``R = Bᵀ A`` for the orthogonal parts ``A``, ``B`` of the two poses
    (translations are not counted); poses that differ by a reflection count as 180°.
    The inputs are neither changed nor differentiated through. The angle is computed in float64 from the
    skew part of ``R`` and its trace, so float32 rounding of the poses shows as about 1e-5°, not 0.1°.

        >>> import torch, equicanon as ec
        >>> from equicanon.canonicalizers import Canonicalization
        >>> so2 = ec.SO2()
        >>> pose = so2.from_angle(torch.tensor([30.0, -100.0], dtype=torch.float64), degrees=True)  # (2, 2, 2)
        >>> upright = so2.identity(1, dtype=torch.float64)  # one element for all
        >>> [round(v, 6) for v in pose_error("SO2", pose, upright, reduction="none").tolist()]
        [30.0, 100.0]
        >>> result = Canonicalization(canonical=torch.zeros(2, 1), pose=pose, group=so2)
        >>> target = so2.from_angle(torch.tensor([-100.0], dtype=torch.float64), degrees=True)
        >>> round(float(pose_error(result, target)), 6)  # the mean of 130° and 0°
        65.0

    Args:
        a, b, c: ``result, transformed, g``; ``result, target``; or ``group, pose_a, pose_b``.
        reduction: ``"mean"``: 0-dim float64 tensor; ``"none"``: ``(B,)`` float64 degrees in ``[0, 180]``.

    Raises:
        ConfigError: the group is finite (compare poses exactly with :func:`pose_agreement`); the number
            of arguments does not fit the form; an unknown group name; ``reduction`` is not ``"mean"`` or ``"none"``.
        DTypeError: the first argument is neither a Canonicalization nor a group, or an argument is a
            Canonicalization where a tensor of poses belongs (or the reverse).
        ElementError: a pose or ``g`` is not a batch of elements of the group (shape, floating dtype).
        ShapeError: batch sizes that differ, neither being one; an empty batch with ``reduction="mean"``.
        GroupMismatchError: ``result`` and ``transformed`` are for different groups.
    """
    check_choice(reduction, ("mean", "none"), "reduction")
    if b is None:
        raise ConfigError(f"pose_error: expected 2 or 3 arguments, (result, transformed, g), (result, target) or "
                          f"(group, pose_a, pose_b), got one ({_describe(a)})")
    if isinstance(a, Canonicalization):
        group = a.group
        if c is None:  # pose_error(result, target)
            if isinstance(b, Canonicalization):
                raise ConfigError("pose_error(result, transformed, g): missing g, the group elements applied to the "
                                  "inputs; got 2 arguments (to compare result.pose with a target, pass the target "
                                  "elements: pose_error(result, target))")
            _continuous(group, " (or compare result.pose == target)")
            pose = group.check(a.pose, "result.pose").detach()
            target = group.check(b, "target").detach().to(pose.device)
            n = group.batch_size(pose)
            if group.batch_size(target) not in (1, n):
                raise ShapeError(f"target: expected {n} elements of {group} (one per input) or one for all, "
                                 f"got {group.batch_size(target)}")
            return _reduce(_angle_between(group, pose, group.expand(target, n)), reduction)
        if not isinstance(b, Canonicalization):  # pose_error(result, transformed, g)
            raise DTypeError(f"transformed: expected a Canonicalization (the result for g·x), got {_describe(b)}; "
                             f"to compare result.pose with target elements call pose_error(result, target)")
        _continuous(group)
        expected = _expected_pose(a, b, c)
        return _reduce(_angle_between(group, b.pose, expected), reduction)
    if isinstance(a, (Group, str)):  # pose_error(group, pose_a, pose_b)
        group = as_group(a, what="pose_error: group")
        if c is None:
            raise ConfigError(f"pose_error(group, pose_a, pose_b): expected two batches of {group} elements after "
                              f"the group, got one ({_describe(b)})")
        for name, value in (("pose_a", b), ("pose_b", c)):
            if isinstance(value, Canonicalization):
                raise DTypeError(f"{name}: expected a tensor of {group} elements, got {_describe(value)}; "
                                 f"pass its .pose, or call pose_error(result, target)")
        _continuous(group, " (or compare pose_a == pose_b)")
        pose_a = group.check(b, "pose_a").detach()
        pose_b = group.check(c, "pose_b").detach().to(pose_a.device)
        pose_a, pose_b = _broadcast(group, pose_a, pose_b, "pose_a", "pose_b")
        return _reduce(_angle_between(group, pose_a, pose_b), reduction)
    raise DTypeError(f"pose_error: expected a Canonicalization (pose_error(result, transformed, g) or "
                     f"pose_error(result, target)) or a group or group name (pose_error(group, pose_a, pose_b)) "
                     f"as the first argument, got {_describe(a)}")


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
