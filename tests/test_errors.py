"""Typed errors: every bad input raises a named error saying what was expected and what came."""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractContextManager

import pytest
import torch

import equicanon as ec
from equicanon import errors
from equicanon.actions import Image, Mask, Points, Regular, Set, Vectors
from equicanon.actions.functional import rotate_image
from equicanon.errors import (
    ConfigError,
    DeviceError,
    DTypeError,
    ElementError,
    EquicanonError,
    EquivarianceError,
    GroupMismatchError,
    InputValueError,
    MissingDependencyError,
    ShapeError,
    check_choice,
    check_finite,
    check_floating,
    check_positive_int,
    check_same_device,
    check_shape,
    format_shape,
    suggest,
)

BUILTIN_BASE = {
    ShapeError: ValueError,
    DTypeError: TypeError,
    DeviceError: ValueError,
    GroupMismatchError: ValueError,
    ElementError: ValueError,
    ConfigError: ValueError,
    InputValueError: ValueError,
    EquivarianceError: AssertionError,
    MissingDependencyError: ImportError,
}


def raises(cls: type[Exception], pattern: str) -> AbstractContextManager[pytest.ExceptionInfo[Exception]]:
    """``pytest.raises`` for ``cls`` whose message contains ``pattern`` literally."""
    return pytest.raises(cls, match=re.escape(pattern))


@pytest.mark.parametrize("cls", list(BUILTIN_BASE), ids=lambda c: c.__name__)
def test_every_error_is_an_equicanon_error_and_a_builtin_error(cls: type[Exception]) -> None:
    assert issubclass(cls, EquicanonError)
    assert issubclass(cls, BUILTIN_BASE[cls])


def test_every_public_error_class_is_covered() -> None:
    public = {getattr(errors, name) for name in errors.__all__}
    classes = {c for c in public if isinstance(c, type) and issubclass(c, Exception)}
    assert classes == set(BUILTIN_BASE) | {EquicanonError}


# ---------------------------------------------------------------- shapes

x4 = torch.zeros(2, 3, 8, 8)


