"""The public equivariance checker: it passes equivariant functions and reports the others."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

import equicanon as ec
from equicanon.actions import Image, Points, Regular, Set, Trivial, Vectors
from equicanon.errors import EquicanonError, EquivarianceError, ShapeError
from equicanon.groups import Group
from equicanon.testing import assert_equivariant, assert_invariant, default_tolerance, equivariance_error


def random_cnn(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1))


def rotation_averaged(cnn: nn.Module) -> nn.Module:
    """``x -> mean_k r^-k cnn(r^k x)`` over C(4): equivariant whatever ``cnn`` is."""

    class Averaged(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cnn = cnn

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            outs = [torch.rot90(self.cnn(torch.rot90(x, k, dims=(-2, -1))), -k, dims=(-2, -1)) for k in range(4)]
            return torch.stack(outs).mean(0)

    return Averaged()


# ---------------------------------------------------------------- equivariant functions pass


@pytest.mark.parametrize("G", [ec.C(1), ec.C(2), ec.C(4), ec.D(1), ec.D(4)], ids=repr)
def test_spatial_mean_is_invariant(G: Group) -> None:
    report = assert_equivariant(lambda x: x.mean(dim=(2, 3)), G, Image(G), Trivial())
    assert report.passed
    assert report.max_error < 1e-12
    assert len(report.errors) == len(G.testing_elements())
    assert report.dtype == torch.float64


@pytest.mark.parametrize("G", [ec.C(4), ec.D(4), ec.C(8), ec.SO2(), ec.O2()], ids=repr)
def test_identity_function_is_equivariant(G: Group) -> None:
    report = assert_equivariant(lambda x: x, G, Image(G), Image(G))
    assert report.max_error == 0.0


@pytest.mark.parametrize("f", [torch.tanh, torch.relu, lambda x: x**2 - 0.5 * x], ids=["tanh", "relu", "poly"])
@pytest.mark.parametrize("G", [ec.C(4), ec.D(4)], ids=repr)
def test_pointwise_nonlinearity_is_equivariant_on_the_pixel_grid(f: Callable, G: Group) -> None:
    assert assert_equivariant(f, G, Image(G), Image(G)).max_error == 0.0


def test_softmax_over_the_group_axis_is_equivariant() -> None:
    G = ec.D(4)
    assert_equivariant(lambda logits: logits.softmax(dim=1), G, Regular(G), Regular(G))


@pytest.mark.parametrize("G", [ec.SO3(), ec.O3(), ec.SO2(), ec.D(5)], ids=repr)
def test_point_cloud_functions(G: Group) -> None:
    centred = assert_equivariant(lambda p: p - p.mean(1, keepdim=True), G, Points(G), Points(G))
    assert centred.max_error < 1e-12
    assert_invariant(lambda p: p.norm(dim=-1).sum(1), G, Points(G))
    assert_equivariant(lambda p: p.mean(1), G, Points(G), Vectors(G))


def test_set_sum_is_invariant_and_elementwise_map_equivariant() -> None:
    G = ec.S(5)
    assert_invariant(lambda x: x.sum(1), G, Set(G))
    assert_equivariant(lambda x: torch.sin(x) * x.sum(1, keepdim=True), G, Set(G), Set(G))


def test_rotation_averaged_cnn_is_equivariant() -> None:
    G = ec.C(4)
    report = assert_equivariant(rotation_averaged(random_cnn()), G, Image(G), Image(G))
    assert report.max_error < 1e-12


# ---------------------------------------------------------------- the others fail, with a report


def test_random_cnn_fails_and_names_the_worst_element() -> None:
    G = ec.C(4)
    with pytest.raises(EquivarianceError, match=r"f is not equivariant: .*max error .* at C\(4\)\[") as info:
        assert_equivariant(random_cnn(), G, Image(G), Image(G))
    assert isinstance(info.value, AssertionError)
    message = str(info.value)
    report = equivariance_error(random_cnn(), G, Image(G), Image(G))
    assert not report.passed
    assert report.errors[0] == 0.0  # the identity
    assert report.max_error == max(report.errors) > 0.1
    worst = report.elements[report.worst]
    assert worst.startswith("C(4)[")
    assert f"max error {report.max_error:.3e} at {worst}" in message
    for text, err in zip(report.elements, report.errors, strict=True):
        assert f"{text}: error {err:.3e}" in message


def test_continuous_group_failure_names_the_angle() -> None:
    G = ec.SO2()
    with pytest.raises(EquivarianceError, match=r"at SO2\(\) rotation by -?[0-9.]+°"):
        assert_equivariant(random_cnn(), G, Image(G), Image(G))


def test_non_invariant_function_fails_assert_invariant() -> None:
    G = ec.C(4)
    with pytest.raises(EquivarianceError, match=r"C\(4\)\[1\] = r\^1 \(rotation by 90°\): error"):
        assert_invariant(lambda x: x[:, :, 0, 0], G, Image(G))


def test_equivariance_error_measures_without_raising() -> None:
    G = ec.C(4)
    report = equivariance_error(lambda x: x + 1e-3 * x[:, :, :1, :1], G, Image(G), Image(G))
    assert not report.passed
    assert 0 < report.max_error < 1e-2


def test_tolerances_decide_pass_or_fail() -> None:
    G = ec.C(4)
    f = lambda x: x + 1e-10 * x[:, :, :1, :1]  # noqa: E731 -- off by at most ~1e-10
    assert default_tolerance(torch.float64) == (1e-9, 1e-7)
    assert default_tolerance(torch.float32) == (1e-5, 1e-5)
    assert default_tolerance(torch.int64) == (0.0, 0.0)
    assert assert_equivariant(f, G, Image(G), Image(G)).passed
    with pytest.raises(EquivarianceError, match=r"tolerance 1\.0e-12"):
        assert_equivariant(f, G, Image(G), Image(G), atol=1e-12, rtol=0.0)


def test_elements_argument_restricts_the_check() -> None:
    G = ec.C(4)
    report = assert_equivariant(random_cnn(), G, Image(G), Image(G), elements=G.identity(1))
    assert report.errors == [0.0]


# ---------------------------------------------------------------- tuple outputs


def test_tuple_outputs_with_one_action_each() -> None:
    G = ec.D(4)

    def f(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.mean(dim=(2, 3)), torch.tanh(x)

    assert assert_equivariant(f, G, Image(G), [Trivial(), Image(G)]).max_error < 1e-12
    # a wrong action for the second output is caught
    with pytest.raises(EquivarianceError):
        assert_equivariant(f, G, Image(G), [Trivial(), Trivial()])
    with pytest.raises(ShapeError, match="f returned 2 outputs but 3 output actions were given"):
        assert_equivariant(f, G, Image(G), [Trivial(), Image(G), Trivial()])


def test_outputs_must_be_tensors() -> None:
    G = ec.C(4)
    with pytest.raises(EquicanonError, match="f must return a tensor or a tuple of tensors, got dict"):
        assert_equivariant(lambda x: {"y": x}, G, Image(G), Trivial())


# ---------------------------------------------------------------- rules


def test_in_place_modification_of_the_input_is_reported() -> None:
    G = ec.C(4)

    def f(x: torch.Tensor) -> torch.Tensor:
        return x.abs_().mean(dim=(2, 3))  # invariant, but writes into its input

    with pytest.raises(EquivarianceError, match="f modified its input in place"):
        assert_equivariant(f, G, Image(G), Trivial())
    report = equivariance_error(f, G, Image(G), Trivial())
    assert report.passed
    assert report.notes == ["f modified its input in place"]
    assert "note: f modified its input in place" in str(report)


def test_the_callers_input_is_not_modified_by_the_check() -> None:
    G = ec.C(4)
    x = torch.randn(2, 3, 9, 9)
    before = x.clone()
    assert_equivariant(lambda t: t, G, Image(G), Image(G), x)
    assert torch.equal(x, before) and x.dtype == torch.float32


SEEN: list[tuple[int, torch.dtype, torch.dtype]] = []


class Recorder(nn.Module):
    """Records (module id, parameter dtype, input dtype) on every call; its bias breaks nothing (it is invariant)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))
        self.register_buffer("offset", torch.tensor(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        SEEN.append((id(self), self.scale.dtype, x.dtype))
        return self.scale * x + self.offset


def test_modules_are_deep_copied_and_cast_to_float64() -> None:
    SEEN.clear()
    module = Recorder()
    state = {k: v.clone() for k, v in module.state_dict().items()}
    G = ec.C(4)
    report = assert_equivariant(module, G, Image(G), Image(G), torch.randn(2, 3, 8, 8))
    assert report.dtype == torch.float64
    assert SEEN and all(seen == (SEEN[0][0], torch.float64, torch.float64) for seen in SEEN)
    assert SEEN[0][0] != id(module)  # a copy ran, not the caller's module
    assert module.scale.dtype == torch.float32 and module.offset.dtype == torch.float32
    assert all(torch.equal(module.state_dict()[k], v) for k, v in state.items())


def test_dtype_none_keeps_the_callers_dtype() -> None:
    SEEN.clear()
    module = Recorder()
    G = ec.C(4)
    report = assert_equivariant(module, G, Image(G), Image(G), torch.randn(2, 3, 8, 8), dtype=None)
    assert report.dtype == torch.float32
    assert {seen[0] for seen in SEEN} == {id(module)}
    assert {seen[1:] for seen in SEEN} == {(torch.float32, torch.float32)}
    assert (report.atol, report.rtol) == default_tolerance(torch.float32)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_outputs_fail(bad: float) -> None:
    G = ec.C(4)
    f = lambda x: x * bad  # noqa: E731
    with pytest.raises(EquivarianceError, match="f is not equivariant"):
        assert_equivariant(f, G, Image(G), Image(G))
    report = equivariance_error(f, G, Image(G), Image(G))
    assert not report.passed
    assert math.isnan(report.max_error)


def test_one_nan_among_finite_errors_is_the_worst() -> None:
    G = ec.C(4)
    x = torch.randn(2, 3, 7, 7, dtype=torch.float64)

    def f(t: torch.Tensor) -> torch.Tensor:
        # NaN only for the input turned by 180°, whose top-left pixel is the original bottom-right one
        return t.mean(dim=(2, 3)) * torch.where(t[:, :1, 0, 0] == x[:, :1, -1, -1], math.nan, 1.0)

    report = equivariance_error(f, G, Image(G), Trivial(), x)
    assert math.isnan(report.errors[2]) and not any(math.isnan(report.errors[k]) for k in (0, 1, 3))
    assert report.worst == 2 and math.isnan(report.max_error) and not report.passed


@pytest.mark.parametrize("G", [ec.SO3(), ec.O3(), ec.SE3(), ec.E3()], ids=repr)
def test_float32_elements_are_reprojected_when_checked_in_float64(G) -> None:
    """A float32 rotation cast to float64 is orthogonal only to ~1e-7; the checker re-projects it,
    so an exactly equivariant map passes the float64 tolerance with float32 samples."""
    g32 = G.sample(6, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    g64 = G.cast(g32, torch.float64)
    m = G.matrix(g64)
    eye = torch.eye(3, dtype=torch.float64).expand_as(m)
    assert torch.allclose(m.transpose(1, 2) @ m, eye, atol=1e-14)
    assert torch.allclose(g64, g32.double(), atol=1e-6)
    assert torch.equal(torch.sign(torch.linalg.det(m)), torch.sign(torch.linalg.det(G.matrix(g32).double())))
    action = ec.actions.Points(G)
    ec.testing.assert_equivariant(lambda x: x - x.mean(dim=1, keepdim=True), G, action, ec.actions.Vectors(G),
                                  torch.randn(2, 7, 3), elements=g32)
