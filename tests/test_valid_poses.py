"""Valid poses (issue 17): a non-finite input has no pose, and a checker cannot be passed by a collapsed one.

Every registered canonicalizer refuses NaN and ±Inf in CPU inputs with an
:class:`~equicanon.errors.InputValueError` naming how many entries are bad (``check_inputs=False`` lets
them through; accelerator inputs are not checked, which would cost a host sync per call). ``assert_canonicalizer``
also checks that every pose is a group element and that every canonical form is ``pose⁻¹·x`` (so it
lies in the input's orbit): a pose ``1e-3 R(x)`` is equivariant and shrinks the canonical form to a
point, which is invariant, yet it fails.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch

import equicanon as ec
from equicanon.canonicalizers import Canonicalization, Canonicalizer, RegistryCase, available, entry
from equicanon.errors import EquivarianceError, InputValueError
from equicanon.testing import assert_canonicalizer, canonicalizer_error, element_error

CASES = [pytest.param(case, id=f"{name}:{case.name}") for name in available() for case in entry(name).test_cases()]
BAD = [float("nan"), float("inf"), -float("inf")]


def _input(case: RegistryCase, size: int = 9, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    shape = tuple(size if s == "size" else int(s) for s in case.input_shape)
    return torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(dtype)


def _make(case: RegistryCase) -> Canonicalizer:
    torch.manual_seed(0)
    return case.make().eval()


def _poison(x: torch.Tensor, value: float, sample: int = 1) -> torch.Tensor:
    """A copy of ``x`` with one entry of ``sample`` set to ``value``."""
    y = x.clone()
    y[sample].view(-1)[y[sample].numel() // 2] = value
    return y


# ------------------------------------------------------------------ non-finite inputs


@pytest.mark.parametrize("value", BAD, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("case", CASES)
def test_non_finite_input_is_an_input_value_error_saying_what_came(case: RegistryCase, value: float) -> None:
    canon = _make(case)
    bad = _poison(_input(case), value)
    before = bad.clone()
    with pytest.raises(InputValueError) as info:
        canon(bad)
    assert isinstance(info.value, ValueError)
    name = type(canon).__name__
    nan, inf = (1, 0) if math.isnan(value) else (0, 1)
    assert str(info.value).startswith(f"{name}: x: expected finite values, got 1 NaN or Inf entries of {bad.numel()} "
                                      f"({nan} NaN, {inf} Inf; first at index (1, "), str(info.value)
    assert torch.equal(bad.isnan(), before.isnan()) and torch.equal(bad.nan_to_num(), before.nan_to_num())


@pytest.mark.parametrize("case", CASES)
def test_every_bad_entry_is_counted(case: RegistryCase) -> None:
    bad = _poison(_poison(_input(case), float("nan"), sample=0), float("inf"), sample=1)
    with pytest.raises(InputValueError, match=r"got 2 NaN or Inf entries .*\(1 NaN, 1 Inf; first at index \(0, "):
        _make(case)(bad)


@pytest.mark.parametrize("case", CASES)
def test_check_inputs_off_lets_non_finite_inputs_through_to_their_sample(case: RegistryCase) -> None:
    """The opt-out: no check, and the poisoned sample's canonical form is non-finite (the others are finite)."""
    canon = _make(case)
    canon.check_inputs = False
    res = canon(_poison(_input(case), float("nan")))
    assert isinstance(res, Canonicalization)
    assert not bool(torch.isfinite(res.canonical[1]).all())
    assert bool(torch.isfinite(res.canonical[0]).all())


@pytest.mark.parametrize("name", available())
def test_every_registered_class_takes_check_inputs(name: str) -> None:
    parameter = inspect.signature(entry(name).cls).parameters.get("check_inputs")
    assert parameter is not None and parameter.default is True


def test_check_inputs_is_a_constructor_argument_of_create() -> None:
    x = torch.randn(2, 1, 9, 9)
    x[0, 0, 4, 4] = float("nan")
    checked = ec.canonicalizers.create("group_conv", group="SO2", in_channels=1, hidden=4, kernel_size=3)
    assert checked.check_inputs
    with pytest.raises(InputValueError, match="GroupConv: x"):
        checked(x)
    unchecked = ec.canonicalizers.create("group_conv", group="SO2", in_channels=1, hidden=4, kernel_size=3,
                                         check_inputs=False).eval()
    assert not unchecked.check_inputs
    assert not bool(torch.isfinite(unchecked(x).canonical[0]).all())


