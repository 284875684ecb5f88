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
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .actions import Action
from .errors import ElementError, EquicanonError, EquivarianceError, ShapeError
from .groups import Group

if TYPE_CHECKING:
    from .canonicalizers.base import Canonicalization, Canonicalizer

__all__ = [
    "EquivarianceReport",
    "CanonicalizerReport",
    "equivariance_error",
    "assert_equivariant",
    "assert_invariant",
    "canonicalizer_error",
    "assert_canonicalizer",
    "element_error",
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
    """Reports of :func:`assert_canonicalizer`: invariance of ``canonical``, equivariance of ``pose``, and
    whether every pose returned (for ``x`` and for every ``g·x``) is a group element whose inverse takes the
    input to the canonical form.

    Attributes:
        canonical: invariance of the canonical form, ``canonical(g·x) = canonical(x)``.
        pose: equivariance of the pose, ``pose(g·x) = g pose(x)``.
        element_error: how far the worst pose is from the group: for matrix groups the largest of
            ``max |RᵀR − I|``, ``|det R − 1|`` (groups without reflections; ``||det R| − 1|`` with them) and, for
            homogeneous elements, the last row's distance from ``(0, …, 0, 1)``; ``inf`` for an index out of
            range or a row that is not a permutation; 0 for valid indices and permutations.
        element_tolerance: the largest ``element_error`` that passes (the default ``atol`` of the poses' dtype,
            or the ``atol`` given if larger).
        orbit_error: ``max |canonical − pose⁻¹·x|`` of the worst sample: the canonical form must be the input
            moved by the inverse of the returned pose, so with a valid pose it lies in the input's orbit.
        orbit_tolerance: the tolerance of that sample, ``atol + rtol · max |pose⁻¹·x|``.
        problems: one line for each of these two checks that failed, naming the worst pose and input.
    """

    canonical: EquivarianceReport
    pose: EquivarianceReport
    element_error: float = 0.0
    element_tolerance: float = 0.0
    orbit_error: float = 0.0
    orbit_tolerance: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def valid_poses(self) -> bool:
        """Whether every pose is a group element within ``element_tolerance`` (a NaN fails)."""
        return self.element_error <= self.element_tolerance

    @property
    def in_orbit(self) -> bool:
        """Whether every canonical form is ``pose⁻¹·x`` within ``orbit_tolerance`` (a NaN fails)."""
        return self.orbit_error <= self.orbit_tolerance

    @property
    def passed(self) -> bool:
        return self.canonical.passed and self.pose.passed and self.valid_poses and self.in_orbit


def element_error(group: Group, g: torch.Tensor) -> torch.Tensor:
    """How far each of a batch of would-be elements is from ``group``: ``(B,)`` float64, 0 for an element.

    Matrix groups: the largest of ``max |RᵀR − I|`` (``R = group.matrix(g)``), ``|det R − 1|`` for groups
    without reflections (``||det R| − 1|`` with them) and, for groups with translations, the distance of the
    homogeneous last row from ``(0, …, 0, 1)``; NaN entries count as ``inf``. Finite groups and ``S(n)``:
    ``inf`` where :meth:`~equicanon.groups.Group.check` refuses the row (an index out of range, not a
    permutation), else 0. ``g`` of the wrong shape or dtype raises :class:`~equicanon.errors.ElementError`.

    Example:
        >>> from equicanon import SO3
        >>> float(element_error(SO3(), SO3().sample(2, dtype=torch.float64)).max()) < 1e-12
        True
        >>> round(float(element_error(SO3(), 1e-3 * torch.eye(3)[None])[0]), 3)  # a collapsed "pose"
        1.0
    """
    g = g.detach().cpu() if isinstance(g, torch.Tensor) else g
    try:
        g = group.check(g, "pose")
        valid = True
    except ElementError:
        # integer rows of the right shape: the values are wrong (index out of range, not a permutation)
        if not (isinstance(g, torch.Tensor) and g.ndim >= 1 and not g.is_floating_point()
                and tuple(g.shape[1:]) == group.element_shape()):
            raise
        valid = False
    if not g.is_floating_point():  # indices / permutations: check() reads the values on the CPU
        errors = torch.zeros(g.shape[0], dtype=torch.float64)
        for i in range(0 if valid else g.shape[0]):  # which rows failed the batch's check
            try:
                group.check(g[i:i + 1], "pose")
            except ElementError:
                errors[i] = math.inf
        return errors
    m = group.matrix(g).double()
    eye = torch.eye(m.shape[-1], dtype=torch.float64)
    orth = (m.transpose(-1, -2) @ m - eye).abs().flatten(1).amax(dim=1)
    det = torch.linalg.det(m)
    det_error = (det.abs() - 1).abs() if group.has_reflections else (det - 1).abs()
    errors = torch.maximum(orth, det_error)
    if group.has_translations:  # homogeneous [[R, t], [0, 1]]
        last = torch.zeros(g.shape[-1], dtype=torch.float64)
        last[-1] = 1
        errors = torch.maximum(errors, (g[:, -1, :].double() - last).abs().amax(dim=1))
    return torch.nan_to_num(errors, nan=math.inf)


class _PoseChecks:
    """Called with every result the checks compute (``x`` first, then ``g_k·x``): keeps the worst pose
    (distance from the group) and the worst canonical form (distance from ``pose⁻¹·x``)."""

    def __init__(self, group: Group, action: Action, elements: torch.Tensor, atol: float | None,
                 rtol: float | None) -> None:
        self.group, self.action, self.elements = group, action, elements
        self.atol, self.rtol = atol, rtol
        self.calls = 0
        self.element = (0.0, 0.0, "")  # error, tolerance, text of the worst
        self.criterion = ""
        self.orbit = (0.0, 0.0, "")
        self.element_excess = self.orbit_excess = -math.inf  # error minus tolerance of the worst so far

    def _where(self, i: int) -> str:
        k = self.calls
        if k == 0:
            return f"sample {i} of x"
        return f"sample {i} of g·x, g = {self.group.describe(self.group.take(self.elements, k - 1))}"

    def _pose_text(self, pose: torch.Tensor, i: int, valid: bool) -> str:
        """The ``i``-th pose: as the group describes it if it is an element, else its raw entries."""
        one = pose[i:i + 1].detach().cpu()
        if valid:
            return self.group.describe(one)
        if not one.is_floating_point():
            return f"{one[0].tolist()}"
        rows = ", ".join("[" + ", ".join(f"{v:+.3g}" for v in row) + "]" for row in one[0].tolist())
        det = float(torch.linalg.det(self.group.matrix(one).double())[0])
        return f"[{rows}] (det {det:.3g})"

    def __call__(self, x: torch.Tensor, result: Canonicalization) -> None:
        pose, canonical = result.pose, result.canonical
        errors = element_error(self.group, pose)
        tolerance = 0.0
        if pose.is_floating_point():
            tolerance = max(default_tolerance(pose.dtype)[0], self.atol or 0.0)
            det = "||det R| − 1|" if self.group.has_reflections else "|det R − 1|"
            self.criterion = f"max |RᵀR − I|, {det}" + (", last row" if self.group.has_translations else "")
        else:
            self.criterion = "expected an index 0..|G| − 1" if self.group.is_indexed else "expected a permutation"
        if errors.numel() and float(errors.max()) - tolerance > self.element_excess:
            i = int(errors.argmax())
            self.element_excess = float(errors[i]) - tolerance
            self.element = (float(errors[i]), tolerance,
                            f"{self._where(i)}: pose {self._pose_text(pose, i, bool(errors[i] <= tolerance))}")
        self._orbit(x, pose, canonical, errors <= tolerance)
        self.calls += 1

    def _orbit(self, x: torch.Tensor, pose: torch.Tensor, canonical: torch.Tensor, valid: torch.Tensor) -> None:
        if not bool(valid.any()):
            return  # no pose to move x by; the element check fails
        keep = valid.to(pose.device)
        h = pose[keep]
        if h.is_floating_point() and x.is_floating_point():
            h = h.to(x.dtype)
        try:
            expected = self.action(self.group.inverse(h), x[keep])
        except EquicanonError as e:
            self.orbit = (math.inf, 0.0, f"{self._where(0)}: pose⁻¹·x failed: {e}")
            self.orbit_excess = math.inf
            return
        if expected.shape != canonical[keep].shape:
            raise ShapeError(f"the canonical form has shape {tuple(canonical.shape)} but pose⁻¹·x has shape "
                             f"{tuple(expected.shape)}")
        d_atol, d_rtol = default_tolerance(canonical.dtype)
        atol, rtol = (d_atol if self.atol is None else self.atol), (d_rtol if self.rtol is None else self.rtol)
        diff = (canonical[keep].double() - expected.double()).abs().flatten(1)
        if diff.shape[1] == 0:
            return
        err = torch.nan_to_num(diff.amax(dim=1), nan=math.inf)
        tol = atol + rtol * torch.nan_to_num(expected.double().abs().flatten(1).amax(dim=1), nan=0.0)
        excess = err - tol
        j = int(excess.argmax())
        if float(excess[j]) > self.orbit_excess:
            i = int(keep.nonzero()[j])
            self.orbit_excess = float(excess[j])
            self.orbit = (float(err[j]), float(tol[j]), f"{self._where(i)}: pose {self._pose_text(pose, i, True)}")

    def problems(self) -> list[str]:
        out = []
        err, tol, where = self.element
        if not err <= tol:
            out.append(f"pose is not a group element of {self.group}: distance {err:.3e} from the group "
                       f"({self.criterion}; tolerance {tol:.1e}) at {where}")
        err, tol, where = self.orbit
        if not err <= tol:
            out.append(f"canonical form is not pose⁻¹·x, the input moved back by its pose (so it may leave the "
                       f"input's orbit): max error {err:.3e} (tolerance {tol:.1e}) at {where}")
        return out


def canonicalizer_error(canonicalizer: Canonicalizer, x: torch.Tensor | None = None, *,
                        elements: torch.Tensor | None = None, dtype: torch.dtype | None = torch.float64,
                        atol: float | None = None, rtol: float | None = None, batch: int = 2) -> CanonicalizerReport:
    """Measure how far ``canonical(g·x) = canonical(x)`` and ``pose(g·x) = g pose(x)`` are from holding, and
    whether every pose returned (for ``x`` and each ``g·x``) is a group element with ``canonical = pose⁻¹·x``.

    ``canonicalizer`` is deep-copied and cast to ``dtype`` (default float64); the
    caller's module is not changed. Other arguments as in :func:`equivariance_error`;
    ``atol`` and ``rtol`` also loosen the element and orbit checks (see :class:`CanonicalizerReport`).
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
    checks = _PoseChecks(group, action, elements, atol, rtol)

    def canonical_of(t: torch.Tensor) -> torch.Tensor:
        result = model(t)
        checks(t, result)
        return result.canonical

    canonical = equivariance_error(canonical_of, group, action, Trivial(), x, **common)
    try:
        pose = equivariance_error(lambda t: model(t).pose, group, action, Pose(group), x, **common)
    except ElementError as e:  # g pose(x) needs group elements: poses that are not cannot be moved
        if not checks.problems():
            raise
        n = group.batch_size(elements)
        texts = [group.describe(group.take(elements, k)) for k in range(n)]
        pose = EquivarianceReport(group, [math.nan] * n, [0.0] * n, texts, 0.0, 0.0, dtype=x.dtype,
                                  notes=[f"g pose(x) could not be computed: {e}"])
    (e_err, e_tol, _), (o_err, o_tol, _) = checks.element, checks.orbit
    return CanonicalizerReport(canonical, pose, e_err, e_tol, o_err, o_tol, checks.problems())


def assert_canonicalizer(canonicalizer: Canonicalizer, x: torch.Tensor | None = None, **kwargs: Any
                         ) -> CanonicalizerReport:
    """Assert that a canonicalizer's poses are group elements, its canonical form is ``pose⁻¹·x`` and
    invariant, and its pose equivariant.

    Takes the arguments of :func:`canonicalizer_error`; raises :class:`EquivarianceError`
    naming which property failed, the worst element or pose, and the error. A pose that is not a group
    element (e.g. a near-zero matrix that shrinks every canonical form to a point, which is trivially
    invariant) fails even when the canonical form is invariant and the pose equivariant.
    """
    report = canonicalizer_error(canonicalizer, x, **kwargs)
    name = type(canonicalizer).__name__
    if report.problems:
        raise EquivarianceError(f"{name}: " + f"\n{name}: ".join(report.problems))
    for what, r in (("canonical form is not invariant", report.canonical), ("pose is not equivariant", report.pose)):
        if not r.passed:
            raise EquivarianceError(f"{name}: {what}: {r}")
        if r.notes:
            raise EquivarianceError(f"{name} broke a rule: {'; '.join(r.notes)}")
    return report
