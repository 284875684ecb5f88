"""Typed errors and the input checks that raise them.

Every check on user input raises a subclass of :class:`EquicanonError` that is
also a ``ValueError`` or ``TypeError``, with a message that says what was
expected and what came. ``assert`` is kept for internal invariants only.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping

import torch

__all__ = [
    "EquicanonError",
    "ShapeError",
    "DTypeError",
    "DeviceError",
    "GroupMismatchError",
    "ElementError",
    "ConfigError",
    "InputValueError",
    "EquivarianceError",
    "MissingDependencyError",
    "check_shape",
    "check_floating",
    "check_same_device",
    "check_finite",
    "check_choice",
    "check_positive_int",
    "check_mask",
    "format_shape",
    "suggest",
]


class EquicanonError(Exception):
    """Base class of every error equicanon raises on purpose."""


class ShapeError(EquicanonError, ValueError):
    """A tensor has the wrong number of dimensions or a wrong size."""


class DTypeError(EquicanonError, TypeError):
    """A tensor has a dtype the operation does not support."""


class DeviceError(EquicanonError, ValueError):
    """Tensors that must share a device do not."""


class GroupMismatchError(EquicanonError, ValueError):
    """Two objects that must act with the same group do not."""


class ElementError(EquicanonError, ValueError):
    """A tensor is not a valid batch of elements of the given group."""


class ConfigError(EquicanonError, ValueError):
    """A constructor argument or configuration value is out of range or unknown."""


class InputValueError(EquicanonError, ValueError):
    """A tensor's values (not its shape or dtype) are invalid, e.g. NaN or Inf."""


class EquivarianceError(EquicanonError, AssertionError):
    """Raised by :func:`equicanon.testing.assert_equivariant` when a check fails."""


class MissingDependencyError(EquicanonError, ImportError):
    """An optional package a feature needs is not installed; the message names the pip command."""


def format_shape(shape: Iterable[int]) -> str:
    """``(2, 3, 28, 28)``-style text for a shape (also for 0-d and 1-d shapes)."""
    dims = tuple(int(s) for s in shape)
    if len(dims) == 1:
        return f"({dims[0]},)"
    return "(" + ", ".join(str(s) for s in dims) + ")"


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {format_shape(x.shape)} and dtype {x.dtype}"
    return f"{type(x).__name__} {x!r}"[:200]


def check_shape(x: object, spec: str, name: str = "x", **fixed: int) -> dict[str, int]:
    """Check that ``x`` is a tensor of the shape named by ``spec``.

    ``spec`` names one dimension per word, e.g. ``"B C H W"``. A word that is
    an integer must match exactly; the same name used twice must have the same
    size; sizes passed as keywords (``C=3``) are enforced. A leading ``"*"``
    accepts any number of extra leading dimensions.

    Returns the sizes bound to each name, e.g. ``{"B": 2, "C": 3, "H": 28, "W": 28}``.

    Raises:
        TypeError (DTypeError): ``x`` is not a tensor.
        ShapeError: the number of dimensions or a size does not match.

    Example:
        >>> sizes = check_shape(torch.zeros(2, 3, 5, 5), "B C H W", C=3)
        >>> sizes["H"]
        5
    """
    words = spec.split()
    if not isinstance(x, torch.Tensor):
        raise DTypeError(f"{name}: expected a torch.Tensor of shape ({', '.join(words)}), got {_describe(x)}")
    star = bool(words) and words[0] == "*"
    if star:
        words = words[1:]
    expected = "(" + ", ".join((["*"] if star else []) + words) + ")"
    if fixed:
        expected += " with " + ", ".join(f"{k}={v}" for k, v in fixed.items())
    ndim_ok = x.ndim >= len(words) if star else x.ndim == len(words)
    if not ndim_ok:
        raise ShapeError(
            f"{name}: expected {len(words)}{'+' if star else ''} dimensions {expected}, "
            f"got {x.ndim} dimensions {format_shape(x.shape)}"
        )
    sizes: dict[str, int] = {}
    tail = x.shape[x.ndim - len(words):]
    for axis, (word, size) in enumerate(zip(words, tail, strict=True), start=x.ndim - len(words)):
        if word.lstrip("-").isdigit():
            want = int(word)
        elif word in sizes:
            want = sizes[word]
        elif word in fixed:
            want = int(fixed[word])
        else:
            sizes[word] = int(size)
            continue
        if int(size) != want:
            what = f"dimension {axis}" if word.lstrip("-").isdigit() else word
            raise ShapeError(
                f"{name}: expected shape {expected}, got {format_shape(x.shape)} ({what} should be {want})"
            )
        sizes.setdefault(word, want)
    return sizes