def test_finite_inputs_and_integer_inputs_are_not_affected() -> None:
    canon = ec.canonicalizers.Sort(ec.S(4), 2, hidden=8).eval()
    x = torch.randn(3, 4, 2)
    assert torch.equal(canon(x).pose, canon.scorer(x).argsort(dim=-1, stable=True))
    with pytest.raises(ec.errors.DTypeError):  # the dtype check, as before
        canon(torch.zeros(3, 4, 2, dtype=torch.long))


# ------------------------------------------------------------------ poses that are not group elements


class _Scaled(Canonicalizer):
    """A canonicalizer of point clouds whose pose is ``scale · R(x)`` for a correct VectorNeurons pose ``R(x)``.

    ``scale · R`` is equivariant and ``x (scale · R)`` invariant for any scale, so only the element check
    tells ``scale = 1e-3`` (or 0) from ``scale = 1``.
    """

    def __init__(self, group: ec.groups.Group, scale: float) -> None:
        super().__init__()
        self.group, self.action = group, ec.actions.Points(group)
        self.inner = ec.canonicalizers.VectorNeurons(group, hidden=8, layers=1, k=4)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> Canonicalization:
        pose = self.scale * self.inner(x).pose
        return Canonicalization(x @ pose, pose, self.group)

    def prior_loss(self, result: Canonicalization, target: torch.Tensor | None = None) -> torch.Tensor:
        return result.pose.sum() * 0.0


class _Constant(_Scaled):
    """The pose ``1e-3 · I`` whatever the input."""

    def forward(self, x: torch.Tensor) -> Canonicalization:
        pose = 1e-3 * torch.eye(3, dtype=x.dtype).expand(x.shape[0], 3, 3)
        return Canonicalization(x @ pose, pose, self.group)


class _NoCanonicalForm(_Scaled):
    """A correct pose, but the canonical form collapsed to zeros (invariant, not ``pose⁻¹·x``)."""

    def forward(self, x: torch.Tensor) -> Canonicalization:
        pose = self.inner(x).pose
        return Canonicalization(torch.zeros_like(x), pose, self.group)


class _Reflecting(_Scaled):
    """An O(3) frame reported as an SO(3) pose: orthogonal, but half the poses have det -1."""

    def __init__(self) -> None:
        super().__init__(ec.SO3(), 1.0)
        self.inner = ec.canonicalizers.VectorNeurons(ec.O3(), hidden=8, layers=1, k=4)


