"""The bad-input matrix: every public entry point against every kind of bad (or unusual) input.

Each call gives either a correct result or a typed equicanon error that says what was expected
and what came, and never modifies its input. Entry points: every registered canonicalizer
configuration, the actions, Canonicalized, GroupAveraged, FrameAveraged; then groups, data
loaders and configs (with did-you-mean hints) and the command line.

Policy for NaN/Inf: canonicalizers (and so the wrappers around them) refuse a non-finite CPU input
with :class:`~equicanon.errors.InputValueError`: it has no pose (accelerator inputs are not read, which
would force a host sync). Built with ``check_inputs=False`` they skip that check, and then, like the actions and GroupAveraged, a
non-finite entry in one sample makes that sample's output non-finite and leaves the other samples'
outputs unchanged, never finite garbage. FrameAveraged, whose eigendecomposition fails on such
input, raises :class:`~equicanon.errors.InputValueError` too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from torch import nn

import equicanon as ec
from equicanon import actions as A
from equicanon.canonicalizers.base import available, entry
from equicanon.errors import (
    ConfigError,
    DeviceError,
    DTypeError,
    ElementError,
    EquicanonError,
    GroupMismatchError,
    InputValueError,
    ShapeError,
)
from equicanon.models import PointEncoder

# ------------------------------------------------------------------ subjects


@dataclass
class Subject:
    """One entry point taking a tensor: ``call(x)``; ``make(batch, dtype)`` gives a valid input."""

    name: str
    call: Callable[[torch.Tensor], object]
    make: Callable[[int, torch.dtype], torch.Tensor]
    module: nn.Module | None = None  # whose parameters set the dtype and device the input must match
    square: bool = False  # needs square images (a group with 90° rotations)
    channels: Callable[[torch.Tensor], torch.Tensor] | None = None  # a wrong channel/feature count, if checked
    integers: bool = False  # accepts integer inputs (label maps, logits, sets)
    batch_independent: bool = True  # sample i of the output depends on sample i of the input only
    nonfinite: type[Exception] | None = None  # raised on NaN/Inf input instead of propagating it
    skip: tuple[str, ...] = field(default_factory=tuple)


def _outputs(y: object) -> list[torch.Tensor]:
    """The tensors of a result: a Canonicalization's canonical form and pose, or the tensor itself."""
    if isinstance(y, ec.canonicalizers.Canonicalization):
        return [y.canonical, y.pose]
    assert isinstance(y, torch.Tensor), type(y)
    return [y]


def _shape(case: ec.canonicalizers.RegistryCase, batch: int, size: int = 8) -> tuple[int, ...]:
    return (batch, *(size if s == "size" else int(s) for s in case.input_shape[1:]))