def check_floating(x: torch.Tensor, name: str = "x") -> None:
    """Raise :class:`DTypeError` unless ``x`` has a floating-point dtype."""
    if not torch.is_floating_point(x):
        raise DTypeError(
            f"{name}: expected a floating-point tensor (float16, bfloat16, float32 or float64), "
            f"got dtype {x.dtype}; convert it with .float()"
        )


def check_same_device(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    """Raise :class:`DeviceError` unless ``a`` and ``b`` live on the same device."""
    if a.device != b.device:
        raise DeviceError(f"{name_a} is on {a.device} but {name_b} is on {b.device}; move them to one device")


def check_finite(x: torch.Tensor, name: str = "x") -> None:
    """Raise :class:`InputValueError` if a floating tensor holds NaN or Inf.

    One ``torch.isfinite(x).all()`` on the good path; it reads the result on the host, so on an
    accelerator it waits for the device (canonicalizers call it on CPU inputs only, once per forward,
    unless built with ``check_inputs=False``). The message counts the bad entries and names the first one, e.g.
    ``x: expected finite values, got 2 NaN or Inf entries of 4 (1 NaN, 1 Inf; first at index (1,))``.
    """
    if torch.is_floating_point(x) and not bool(torch.isfinite(x).all()):
        bad = ~torch.isfinite(x)
        n_bad, n_nan = int(bad.sum()), int(torch.isnan(x).sum())
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise InputValueError(f"{name}: expected finite values, got {n_bad} NaN or Inf entries of {x.numel()} "
                              f"({n_nan} NaN, {n_bad - n_nan} Inf; first at index {format_shape(first)})")


def check_choice(value: object, choices: Iterable[str], name: str) -> str:
    """Return ``value`` if it is one of ``choices``; else a :class:`ConfigError` with a did-you-mean hint."""
    options = list(choices)
    if isinstance(value, str) and value in options:
        return value
    hint = suggest(value, options) if isinstance(value, str) else ""
    raise ConfigError(f"{name}: expected one of {', '.join(repr(o) for o in options)}, got {value!r}{hint}")


def check_positive_int(value: object, name: str, minimum: int = 1) -> int:
    """Return ``value`` as ``int`` if it is an integer ``>= minimum``; else raise ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}: expected an integer >= {minimum}, got {_describe(value)}")
    if value < minimum:
        raise ConfigError(f"{name}: expected an integer >= {minimum}, got {value}")
    return int(value)


def check_number(value: object, name: str, *, minimum: float | None = None, strict: bool = False) -> float:
    """Return ``value`` as a finite ``float`` (``>= minimum``, or ``> minimum`` if ``strict``); else raise ConfigError."""
    bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum:g}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or (minimum is not None and (value <= minimum if strict else value < minimum)):
        raise ConfigError(f"{name}: expected a finite number{bound}, got {_describe(value)}")
    return float(value)


def suggest(name: str, options: Mapping[str, object] | Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``options``, or ``""``."""
    close = difflib.get_close_matches(name, list(options), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_mask(mask: object, x: torch.Tensor) -> torch.Tensor | None:
    """A padding mask for the sets ``x (B, N, ...)``: ``None``, or ``(B, N)`` bool with at least one real (True)
    element per set, moved to ``x``'s device; else a typed error."""
    if mask is None:
        return None
    b, n = x.shape[0], x.shape[1]
    if not isinstance(mask, torch.Tensor):
        raise DTypeError(f"mask: expected a bool tensor ({b}, {n}), got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise DTypeError(f"mask: expected dtype torch.bool (True: a real element), got {mask.dtype}")
    if tuple(mask.shape) != (b, n):
        raise ShapeError(f"mask: expected shape ({b}, {n}), one entry per element of x {format_shape(x.shape)}, "
                         f"got {format_shape(mask.shape)}")
    mask = mask.to(x.device)
    if b and not bool(mask.any(dim=1).all()):
        raise InputValueError("mask: every set needs at least one real element (True); got a set of padding only")
    return mask