class _IndexOutOfRange(Canonicalizer):
    """A C(4) canonicalizer whose pose indices are shifted by |G|: not elements, whatever the input."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = ec.canonicalizers.GroupConv(ec.C(4), 1, hidden=4, kernel_size=3)
        self.group, self.action = self.inner.group, self.inner.action

    def forward(self, x: torch.Tensor) -> Canonicalization:
        res = self.inner(x)
        return Canonicalization(res.canonical, res.pose + 4, self.group, logits=res.logits)

    def prior_loss(self, result: Canonicalization, target: torch.Tensor | None = None) -> torch.Tensor:
        return self.inner.prior_loss(result, target)


def _clouds() -> torch.Tensor:
    return torch.randn(2, 12, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.mark.parametrize("group", [ec.SO3(), ec.O3()], ids=repr)
def test_a_correct_canonicalizer_passes_with_valid_poses(group: ec.groups.Group) -> None:
    torch.manual_seed(0)
    report = assert_canonicalizer(_Scaled(group, 1.0).eval(), _clouds())
    assert report.valid_poses and report.in_orbit and not report.problems
    assert report.element_error < 1e-12 and report.orbit_error < 1e-12
    assert report.element_tolerance == 1e-9


@pytest.mark.parametrize("scale", [1e-3, 0.0])
def test_a_collapsed_pose_passes_the_old_checks_but_fails_as_not_a_group_element(scale: float) -> None:
    torch.manual_seed(0)
    canon = _Scaled(ec.SO3(), scale).eval()
    report = canonicalizer_error(canon, _clouds())
    assert report.canonical.passed and report.pose.passed  # invariant and equivariant: that is the trap
    assert not report.valid_poses and not report.passed
    assert report.element_error == pytest.approx(1.0, abs=1e-5)
    assert report.in_orbit  # canonical = pose⁻¹·x does hold; the pose is the problem
    with pytest.raises(EquivarianceError, match=r"_Scaled: pose is not a group element of SO3\(\): distance 1\.000e\+00 "
                                                r"from the group .* at sample 0 of x: pose \[\[.*\]\] \(det "):
        assert_canonicalizer(canon, _clouds())


def test_a_constant_near_zero_pose_fails_with_the_element_message_first() -> None:
    with pytest.raises(EquivarianceError, match=r"pose is not a group element .*pose \[\[\+0\.001, \+0, \+0\], .*\(det 1e-09\)"):
        assert_canonicalizer(_Constant(ec.SO3(), 1.0).eval(), _clouds())


def test_a_reflection_is_not_an_so3_pose() -> None:
    torch.manual_seed(0)
    x = torch.cat([_clouds(), _clouds() * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)])
    report = canonicalizer_error(_Reflecting().eval(), x)
    assert report.element_error == pytest.approx(2.0, abs=1e-9)  # |det R - 1| with det R = -1
    assert not report.valid_poses


def test_a_canonical_form_that_is_not_the_input_moved_back_fails_the_orbit_check() -> None:
    torch.manual_seed(0)
    canon = _NoCanonicalForm(ec.SO3(), 1.0).eval()
    report = canonicalizer_error(canon, _clouds())
    assert report.canonical.passed and report.pose.passed and report.valid_poses
    assert not report.in_orbit and report.orbit_error > 1.0  # max |0 - R^T x_i| of the worst cloud
    with pytest.raises(EquivarianceError, match=r"canonical form is not pose⁻¹·x, .* max error .* at sample \d of"):
        assert_canonicalizer(canon, _clouds())


def test_indices_out_of_range_are_not_poses_and_are_reported_not_raised() -> None:
    torch.manual_seed(0)
    canon = _IndexOutOfRange().eval()
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    report = canonicalizer_error(canon, x)
    assert report.element_error == math.inf and not report.passed
    assert report.pose.notes and "could not be computed" in report.pose.notes[0]
    with pytest.raises(EquivarianceError, match=r"pose is not a group element of C\(4\): distance inf"):
        assert_canonicalizer(canon, x)


# ------------------------------------------------------------------ element_error itself


@pytest.mark.parametrize("group", [ec.C(4), ec.D(3), ec.SO2(), ec.O2(), ec.SO3(), ec.O3(), ec.SE3(), ec.E3(), ec.S(5),
                                   ec.groups.Octahedral()], ids=repr)
def test_group_elements_have_no_element_error(group: ec.groups.Group) -> None:
    for g in (group.testing_elements(dtype=torch.float64), group.sample(8, dtype=torch.float64)):
        assert float(element_error(group, g).max()) < 1e-12


def test_element_error_of_things_that_are_not_elements() -> None:
    rot = ec.SO3().sample(2, dtype=torch.float64)
    mirror = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    assert element_error(ec.SO3(), rot @ mirror).tolist() == pytest.approx([2.0, 2.0])
    assert element_error(ec.O3(), rot @ mirror).max() < 1e-12
    assert element_error(ec.SO3(), 2 * rot).tolist() == pytest.approx([7.0, 7.0])  # |det 2R - 1| > |4 I - I|
    nan = rot.clone()
    nan[1, 0, 0] = math.nan
    assert element_error(ec.SO3(), nan).tolist()[1] == math.inf
    homogeneous = ec.SE3().sample(2, dtype=torch.float64)
    homogeneous[0, 3, 0] = 0.5
    assert element_error(ec.SE3(), homogeneous).tolist() == pytest.approx([0.5, 0.0], abs=1e-12)
    assert element_error(ec.C(4), torch.tensor([0, 3, 4, -1])).tolist() == [0.0, 0.0, math.inf, math.inf]
    assert element_error(ec.S(3), torch.tensor([[0, 1, 2], [0, 0, 2]])).tolist() == [0.0, math.inf]