@pytest.mark.parametrize(
    ("call", "cls", "message"),
    [
        (lambda: Image(ec.C(4))(torch.tensor([1]), torch.zeros(3, 8, 8)), ShapeError,
         "x: expected 4 dimensions (B, C, H, W), got 3 dimensions (3, 8, 8)"),
        (lambda: Image(ec.SO2())(ec.SO2().identity(1), torch.zeros(1, 1, 2, 8, 8)), ShapeError,
         "x: expected 4 dimensions (B, C, H, W), got 5 dimensions (1, 1, 2, 8, 8)"),
        (lambda: Image(ec.C(4))(torch.tensor([1]), [[1.0]]), DTypeError,
         "x: expected a torch.Tensor of shape (B, C, H, W), got list [[1.0]]"),
        (lambda: Mask(ec.C(4))(torch.tensor([1]), torch.zeros(8, 8)), ShapeError,
         "mask: expected 4 dimensions (B, C, H, W), got 2 dimensions (8, 8)"),
        (lambda: Points(ec.SO3())(ec.SO3().identity(1), torch.zeros(2, 5, 2)), ShapeError,
         "x: expected shape (B, N, d) with d=3, got (2, 5, 2) (d should be 3)"),
        (lambda: Points(ec.C(4))(torch.tensor([1]), torch.zeros(2, 5, 3)), ShapeError,
         "x: expected shape (B, N, d) with d=2, got (2, 5, 3) (d should be 2)"),
        (lambda: Points(ec.SO2())(ec.SO2().identity(1), torch.zeros(2, 2)), ShapeError,
         "x: expected 3 dimensions (B, N, d) with d=2, got 2 dimensions (2, 2)"),
        (lambda: Vectors(ec.O3())(ec.O3().identity(1), torch.zeros(2, 4, 2)), ShapeError,
         "with d=3, got (2, 4, 2) (d should be 3)"),
        (lambda: Regular(ec.C(4))(torch.tensor([1, 2]), torch.zeros(2, 5)), ShapeError,
         "Regular(C(4), dim=1): expected axis 1 of size |G| = 4, got shape (2, 5)"),
        (lambda: Regular(ec.D(4), dim=2)(torch.tensor([1]), torch.zeros(1, 8, 4)), ShapeError,
         "Regular(D(4), dim=2): expected axis 2 of size |G| = 8, got shape (1, 8, 4)"),
        (lambda: Regular(ec.C(4))(torch.tensor([1]), torch.zeros(4)), ShapeError,
         "x: expected 2 dimensions (B, G) with G=4, got 1 dimensions (4,)"),
        (lambda: Regular(ec.C(4), dim=3)(torch.tensor([1]), torch.zeros(1, 4)), ShapeError,
         "axis 3 is not a non-batch axis of a tensor with 2 dimensions"),
        (lambda: Set(ec.S(3))(ec.S(3).identity(2), torch.zeros(2, 4, 2)), ShapeError,
         "Set(S(3), dim=1): expected axis 1 of size n = 3, got shape (2, 4, 2)"),
        (lambda: Set(ec.S(3))(ec.S(3).identity(2), torch.zeros(3)), ShapeError,
         "x: expected 2 dimensions (B, n) with n=3, got 1 dimensions (3,)"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else "",
)
def test_wrong_shapes(call: Callable[[], object], cls: type[Exception], message: str) -> None:
    with raises(cls, message):
        call()


@pytest.mark.parametrize("G", [ec.C(4), ec.D(4), ec.C(8), ec.D(8), ec.C(12)], ids=repr)
@pytest.mark.parametrize("action", [Image, Mask], ids=lambda a: a.__name__)
def test_groups_with_quarter_turns_need_square_images(G: ec.C, action: type) -> None:
    with raises(ShapeError, f"{G!r} rotates by 90°, which needs square images; got H=8, W=9"):
        action(G)(G.identity(1), torch.zeros(1, 1, 8, 9))


@pytest.mark.parametrize("G", [ec.C(1), ec.C(2), ec.C(3), ec.C(6), ec.D(1), ec.D(2), ec.D(3), ec.SO2(), ec.O2()],
                         ids=repr)
def test_groups_without_quarter_turns_accept_non_square_images(G: ec.C) -> None:
    x = torch.randn(1, 2, 8, 9, dtype=torch.float64)
    assert torch.equal(Image(G)(G.identity(1, dtype=torch.float64), x), x)
    t = G.testing_elements(dtype=torch.float64)
    Image(G)(t, x.expand(len(t), 2, 8, 9))  # every testing element works on the 8 x 9 grid


def test_wrong_element_batch_size() -> None:
    with raises(ShapeError, "Image(C(4), padding='zeros', mode='bilinear'): got 3 group elements for a batch of 2 "
                            "samples; pass 2 or 1"):
        Image(ec.C(4))(torch.tensor([1, 2, 3]), x4)
    with raises(ShapeError, "Points(SO3()): got 3 group elements for a batch of 2 samples; pass 2 or 1"):
        Points(ec.SO3())(ec.SO3().identity(3), torch.zeros(2, 5, 3))
    with raises(ShapeError, "got 2 group elements for a batch of 1 samples"):
        Set(ec.S(3))(ec.S(3).identity(2), torch.zeros(1, 3))
    with raises(ElementError, "cannot expand a batch of 2 elements of C(4) to 5"):
        ec.C(4).expand(torch.tensor([0, 1]), 5)


# ---------------------------------------------------------------- dtypes


@pytest.mark.parametrize("G", [ec.C(8), ec.C(4), ec.D(4), ec.SO2(), ec.O2()], ids=repr)
@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.bool])
def test_images_must_be_floating(G: ec.C, dtype: torch.dtype) -> None:
    with raises(DTypeError, f"x: expected a floating-point tensor (float16, bfloat16, float32 or float64), "
                            f"got dtype {dtype}; convert it with .float()") as info:
        Image(G)(G.identity(1), torch.zeros(1, 1, 8, 8, dtype=dtype))
    assert isinstance(info.value, TypeError)


def test_rotate_image_and_points_must_be_floating() -> None:
    with raises(DTypeError, "got dtype torch.int64"):
        rotate_image(torch.zeros(1, 1, 4, 4, dtype=torch.long), ec.SO2().identity(1))
    with raises(DTypeError, "got dtype torch.int64"):
        Points(ec.SO2())(ec.SO2().identity(1), torch.zeros(1, 4, 2, dtype=torch.long))


