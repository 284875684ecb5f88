"""Public checks of equivariance, for users' own models as much as for ours.

``assert_equivariant(f, G, in_action, out_action)`` evaluates, for every
testing element ``g`` of ``G``, the difference ``f(g·x) - g⋆f(x)`` in float64
(by default) and fails with a report naming the worst element.

Example:
    >>> import equicanon as ec, torch
    >>> G = ec.C(4)
    >>> report = ec.testing.assert_equivariant(lambda x: x.mean(dim=(2, 3)), G,
    ...                                        ec.actions.Image(G), ec.actions.Trivial())
    >>> report.max_error < 1e-12
    True
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .actions import Action
from .errors import EquicanonError, EquivarianceError, ShapeError
from .groups import Group

if TYPE_CHECKING:
    from .canonicalizers.base import Canonicalizer

__all__ = [
    "EquivarianceReport",
    "CanonicalizerReport",
    "equivariance_error",
    "assert_equivariant",
    "assert_invariant",
    "canonicalizer_error",
    "assert_canonicalizer",
    "default_tolerance",
]

_TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-9, 1e-7),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (3e-2, 3e-2),
}


def default_tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """``(atol, rtol)`` used for outputs of ``dtype``; integer outputs must match exactly."""
    return _TOLERANCES.get(dtype, (0.0, 0.0))


@dataclass
class EquivarianceReport:
    """What a check found.

    Attributes:
        group: the group checked.
        errors: max absolute error ``|f(g·x) - g⋆f(x)|`` for each testing element.
        scales: max absolute value of ``g⋆f(x)`` for each element.
        elements: readable text of each element.
        atol, rtol: the tolerance; element ``k`` passes if ``errors[k] <= atol + rtol * scales[k]``.
    """

    group: Group
    errors: list[float]
    scales: list[float]
    elements: list[str]
    atol: float
    rtol: float
    dtype: torch.dtype = torch.float64
    notes: list[str] = field(default_factory=list)

    @property
    def max_error(self) -> float:
        """Largest error over all elements (``nan`` if any output was not finite)."""
        return max(self.errors, default=0.0) if all(e == e for e in self.errors) else float("nan")

    @property
    def worst(self) -> int:
        """Index of the worst element (a NaN counts as worst)."""
        return max(range(len(self.errors)), key=lambda k: float("inf") if self.errors[k] != self.errors[k] else self.errors[k])

    @property
    def passed(self) -> bool:
        """Whether every element is within tolerance."""
        return all(e <= self.atol + self.rtol * s for e, s in zip(self.errors, self.scales, strict=True))

    def __str__(self) -> str:
        k = self.worst
        lines = [
            f"equivariance under {self.group} in {self.dtype}: max error {self.errors[k]:.3e} at {self.elements[k]} "
            f"(tolerance {self.atol:.1e} + {self.rtol:.1e} x scale {self.scales[k]:.3g})"
        ]
        lines += [f"  {text}: error {e:.3e}" for text, e in zip(self.elements, self.errors, strict=True)]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _as_tuple(y: object) -> tuple[torch.Tensor, ...]:
    if isinstance(y, torch.Tensor):
        return (y,)
    if isinstance(y, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in y):
        return tuple(y)
    raise EquicanonError(f"f must return a tensor or a tuple of tensors, got {type(y).__name__}")


def _cast(x: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    return x.to(dtype) if dtype is not None and x.is_floating_point() else x


def equivariance_error(
    f: Callable[[torch.Tensor], object],
    group: Group,
    in_action: Action,
    out_action: Action | Sequence[Action],
    x: torch.Tensor | None = None,
    *,
    elements: torch.Tensor | None = None,
    dtype: torch.dtype | None = torch.float64,
    atol: float | None = None,
    rtol: float | None = None,
    batch: int = 2,
    generator: torch.Generator | None = None,
) -> EquivarianceReport:
    """Measure ``max |f(g·x) - g⋆f(x)|`` for each element ``g``; never raises on a failed check.

    Args:
        f: a function or ``nn.Module`` from inputs to outputs. A module is deep-copied and
            cast to ``dtype``, so the caller's module is left as it is; a plain function
            receives inputs in ``dtype`` and must handle them.
        group: the group whose elements are checked.
        in_action: how ``g`` acts on inputs ``x``.
        out_action: how ``g`` acts on outputs; a sequence of actions for tuple outputs.
        x: the input batch; by default ``in_action.example(batch)`` with a seeded generator.
        elements: the elements to check, a batch; by default ``group.testing_elements()``. Matrices
            of lower precision than ``dtype`` are re-projected onto the group after casting.
        dtype: floating dtype to run in (default float64); ``None`` keeps ``x`` and ``f`` as they are.
        atol, rtol: tolerance; by default from the output dtype (float64: 1e-9, 1e-7; float32: 1e-5, 1e-5).
        batch: batch size of the default input.
        generator: for the default input (default: seeded with 0).

    Returns:
        An :class:`EquivarianceReport`.
    """
    if x is None:
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        x = in_action.example(batch, generator=gen, dtype=dtype if dtype is not None else None)
    if not isinstance(x, torch.Tensor):
        raise EquicanonError(f"x must be a tensor, got {type(x).__name__}")
    x = _cast(x, dtype)
    if isinstance(f, nn.Module) and dtype is not None:
        f = copy.deepcopy(f).to(dtype)
    if elements is None:
        elements = group.testing_elements(device=x.device, dtype=dtype if dtype is not None else
                                          (x.dtype if x.is_floating_point() else None))
    else:
        elements = group.cast(group.check(elements, "elements"), dtype)
    x_before = x.clone()
    with torch.no_grad():
        return _measure(f, group, in_action, out_action, x, x_before, elements, atol, rtol)


def _measure(f: Callable[[torch.Tensor], object], group: Group, in_action: Action,
             out_action: Action | Sequence[Action], x: torch.Tensor, x_before: torch.Tensor,
             elements: torch.Tensor, atol: float | None, rtol: float | None) -> EquivarianceReport:
    y = _as_tuple(f(x))
    actions = tuple(out_action) if isinstance(out_action, Sequence) else (out_action,) * len(y)
    if len(actions) != len(y):
        raise ShapeError(f"f returned {len(y)} outputs but {len(actions)} output actions were given")
    out_dtype = next((t.dtype for t in y if t.is_floating_point()), y[0].dtype)
    d_atol, d_rtol = default_tolerance(out_dtype)
    report = EquivarianceReport(group, [], [], [], d_atol if atol is None else atol, d_rtol if rtol is None else rtol,
                                dtype=x.dtype)
    n = x.shape[0]
    for k in range(group.batch_size(elements)):
        g = group.expand(group.take(elements, k), n)
        lhs = _as_tuple(f(in_action(g, x)))
        rhs = tuple(act(g, t) for act, t in zip(actions, y, strict=True))
        err, scale = 0.0, 0.0
        for a, b in zip(lhs, rhs, strict=True):
            if a.shape != b.shape:
                raise ShapeError(f"f(g·x) has shape {tuple(a.shape)} but g⋆f(x) has shape {tuple(b.shape)}")
            diff = (a.double() - b.double()).abs()
            err = max(err, float(diff.max()) if diff.numel() else 0.0)
            if diff.numel() and not bool(torch.isfinite(diff).all()):
                err = float("nan")
            if b.numel():
                scale = max(scale, float(torch.nan_to_num(b.double(), nan=0.0).abs().max()))
        report.errors.append(err)
        report.scales.append(scale)
        report.elements.append(group.describe(g[:1] if g.ndim else g))
    if not torch.allclose(x, x_before, rtol=0.0, atol=0.0, equal_nan=True):
        report.notes.append("f modified its input in place")
    return report


def assert_equivariant(
    f: Callable[[torch.Tensor], object],
    group: Group,
    in_action: Action,
    out_action: Action | Sequence[Action],
    x: torch.Tensor | None = None,
    **kwargs: Any,
) -> EquivarianceReport:
    """Check ``f(g·x) == g⋆f(x)`` on ``group``'s testing elements; raise if not.

    Takes the arguments of :func:`equivariance_error`.

    Raises:
        EquivarianceError: (an ``AssertionError``) naming the worst element and its error,
            or saying that ``f`` modified its input.

    Returns:
        The :class:`EquivarianceReport`, for logging the errors found.
    """
    report = equivariance_error(f, group, in_action, out_action, x, **kwargs)
    if not report.passed:
        raise EquivarianceError(f"f is not equivariant: {report}")
    if report.notes:
        raise EquivarianceError(f"f broke a rule: {'; '.join(report.notes)}")
    return report


def assert_invariant(f: Callable[[torch.Tensor], object], group: Group, in_action: Action,
                     x: torch.Tensor | None = None, **kwargs: Any) -> EquivarianceReport:
    """:func:`assert_equivariant` with the trivial output action: ``f(g·x) == f(x)``."""
    from .actions import Trivial

    return assert_equivariant(f, group, in_action, Trivial(), x, **kwargs)


@dataclass
class CanonicalizerReport:
    """Reports of :func:`assert_canonicalizer`: invariance of ``canonical``, equivariance of ``pose``."""

    canonical: EquivarianceReport
    pose: EquivarianceReport

    @property
    def passed(self) -> bool:
        return self.canonical.passed and self.pose.passed


def canonicalizer_error(canonicalizer: Canonicalizer, x: torch.Tensor | None = None, *,
                        elements: torch.Tensor | None = None, dtype: torch.dtype | None = torch.float64,
                        atol: float | None = None, rtol: float | None = None, batch: int = 2) -> CanonicalizerReport:
    """Measure how far ``canonical(g·x) = canonical(x)`` and ``pose(g·x) = g pose(x)`` are from holding.

    ``canonicalizer`` is deep-copied and cast to ``dtype`` (default float64); the
    caller's module is not changed. Other arguments as in :func:`equivariance_error`.
    """
    from .actions import Pose, Trivial

    group, action = canonicalizer.group, canonicalizer.action
    model = copy.deepcopy(canonicalizer)
    if dtype is not None:
        model = model.to(dtype)
    if x is None:
        x = action.example(batch, generator=torch.Generator().manual_seed(0), dtype=dtype)
    x = _cast(x, dtype)
    if elements is None:
        elements = group.testing_elements(device=x.device, dtype=x.dtype if x.is_floating_point() else None)
    elements = group.cast(elements, dtype)
    common: dict[str, Any] = {"elements": elements, "dtype": None, "atol": atol, "rtol": rtol}
    canonical = equivariance_error(lambda t: model(t).canonical, group, action, Trivial(), x, **common)
    pose = equivariance_error(lambda t: model(t).pose, group, action, Pose(group), x, **common)
    return CanonicalizerReport(canonical, pose)


def assert_canonicalizer(canonicalizer: Canonicalizer, x: torch.Tensor | None = None, **kwargs: Any
                         ) -> CanonicalizerReport:
    """Assert that a canonicalizer's canonical form is invariant and its pose equivariant.

    Takes the arguments of :func:`canonicalizer_error`; raises :class:`EquivarianceError`
    naming which property failed, the worst element and the error.
    """
    report = canonicalizer_error(canonicalizer, x, **kwargs)
    for what, r in (("canonical form is not invariant", report.canonical), ("pose is not equivariant", report.pose)):
        if not r.passed:
            raise EquivarianceError(f"{type(canonicalizer).__name__}: {what}: {r}")
        if r.notes:
            raise EquivarianceError(f"{type(canonicalizer).__name__} broke a rule: {'; '.join(r.notes)}")
    return report