def _randn(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def _registry_subjects() -> list[Subject]:
    subjects = []
    for name in available():
        for case in entry(name).test_cases():
            torch.manual_seed(0)
            canon = case.make().eval()
            image = "size" in case.input_shape
            quarter = image and canon.group.needs_square_images

            def make(batch: int, dtype: torch.dtype, case: ec.canonicalizers.RegistryCase = case) -> torch.Tensor:
                return _randn(_shape(case, batch), dtype)

            def channels(x: torch.Tensor) -> torch.Tensor:
                return torch.cat([x, x[:, :1]], dim=1) if x.ndim == 4 else torch.cat([x, x[..., :1]], dim=-1)

            subjects.append(Subject(f"{name}[{case.name}]", canon, make, module=canon, square=quarter,
                                    channels=channels, nonfinite=InputValueError))
    return subjects


class _Pool(nn.Module):
    """A tiny predictor for images: mean over pixels, then a linear layer: ``(B, C, H, W) → (B, 5)``."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.linear = nn.Linear(channels, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.mean(dim=(2, 3)))  # type: ignore[no-any-return]


def _image(batch: int, dtype: torch.dtype) -> torch.Tensor:
    return _randn((batch, 3, 8, 8), dtype)


def _points(batch: int, dtype: torch.dtype) -> torch.Tensor:
    return _randn((batch, 10, 3), dtype)


def _action(action: A.Action, make: Callable[[int, torch.dtype], torch.Tensor]) -> Callable[[torch.Tensor], object]:
    group = action.group
    assert group is not None

    elements = group.sample(4, generator=torch.Generator().manual_seed(3))  # the same first rows for every batch

    def call(x: torch.Tensor) -> torch.Tensor:
        g = elements[: x.shape[0]] if x.ndim > 1 else elements[:1]
        if g.is_floating_point() and x.dtype == torch.float64:
            g = g.double()
        return action(g.to(x.device), x)  # type: ignore[no-any-return]

    return call


def _action_subjects() -> list[Subject]:
    def wrong_d(x: torch.Tensor) -> torch.Tensor:
        return x[..., :2]

    return [
        Subject("Image(C(4))", _action(A.Image(ec.C(4)), _image), _image, square=True),
        Subject("Image(D(4))", _action(A.Image(ec.D(4)), _image), _image, square=True),
        Subject("Image(C(8))", _action(A.Image(ec.C(8)), _image), _image, square=True),
        Subject("Image(SO2())", _action(A.Image(ec.SO2()), _image), _image),
        Subject("Mask(D(4))", _action(A.Mask(ec.D(4)), _image), _image, square=True, integers=True,
                skip=("missing_dim",)),  # (C, H, W) is a valid batch of label maps
        Subject("Points(SO3())", _action(A.Points(ec.SO3()), _points), _points, channels=wrong_d),
        Subject("Points(SE3())", _action(A.Points(ec.SE3()), _points), _points, channels=wrong_d),
        Subject("Vectors(O3())", _action(A.Vectors(ec.O3()), _points), _points, channels=wrong_d,
                skip=("extra_dim",)),  # (B, *, d): any number of middle axes
        Subject("Particles(E3())", _action(A.Particles(ec.E3()), lambda b, d: _randn((b, 5, 7), d)),
                lambda b, d: _randn((b, 5, 7), d), channels=lambda x: x[..., :5]),
        Subject("Regular(C(4))", _action(A.Regular(ec.C(4)), lambda b, d: _randn((b, 4), d)),
                lambda b, d: _randn((b, 4), d), channels=lambda x: x[:, :3], integers=True),
        Subject("Set(S(4))", _action(A.Set(ec.S(4)), lambda b, d: _randn((b, 4, 3), d)),
                lambda b, d: _randn((b, 4, 3), d), channels=lambda x: x[:, :3], integers=True),
    ]


def _wrapper_subjects() -> list[Subject]:
    torch.manual_seed(0)
    canon = ec.canonicalizers.GroupConv(ec.C(4), 3, hidden=4, kernel_size=3)
    canonicalized = ec.Canonicalized(_Pool(), canon).eval()
    points = ec.Canonicalized(PointEncoder(3, out_dim=4, hidden=8),
                              ec.canonicalizers.VectorNeurons(ec.SO3(), hidden=8, layers=1, k=4)).eval()
    averaged = ec.GroupAveraged(_Pool(), ec.D(4)).eval()
    frames = ec.FrameAveraged(PointEncoder(3, out_dim=4, hidden=8), ec.SO3()).eval()

    def more_channels(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x[:, :1]], dim=1)

    return [
        Subject("Canonicalized(GroupConv(C(4)))", canonicalized, _image, module=canonicalized, square=True,
                channels=more_channels, nonfinite=InputValueError),
        Subject("Canonicalized(VectorNeurons(SO3()))", points, _points, module=points,
                channels=lambda x: x[..., :2], nonfinite=InputValueError),
        # no channel check: the predictor decides which channel counts it takes (its own errors)
        Subject("GroupAveraged(D(4))", averaged, _image, module=averaged, square=True),
        Subject("FrameAveraged(SO3())", frames, _points, module=frames, channels=lambda x: x[..., :2],
                nonfinite=InputValueError),
    ]


SUBJECTS = _registry_subjects() + _action_subjects() + _wrapper_subjects()


def _subjects(variant: str, where: Callable[[Subject], bool] = lambda s: True) -> list[object]:
    return [pytest.param(s, id=s.name) for s in SUBJECTS if variant not in s.skip and where(s)]


def _call_unmodified(subject: Subject, x: torch.Tensor) -> object:
    """``subject.call(x)``, checking that ``x`` comes back unmodified (values and strides) whatever happens."""
    before = x.clone() if x.device.type != "meta" else None
    strides = x.stride()
    try:
        return subject.call(x)
    finally:
        if before is not None:
            assert torch.equal(x, before) or (torch.isnan(before).any() and torch.equal(x.isnan(), before.isnan())), \
                f"{subject.name} modified its input"
        assert x.stride() == strides


def _expect(subject: Subject, x: torch.Tensor, error: type[Exception], *words: str) -> str:
    with pytest.raises(error) as info:
        _call_unmodified(subject, x)
    message = str(info.value)
    assert isinstance(info.value, EquicanonError)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    return message


# ------------------------------------------------------------------ shapes


@pytest.mark.parametrize("subject", _subjects("extra_dim"))
def test_an_extra_dimension_is_a_shape_error(subject: Subject) -> None:
    x = subject.make(2, torch.float32)[None]
    _expect(subject, x, ShapeError, str(tuple(x.shape)).replace(",)", ")").removesuffix(")"))


@pytest.mark.parametrize("subject", _subjects("missing_dim"))
def test_a_missing_batch_dimension_is_a_shape_error(subject: Subject) -> None:
    _expect(subject, subject.make(2, torch.float32)[0], ShapeError, "got")


@pytest.mark.parametrize("subject", _subjects("channels", lambda s: s.channels is not None))
def test_a_wrong_channel_or_feature_count_is_a_shape_error(subject: Subject) -> None:
    assert subject.channels is not None
    x = subject.channels(subject.make(2, torch.float32))
    _expect(subject, x, ShapeError, "expected", "got")


@pytest.mark.parametrize("subject", _subjects("non_square", lambda s: s.square))
def test_non_square_images_under_quarter_turns_are_a_shape_error(subject: Subject) -> None:
    x = subject.make(2, torch.float32)[..., :-1]
    _expect(subject, x, ShapeError, "square", f"H={x.shape[-2]}, W={x.shape[-1]}")


@pytest.mark.parametrize("subject", _subjects("zero_size", lambda s: s.module is not None))
def test_an_empty_sample_dimension_is_a_shape_error(subject: Subject) -> None:
    x = subject.make(2, torch.float32)[..., :0]  # zero pixels / zero coordinates
    _expect(subject, x, ShapeError, "got")


# ------------------------------------------------------------------ batch sizes


@pytest.mark.parametrize("subject", _subjects("empty"))
def test_an_empty_batch_gives_an_empty_result(subject: Subject) -> None:
    full = _outputs(_call_unmodified(subject, subject.make(2, torch.float32)))
    empty = _outputs(_call_unmodified(subject, subject.make(0, torch.float32)))
    for a, b in zip(full, empty, strict=True):
        assert b.shape == (0, *a.shape[1:]) and b.dtype == a.dtype


@pytest.mark.parametrize("subject", _subjects("one", lambda s: s.batch_independent))
def test_a_batch_of_one_gives_the_first_row_of_a_larger_batch(subject: Subject) -> None:
    x = subject.make(3, torch.float64)
    if subject.module is not None:
        subject.module.double()
    try:
        full = _outputs(_call_unmodified(subject, x))
        one = _outputs(_call_unmodified(subject, x[:1]))
    finally:
        if subject.module is not None:
            subject.module.float()
    for a, b in zip(full, one, strict=True):
        torch.testing.assert_close(b, a[:1], atol=1e-10, rtol=1e-10)


# ------------------------------------------------------------------ values


def _poison(x: torch.Tensor, value: float) -> torch.Tensor:
    """``x`` with one entry of sample 0, near its middle, set to ``value``."""
    y = x.clone()
    flat = y[0].reshape(-1)
    flat[flat.numel() // 2] = value
    return y


@contextmanager
def _input_checks_off(module: nn.Module | None) -> Iterator[bool]:
    """Turn ``check_inputs`` off in every canonicalizer inside ``module``; yields whether there was one."""
    canons = [m for m in (module.modules() if module is not None else ())
              if isinstance(m, ec.canonicalizers.Canonicalizer)]
    before = [c.check_inputs for c in canons]
    for c in canons:
        c.check_inputs = False
    try:
        yield bool(canons)
    finally:
        for c, flag in zip(canons, before, strict=True):
            c.check_inputs = flag


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("subject", _subjects("nonfinite"))
def test_non_finite_input_gives_non_finite_output_for_that_sample_only(subject: Subject, value: float) -> None:
    """Canonicalizers refuse it (an InputValueError); with ``check_inputs`` off, and for actions and
    GroupAveraged, the sample's output is non-finite and the other samples' are unchanged."""
    x = subject.make(3, torch.float32)
    bad = _poison(x, value)
    if subject.nonfinite is not None:
        _expect(subject, bad, subject.nonfinite, "NaN or Inf")
        with _input_checks_off(subject.module) as unchecked:
            if unchecked:
                _propagates(subject, x, bad)
        return
    _propagates(subject, x, bad)


def _propagates(subject: Subject, x: torch.Tensor, bad: torch.Tensor) -> None:
    clean = _outputs(_call_unmodified(subject, x))
    poisoned = _outputs(_call_unmodified(subject, bad))
    first = poisoned[0]  # the canonical form (or the output)
    assert not bool(torch.isfinite(first[0]).all()), f"{subject.name}: a non-finite input gave a finite output"
    if subject.batch_independent:
        for a, b in zip(clean, poisoned, strict=True):
            assert torch.equal(a[1:], b[1:]), f"{subject.name}: a non-finite sample changed other samples' outputs"


@pytest.mark.parametrize("subject", _subjects("integers"))
def test_integer_inputs_work_where_meaningful_else_are_a_dtype_error(subject: Subject) -> None:
    x = (subject.make(2, torch.float32) * 10).round().to(torch.int64)
    if subject.integers:
        out = _outputs(_call_unmodified(subject, x))[0]
        assert out.dtype == torch.int64 and out.shape == x.shape
        reference = _outputs(subject.call(x.double()))[0]
        assert torch.equal(out.double(), reference)
    else:
        _expect(subject, x, DTypeError, "int64")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("subject", _subjects("low_precision"))
def test_half_precision_inputs_work_with_a_model_in_that_precision(subject: Subject, dtype: torch.dtype) -> None:
    x = subject.make(2, torch.float32)
    if subject.module is not None:
        subject.module.to(dtype)
    try:
        low = _outputs(_call_unmodified(subject, x.to(dtype)))
    finally:
        if subject.module is not None:
            subject.module.float()
    full = _outputs(subject.call(x))
    assert low[0].dtype == dtype and low[0].shape == full[0].shape
    assert bool(torch.isfinite(low[0]).all())
    if subject.module is None:  # actions: the same exact index operations or interpolation, rounded once
        torch.testing.assert_close(low[0].float(), full[0], atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("subject", _subjects("mixed_precision", lambda s: s.module is not None))
def test_input_dtype_unlike_the_parameters_is_a_dtype_error(subject: Subject) -> None:
    if isinstance(subject.module, _UPCASTING):
        # these compute a less precise input in their parameters' precision (float32 data, float64 network):
        # only a more precise input, which the network would round, is refused
        _call_unmodified(subject, subject.make(2, torch.float16))
        _expect(subject, subject.make(2, torch.float64), DTypeError, "torch.float64", "torch.float32")
    else:
        _expect(subject, subject.make(2, torch.float16), DTypeError, "torch.float16", "torch.float32")


#: canonicalizers whose network takes inputs less precise than its parameters (docs/points.md)
_UPCASTING = (ec.canonicalizers.VectorNeurons, ec.canonicalizers.ParticleVectorNeurons)


@pytest.mark.parametrize("subject", _subjects("autocast", lambda s: s.module is not None))
def test_bfloat16_autocast_works(subject: Subject) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = _outputs(_call_unmodified(subject, subject.make(2, torch.float32)))
    assert bool(torch.isfinite(out[0].float()).all())


# ------------------------------------------------------------------ memory layout and devices


def _layouts(x: torch.Tensor) -> list[torch.Tensor]:
    """``x`` as non-contiguous views with the same values (and as channels_last for images)."""
    views = [x.transpose(-1, -2).contiguous().transpose(-1, -2), torch.stack([x, x], dim=-1)[..., 0]]
    if x.ndim == 4:
        views.append(x.contiguous(memory_format=torch.channels_last))
    return views


@pytest.mark.parametrize("subject", _subjects("layout"))
def test_non_contiguous_and_channels_last_inputs_give_the_same_result(subject: Subject) -> None:
    x = subject.make(2, torch.float64)
    if subject.module is not None:
        subject.module.double()
    try:
        reference = _outputs(subject.call(x))
        for view in _layouts(x):
            assert torch.equal(view, x)
            for a, b in zip(reference, _outputs(_call_unmodified(subject, view)), strict=True):
                torch.testing.assert_close(b, a, atol=1e-12, rtol=1e-12)
    finally:
        if subject.module is not None:
            subject.module.float()


@pytest.mark.parametrize("subject", _subjects("device", lambda s: s.module is not None))
def test_input_on_another_device_than_the_parameters_is_a_device_error(subject: Subject) -> None:
    _expect(subject, subject.make(2, torch.float32).to("meta"), DeviceError, "meta", "cpu")


@pytest.mark.parametrize("subject", _subjects("device", lambda s: s.module is None))
def test_actions_follow_the_data_device(subject: Subject) -> None:
    x = subject.make(2, torch.float32).to("meta")
    out = subject.call(x)
    assert isinstance(out, torch.Tensor) and out.device.type == "meta" and out.shape == x.shape


def test_elements_that_cannot_move_to_the_data_device_are_a_device_error() -> None:
    g = ec.C(4).sample(2).to("meta")
    with pytest.raises(DeviceError, match="on meta and cannot be moved to the data's device cpu"):
        A.Image(ec.C(4))(g, torch.zeros(2, 1, 4, 4))


# ------------------------------------------------------------------ groups that do not fit


@pytest.mark.parametrize(("call", "words"), [
    (lambda: ec.Canonicalized(_Pool(), ec.canonicalizers.GroupConv(ec.C(4), 3), output=A.Image(ec.C(8))),
     ("C(8)", "C(4)")),
    (lambda: ec.Canonicalized(_Pool(), ec.canonicalizers.GroupConv(ec.D(4), 3), output=A.Vectors(ec.C(4))),
     ("C(4)", "D(4)")),
    (lambda: ec.GroupAveraged(_Pool(), ec.C(4), input=A.Image(ec.D(4))), ("D(4)",)),
    (lambda: ec.GroupAveraged(_Pool(), ec.C(4), output=A.Regular(ec.C(8))), ("C(8)",)),
    (lambda: ec.FrameAveraged(PointEncoder(3), ec.SO3(), input=A.Points(ec.O3())), ("O3()",)),
    (lambda: ec.canonicalizers.Contrastive(ec.C(4), PointEncoder(2), action=A.Points(ec.C(8))), ("C(8)", "C(4)")),
    (lambda: ec.canonicalizers.GroupConv(ec.SO3(), 3), ("SO3()",)),
    (lambda: ec.canonicalizers.VectorNeurons(ec.SO2()), ("SO2()",)),
    (lambda: ec.canonicalizers.Sort(ec.C(4), 3), ("C(4)",)),
    (lambda: ec.canonicalizers.ParticleVectorNeurons(ec.SO3()), ("SO3()",)),
], ids=lambda v: "" if callable(v) else "-".join(v))
def test_a_canonicalizer_whose_group_differs_from_the_action_is_a_group_mismatch(call: Callable[[], object],
                                                                                   words: tuple[str, ...]) -> None:
    with pytest.raises(GroupMismatchError) as info:
        call()
    for word in words:
        assert word in str(info.value)


# ------------------------------------------------------------------ configuration values


@pytest.mark.parametrize(("call", "cls", "pattern"), [
    (lambda: ec.C(-1), ConfigError, "C(n): n: expected an integer >= 1, got -1"),
    (lambda: ec.D(0), ConfigError, "D(n): n: expected an integer >= 1, got 0"),
    (lambda: ec.S(2.5), ConfigError, "S(n): n: expected an integer >= 1, got float 2.5"),
    (lambda: ec.C(True), ConfigError, "got bool True"),
    (lambda: ec.C(4).sample(-2), ConfigError, "batch: expected an integer >= 0, got -2"),
    (lambda: ec.C(4).compose(torch.tensor([1]), torch.tensor([4])), ElementError, "expected indices in 0..3"),
    (lambda: ec.SO3().compose(torch.eye(3), torch.eye(3)[None]), ElementError, "(B, 3, 3)"),
    (lambda: ec.canonicalizers.GroupConv(ec.C(4), in_channels=0), ConfigError, "in_channels: expected an integer >= 1"),
    (lambda: ec.canonicalizers.GroupConv(ec.C(4), 3, layers=1), ConfigError, "layers: expected an integer >= 2"),
    (lambda: ec.canonicalizers.GroupConv(ec.C(4), 3, crop=1.5), ConfigError, "crop must be a fraction in (0, 1]"),
    (lambda: ec.canonicalizers.GroupConv(ec.C(4), 3, temperature=-1), ConfigError, "temperature must be a positive"),
    (lambda: ec.canonicalizers.GroupConv(ec.C(8), 3, padding="zeroes"), ConfigError, "did you mean 'zeros'?"),
    (lambda: ec.canonicalizers.create("group_cnv"), ConfigError, "did you mean 'group_conv'?"),
    (lambda: ec.canonicalizers.Contrastive(ec.C(4), "conv_encodr", in_channels=3), ConfigError,
     "did you mean 'conv_encoder'?"),
    (lambda: ec.canonicalizers.VectorNeurons(ec.SO3(), hidden=-3), ConfigError, "hidden: expected an integer >= 1"),
    (lambda: ec.canonicalizers.Sort(ec.S(3), 0), ConfigError, "in_features: expected an integer >= 1, got 0"),
    (lambda: ec.GroupAveraged(_Pool(), ec.C(4), elements_per_call=0), ConfigError,
     "elements_per_call: expected an integer >= 1"),
    (lambda: ec.GroupAveraged(_Pool(), ec.SO2()), GroupMismatchError, "finite group"),
    (lambda: ec.Canonicalized(_Pool(), "group_conv"), ConfigError, "must be an equicanon Canonicalizer, got str"),
    (lambda: A.Image(ec.C(8), mode="bilnear"), ConfigError, "did you mean 'bilinear'?"),
], ids=lambda v: "" if callable(v) or isinstance(v, type) else v[:40])
def test_bad_configuration_values_are_typed_errors(call: Callable[[], object], cls: type[Exception],
                                                    pattern: str) -> None:
    with pytest.raises(cls, match=re.escape(pattern)):
        call()


WHERE = {"planar": lambda g: g.kind == "planar", "spatial": lambda g: g.kind == "spatial" and not g.is_finite,
         "rigid": lambda g: g.kind == "rigid"}


@pytest.mark.parametrize(("name", "where", "hint"), [
    ("C4x", "planar", "did you mean 'C4'?"),
    ("S02", "planar", "did you mean 'SO2'?"),
    ("SO3", "planar", "did you mean 'SO2'?"),
    ("SO2", "spatial", "did you mean 'SO3'?"),
    ("SE2", "rigid", "did you mean 'SE3'?"),
    ("octahedrl", None, "did you mean 'Octahedral'?"),
    ("C(-1)", None, "must be an integer >= 1, got -1"),
    ("D0", None, "must be an integer >= 1, got 0"),
])
def test_one_group_parser_with_did_you_mean(name: str, where: str | None, hint: str) -> None:
    from equicanon.groups import families, parse_group

    accepts = None if where is None else WHERE[where]
    with pytest.raises(ConfigError, match=re.escape(hint)) as info:
        parse_group(name, where=accepts)
    if accepts is not None and "must be" not in hint:  # lists what is accepted
        assert all(repr(f.name) in str(info.value) for f in families() if any(accepts(g) for g in f.examples))


def test_there_is_one_group_parser() -> None:
    pytest.importorskip("lightning")
    import equicanon.training.nbody as nbody
    import equicanon.training.points as points

    assert not hasattr(points, "parse_spatial_group") and not hasattr(nbody, "parse_rigid_group")
    assert not hasattr(ec.training, "parse_group")
    assert ec.groups.parse_group("S5") == ec.S(5) and ec.groups.parse_group("Octahedral") == ec.groups.Octahedral()


# ------------------------------------------------------------------ data loaders


@pytest.mark.parametrize(("call", "cls", "pattern"), [
    (lambda: ec.data.load_fashion_mnist("val"), ConfigError, "split must be 'train' or 'test', got 'val'"),
    (lambda: ec.data.load_mnist("valid"), ConfigError, "split must be 'train' or 'test', got 'valid'"),
    (lambda: ec.data.make_pointclouds(-1, 16, generator=torch.Generator()), ConfigError, "expected an integer >= "),
    (lambda: ec.data.make_pointclouds(4, 16, generator=torch.Generator(), rotate="so4"), ConfigError,
     "did you mean 'SO3'?"),
    (lambda: ec.data.make_set_task(4, set_size=5, generator=torch.Generator(), target="medain"), ConfigError,
     "did you mean 'median'?"),
    (lambda: ec.data.make_nbody(2, generator=torch.Generator(), particles=0), ConfigError, "expected an integer >= 1"),
], ids=lambda v: "" if callable(v) or isinstance(v, type) else v[:40])
def test_data_functions_reject_bad_arguments(call: Callable[[], object], cls: type[Exception], pattern: str) -> None:
    with pytest.raises(cls, match=re.escape(pattern)):
        call()


@pytest.mark.parametrize("loader", ["load_fashion_mnist", "load_mnist"])
def test_missing_dataset_files_name_the_file_and_how_to_get_it(loader: str, tmp_path: Path) -> None:
    from equicanon.data import DataNotFoundError

    with pytest.raises(DataNotFoundError) as info:
        getattr(ec.data, loader)("train", data_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and "train-images-idx3-ubyte.gz" in message and "install" in message


@pytest.mark.parametrize("dataset", ["fashion_mnist", "mnist"])
def test_a_corrupt_dataset_file_is_a_corrupt_data_error_naming_it(dataset: str, tmp_path: Path, fake_split) -> None:
    from equicanon.data import CorruptDataError

    fake_split(tmp_path, "train", 4)
    fake_split(tmp_path, "t10k", 4)
    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:20])  # a truncated gzip stream
    load = ec.data.load_fashion_mnist if dataset == "fashion_mnist" else ec.data.load_mnist
    assert load("train", tmp_path)[0].shape == (4, 28, 28)  # the intact split still loads
    with pytest.raises(CorruptDataError, match=re.escape(str(bad))):
        load("test", tmp_path)


# ------------------------------------------------------------------ command line


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:.*LightningCLI's args parameter")
@pytest.mark.parametrize(("override", "words"), [
    ("--data.batch_size=-4", ("batch_size: expected an integer >= 1, got -4",)),
    ("--data.rotate=C4x", ("rotate", "'C4x'", "did you mean 'C4'?")),
    ("--model.model.init_args.canonicalizer.init_args.group=D(0)", ("must be an integer >= 1, got 0",)),
    ("--model.task=clasification", ("did you mean 'classification'?",)),
])
def test_bad_config_values_on_the_command_line_exit_2_with_the_message(override: str, words: tuple[str, ...],
                                                                       tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("lightning")
    from equicanon.cli import main

    config = Path(__file__).resolve().parents[1] / "configs" / "rotated_fashion_mnist_c4.yaml"
    args = ["fit", "--config", str(config), f"--data.data_dir={tmp_path}", f"--trainer.default_root_dir={tmp_path}",
            "--trainer.accelerator=cpu", override]
    assert main(args) == 2
    # the last line: Lightning may log "INFO: Seed set to 0" first (to this stderr when this test is the first to
    # import it, as when the file runs alone)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("equicanon fit: error: ")
    for word in words:
        assert word in err, err