@pytest.mark.parametrize("G", [ec.SO2(), ec.O2()], ids=repr)
def test_matrix_elements_must_be_floating(G: ec.SO2) -> None:
    g = torch.eye(2, dtype=torch.long)[None]
    message = f"g: expected {G!r} matrices with a floating dtype, got torch.int64"
    for call in (lambda: Image(G)(g, x4[:1]), lambda: Points(G)(g, torch.zeros(1, 3, 2)), lambda: G.matrix(g)):
        with raises(ElementError, message):
            call()
    with raises(ElementError, "matrices need a floating dtype, got torch.int64"):
        G.identity(2, dtype=torch.long)
    with raises(ElementError, "matrices need a floating dtype, got torch.int64"):
        G.sample(2, dtype=torch.long)


@pytest.mark.parametrize("bad", [torch.tensor([1.0]), torch.tensor([True])], ids=["float", "bool"])
def test_indices_must_be_integers(bad: torch.Tensor) -> None:
    with raises(ElementError, f"g: expected integer indices 0..3 of C(4) elements, got dtype {bad.dtype}"):
        Image(ec.C(4))(bad, x4[:1])


def test_elements_must_be_tensors_of_the_right_shape() -> None:
    with raises(ElementError, "a: expected an int64 tensor of C(4) element indices, got int"):
        ec.C(4).compose(1, torch.tensor([1]))  # type: ignore[arg-type]
    with raises(ElementError, "g: expected a batch of C(4) element indices of shape (B,), got a 0-d tensor"):
        ec.C(4).check(torch.tensor(1))
    with raises(ElementError, "g: expected SO3() elements as matrices of shape (B, 3, 3), got shape (3, 3)"):
        ec.SO3().check(torch.eye(3))
    with raises(ElementError, "g: expected SO2() elements as matrices of shape (B, 2, 2), got shape (1, 3, 3)"):
        Image(ec.SO2())(torch.eye(3)[None], x4[:1])
    with raises(ElementError, "g: expected S(3) permutations of shape (B, 3), got shape (1, 4)"):
        ec.S(3).check(torch.tensor([[0, 1, 2, 3]]))
    with raises(ElementError, "g: expected integer permutations of S(3), got dtype torch.float32"):
        ec.S(3).check(torch.tensor([[0.0, 1.0, 2.0]]))


# ---------------------------------------------------------------- values of elements


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ec.C(4).check(torch.tensor([7])), "g: expected indices in 0..3 for C(4), got values from 7 to 7"),
        (lambda: ec.C(4).inverse(torch.tensor([0, -1])),
         "a: expected indices in 0..3 for C(4), got values from -1 to 0"),
        (lambda: ec.D(4).compose(torch.tensor([1]), torch.tensor([8])), "b: expected indices in 0..7 for D(4)"),
        (lambda: ec.C(4).matrix(torch.tensor([4])), "expected indices in 0..3 for C(4), got values from 4 to 4"),
        (lambda: Image(ec.C(4))(torch.tensor([7, 2]), x4),
         "g: expected indices in 0..3 for C(4), got values from 2 to 7"),
        (lambda: Regular(ec.C(4))(torch.tensor([7]), torch.zeros(1, 4)), "expected indices in 0..3 for C(4)"),
        (lambda: ec.S(3).check(torch.tensor([[0, 0, 1]])),
         "g: each row must be a permutation of 0..2, got [[0, 0, 1]]"),
        (lambda: ec.S(3).compose(torch.tensor([[0, 1, 3]]), ec.S(3).identity(1)),
         "a: each row must be a permutation of 0..2, got [[0, 1, 3]]"),
        (lambda: Set(ec.S(3))(torch.tensor([[2, 2, 2]]), torch.zeros(1, 3)), "each row must be a permutation of 0..2"),
    ],
)
def test_invalid_element_values(call: Callable[[], object], message: str) -> None:
    with raises(ElementError, message):
        call()


