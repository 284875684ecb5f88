"""A generated set task under S(n): classify an order statistic of a set of noisy digits.

Each example is a set of ``set_size`` elements; element ``i`` carries a digit
``v_i ∈ {0, …, digits−1}`` (drawn uniformly, independently, so the elements come in
random order) written into a feature vector of ``features`` numbers::

    x_i = [2 v_i / (digits − 1) − 1 + noise · ε_i,  z_i1, …, z_i(F−1)]      ε, z ~ N(0, 1)

The first feature encodes the digit; the others are distractors that carry no
information. The label is one order statistic of the multiset ``{v_i}`` (see
:data:`SET_TARGETS`), an integer class in ``0 … digits−1``, so it does not depend on the
order of the elements. Order statistics need comparisons between all elements: a
plain MLP on the flattened set must learn them for every order in which the elements
can come, while after sorting (:class:`~equicanon.canonicalizers.Sort`) they are read
off fixed positions.

    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = make_set_task(1000, set_size=9, generator=g)
    >>> x.shape, y.shape, int(y.max()) < 10
    (torch.Size([1000, 9, 4]), torch.Size([1000]), True)
"""

from __future__ import annotations

import torch

from ..errors import ConfigError, DTypeError, check_choice, check_number, check_positive_int, check_shape

__all__ = ["SET_TARGETS", "set_target", "encode_digits", "decode_digits", "make_set_task"]

#: Labels :func:`make_set_task` can ask for: the lower median digit (the ``(n−1)//2``-th
#: smallest), the largest digit, and the range (largest − smallest).
SET_TARGETS = ("median", "max", "range")


def set_target(digits: torch.Tensor, target: str = "median") -> torch.Tensor:
    """The label of each set of digits ``(B, n)`` (integers): ``(B,)`` int64.

    ``"median"``: the ``(n−1)//2``-th smallest digit (the median for odd ``n``, the lower
    median for even ``n``); ``"max"``: the largest digit; ``"range"``: largest − smallest.
    Invariant: permuting the digits of a set leaves its label unchanged.
    """
    check_choice(target, SET_TARGETS, "target")
    _check_integer(digits, "digits")
    if digits.shape[1] == 0:
        raise ConfigError("digits: a set needs at least one element, got shape " + str(tuple(digits.shape)))
    ordered = digits.long().sort(dim=1).values
    if target == "median":
        return ordered[:, (ordered.shape[1] - 1) // 2]
    if target == "max":
        return ordered[:, -1]
    return ordered[:, -1] - ordered[:, 0]


def _check_integer(values: object, name: str) -> None:
    check_shape(values, "B n", name=name)
    assert isinstance(values, torch.Tensor)
    if values.is_floating_point() or values.dtype == torch.bool or values.is_complex():
        raise DTypeError(f"{name}: expected an integer tensor (B, n) of digits, got dtype {values.dtype}")


def _check_digits(digits: int) -> int:
    return check_positive_int(digits, "digits", minimum=2)


def encode_digits(values: torch.Tensor, *, digits: int = 10, features: int = 4, noise: float = 0.02,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Feature vectors ``(B, n, features)`` float32 of digit sets ``values (B, n)`` (see the module docstring).

    The first feature is ``2 v / (digits − 1) − 1`` plus Gaussian ``noise``; the others are
    standard normal distractors, drawn from ``generator``.
    """
    digits = _check_digits(digits)
    features = check_positive_int(features, "features")
    noise = check_number(noise, "noise", minimum=0.0)
    _check_integer(values, "values")
    if values.numel() and (int(values.min()) < 0 or int(values.max()) >= digits):
        raise ConfigError(f"values: expected digits in 0..{digits - 1}, got values in "
                          f"{int(values.min())}..{int(values.max())}")
    b, n = values.shape
    x = torch.randn(b, n, features, generator=generator)
    x[..., 0] = values.float() * (2 / (digits - 1)) - 1 + noise * x[..., 0]
    return x


def decode_digits(x: torch.Tensor, *, digits: int = 10) -> torch.Tensor:
    """The digits ``(B, n)`` int64 nearest to the first feature of sets ``x (B, n, F)``: inverts :func:`encode_digits`
    while ``noise`` is well below half the spacing ``1 / (digits − 1)``."""
    digits = _check_digits(digits)
    check_shape(x, "B n F", name="x")
    return ((x[..., 0].double() + 1) * ((digits - 1) / 2)).round().clamp(0, digits - 1).long()


def make_set_task(n: int, *, set_size: int, generator: torch.Generator, features: int = 4, digits: int = 10,
                  target: str = "median", noise: float = 0.02) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random sets and their labels: ``x (n, set_size, features)`` float32, ``y (n,)`` int64 in ``0 … digits−1``.

    Digits are drawn uniformly and independently, so the elements of each set are in random
    order; everything random comes from ``generator`` (same generator state, same data).

    Args:
        n: number of sets (>= 1).
        set_size: elements per set (>= 1).
        generator: a seeded ``torch.Generator`` (CPU).
        features: numbers per element (>= 1): the digit's value and ``features − 1`` distractors.
        digits: how many digit values (>= 2); also the number of classes.
        target: one of :data:`SET_TARGETS` (``"median"``, ``"max"``, ``"range"``).
        noise: standard deviation of the noise on the value feature (>= 0); the spacing of
            two digits is ``2 / (digits − 1)``.

    Raises:
        ConfigError: an argument is out of range or unknown (the message says which and what came).
    """
    n = check_positive_int(n, "n")
    set_size = check_positive_int(set_size, "set_size")
    features = check_positive_int(features, "features")
    digits = _check_digits(digits)
    target = check_choice(target, SET_TARGETS, "target")
    noise = check_number(noise, "noise", minimum=0.0)
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        what = f"one on {generator.device}" if isinstance(generator, torch.Generator) else type(generator).__name__
        raise ConfigError(f"generator: expected a seeded CPU torch.Generator, got {what}")
    values = torch.randint(0, digits, (n, set_size), generator=generator)
    x = encode_digits(values, digits=digits, features=features, noise=noise, generator=generator)
    return x, set_target(values, target)