# ---------------------------------------------------------------- groups that do not fit


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: Image(ec.S(3)), "Image: expected a planar group (C(n), D(n), SO2() or O2()), got S(3)"),
        (lambda: Image(ec.SO3()), "Image: expected a planar group (C(n), D(n), SO2() or O2()), got SO3()"),
        (lambda: Mask(ec.O3()), "Mask: expected a planar group (C(n), D(n), SO2() or O2()), got O3()"),
        (lambda: Regular(ec.SO2()), "Regular: expected a finite group with indexed elements (C(n), D(n), "
                                    "Octahedral()), got SO2()"),
        (lambda: Regular(ec.S(3)), "Regular: expected a finite group with indexed elements (C(n), D(n), "
                                   "Octahedral()), got S(3)"),
        (lambda: Set(ec.C(4)), "Set: expected a symmetric group S(n), got C(4)"),
        (lambda: Points(ec.S(3)), "Points: expected a group of rotations/reflections of the plane or of space "
                                  "(for sets use actions.Set), got S(3)"),
        (lambda: Vectors(ec.S(3)), "Vectors: expected a group of rotations/reflections of the plane or of space "
                                   "(for sets use actions.Set), got S(3)"),
        (lambda: ec.actions.Particles(ec.C(4)), "Particles: expected a 3-D group (SO3, O3, SE3, E3, Octahedral), "
                                               "got C(4)"),
        (lambda: Image(ec.C(4)).check_group(ec.C(8)),
         "Image(C(4), padding='zeros', mode='bilinear') acts with C(4), but the canonicalizer uses C(8)"),
    ],
)
def test_wrong_group(call: Callable[[], object], message: str) -> None:
    with raises(GroupMismatchError, message):
        call()


def test_matching_group_passes_check_group() -> None:
    Image(ec.C(4)).check_group(ec.C(4))
    Points(ec.SO3()).check_group(ec.SO3())


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: Image(ec.C(8), padding="zero"),
         "padding: expected one of 'zeros', 'border', 'reflection', got 'zero'; did you mean 'zeros'?"),
        (lambda: Image(ec.SO2(), padding="reflect"), "got 'reflect'; did you mean 'reflection'?"),
        (lambda: Image(ec.C(8), mode="bilinaer"),
         "mode: expected one of 'bilinear', 'nearest', got 'bilinaer'; did you mean 'bilinear'?"),
        (lambda: Mask(ec.C(8), padding="bordr"), "got 'bordr'; did you mean 'border'?"),
        (lambda: rotate_image(x4, ec.SO2().identity(1), padding="zero"), "got 'zero'; did you mean 'zeros'?"),
        (lambda: rotate_image(x4, ec.SO2().identity(1), mode="nearst"), "got 'nearst'; did you mean 'nearest'?"),
        (lambda: Image(ec.C(8), padding="circular"),
         "padding: expected one of 'zeros', 'border', 'reflection', got 'circular'"),
        (lambda: Image(ec.C(8), padding=3), "padding: expected one of 'zeros', 'border', 'reflection', got 3"),
        (lambda: Regular(ec.C(4), dim=0), "Regular: dim must be a non-batch axis (an int other than 0), got 0"),
        (lambda: Set(ec.S(3), dim=1.0), "Set: dim must be a non-batch axis (an int other than 0), got 1.0"),
        (lambda: ec.C(4).sample(-1), "batch: expected an integer >= 0, got -1"),
        (lambda: ec.S(9).elements(), "S(9).elements(): enumerating 362880 permutations is refused for n > 8"),
    ],
)
def test_bad_configuration(call: Callable[[], object], message: str) -> None:
    with raises(ConfigError, message) as info:
        call()
    assert isinstance(info.value, ValueError)


def test_unknown_string_without_a_close_match_has_no_hint() -> None:
    with pytest.raises(ConfigError) as info:
        Image(ec.C(8), padding="circular")
    assert "did you mean" not in str(info.value)


# ---------------------------------------------------------------- the check helpers


def test_check_shape_returns_bound_sizes() -> None:
    assert check_shape(torch.zeros(2, 3, 5, 6), "B C H W") == {"B": 2, "C": 3, "H": 5, "W": 6}
    assert check_shape(torch.zeros(2, 3, 5, 5), "B C N N", C=3) == {"B": 2, "C": 3, "N": 5}
    assert check_shape(torch.zeros(4, 7, 2, 3), "* N d", d=3) == {"N": 2, "d": 3}
    assert check_shape(torch.zeros(2, 3), "* B d")["B"] == 2


@pytest.mark.parametrize(
    ("x", "spec", "fixed", "cls", "message"),
    [
        (torch.zeros(2, 3), "B C H W", {}, ShapeError,
         "x: expected 4 dimensions (B, C, H, W), got 2 dimensions (2, 3)"),
        (torch.zeros(2, 4, 5, 5), "B C H W", {"C": 3}, ShapeError,
         "x: expected shape (B, C, H, W) with C=3, got (2, 4, 5, 5) (C should be 3)"),
        (torch.zeros(2, 4, 5, 6), "B C N N", {}, ShapeError,
         "x: expected shape (B, C, N, N), got (2, 4, 5, 6) (N should be 5)"),
        (torch.zeros(2, 4), "B 3", {}, ShapeError, "x: expected shape (B, 3), got (2, 4) (dimension 1 should be 3)"),
        (torch.zeros(5, 2, 4), "* 3", {}, ShapeError,
         "x: expected shape (*, 3), got (5, 2, 4) (dimension 2 should be 3)"),
        (torch.zeros(4), "* B d", {}, ShapeError, "x: expected 2+ dimensions (*, B, d), got 1 dimensions (4,)"),
        (torch.zeros(()), "B", {}, ShapeError, "x: expected 1 dimensions (B), got 0 dimensions ()"),
        ([1, 2], "B C", {}, DTypeError, "x: expected a torch.Tensor of shape (B, C), got list [1, 2]"),
        (None, "B", {}, DTypeError, "x: expected a torch.Tensor of shape (B), got NoneType None"),
    ],
)
def test_check_shape_says_what_was_expected_and_what_came(x: object, spec: str, fixed: dict, cls: type,
                                                          message: str) -> None:
    with raises(cls, message):
        check_shape(x, spec, **fixed)


def test_check_shape_uses_the_given_name() -> None:
    with raises(ShapeError, "logits: expected 2 dimensions (B, K)"):
        check_shape(torch.zeros(3), "B K", name="logits")


def test_check_floating() -> None:
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        check_floating(torch.zeros(1, dtype=dtype))
    with raises(DTypeError, "pose: expected a floating-point tensor"):
        check_floating(torch.zeros(1, dtype=torch.int32), "pose")


def test_check_finite() -> None:
    check_finite(torch.ones(3))
    check_finite(torch.tensor([1, 2]))  # integers are always finite
    with raises(InputValueError, "x: expected finite values, got 2 NaN or Inf entries of 4"):
        check_finite(torch.tensor([1.0, float("nan"), float("inf"), 0.0]))


def test_check_same_device() -> None:
    check_same_device("a", torch.zeros(1), "b", torch.zeros(2))
    with raises(DeviceError, "x is on cpu but g is on meta; move them to one device"):
        check_same_device("x", torch.zeros(1), "g", torch.zeros(1, device="meta"))


def test_check_choice() -> None:
    assert check_choice("border", ("zeros", "border"), "padding") == "border"
    with raises(ConfigError, "padding: expected one of 'zeros', 'border', got 'boarder'; did you mean 'border'?"):
        check_choice("boarder", ("zeros", "border"), "padding")
    with raises(ConfigError, "mode: expected one of 'a', got None"):
        check_choice(None, ("a",), "mode")


def test_check_positive_int() -> None:
    assert check_positive_int(3, "n") == 3
    assert check_positive_int(0, "batch", minimum=0) == 0
    with raises(ConfigError, "n: expected an integer >= 1, got 0"):
        check_positive_int(0, "n")
    with raises(ConfigError, "n: expected an integer >= 1, got bool False"):
        check_positive_int(False, "n")
    with raises(ConfigError, "k: expected an integer >= 2, got float 3.0"):
        check_positive_int(3.0, "k", minimum=2)


def test_suggest_and_format_shape() -> None:
    assert suggest("zero", ["zeros", "border"]) == "; did you mean 'zeros'?"
    assert suggest("xyz", ["zeros", "border"]) == ""
    assert suggest("bordr", {"border": 1}) == "; did you mean 'border'?"
    assert format_shape(torch.Size([2, 3, 4])) == "(2, 3, 4)"
    assert format_shape([5]) == "(5,)"
    assert format_shape(()) == "()"
