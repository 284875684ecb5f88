"""Group names as configs and the command line write them: ``"C4"``, ``"D(8)"``, ``"SO3"``, ``"se(3)"``.

One vocabulary, read from the group registry (:mod:`equicanon.groups.registry`): ``"C4"``, ``"D8"``,
``"SO2"``, ``"O2"``, ``"SO3"``, ``"O3"``, ``"SE3"``, ``"E3"``, ``"S5"``, ``"Octahedral"``, case-insensitive,
with the printed forms ``"C(4)"``, ``"SO2()"``, ``"SO(3)"`` accepted too. :func:`as_group` is what every
constructor and config reader calls: a group value passes through, a name is parsed, and ``where``
states what the caller needs as a capability query.

    >>> import equicanon as ec
    >>> ec.groups.parse_group("C4")
    C(4)
    >>> ec.groups.as_group("so(3)", where=lambda g: g.kind == "spatial")
    SO3()
    >>> ec.groups.as_group(ec.D(4), where=lambda g: g.is_finite)
    D(4)
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ..errors import ConfigError, GroupMismatchError, suggest
from .base import Group
from .registry import examples, families, family_of, lookup

__all__ = ["parse_group", "as_group", "group_name"]

Where = Callable[[Group], bool]


def _normalise(text: str) -> str:
    """Upper case without spaces, and ``(`` / ``)`` only where they hold an order: ``so(3)`` → ``SO3``."""
    text = text.strip().upper().replace(" ", "")
    match = re.fullmatch(r"([A-Z][A-Z0-9]*)\((-?[0-9]*)\)", text)  # SO(3), C(4), SE3(), O2()
    return match.group(1) + match.group(2) if match else text


def _expected(where: Where | None) -> str:
    """The registered family names whose examples pass ``where``: ``'C<n>', 'D<n>'``."""
    names = [f.name for f in families() if where is None or any(where(g) for g in f.examples)]
    return "one of " + ", ".join(repr(n) for n in names) if names else "no registered group"


def _hint(text: str, where: Where | None) -> str:
    """``"; did you mean 'SO3'?"`` among the spelled names of the accepted examples."""
    candidates: dict[str, str] = {}
    for f in families():
        for g in f.examples:
            if where is None or where(g):
                candidates.setdefault(f.spelled(g).upper(), f.spelled(g))
    hint = suggest(text, candidates)
    for upper, spelled in candidates.items():  # show the accepted spelling, not the upper-cased one
        hint = hint.replace(repr(upper), repr(spelled))
    return hint


def group_name(group: Group) -> str:
    """How a config writes ``group``: ``C(4)`` → ``"C4"``, ``SO3()`` → ``"SO3"`` (``repr`` if unregistered)."""
    family = family_of(group)
    return family.spelled(group) if family is not None else repr(group)


def parse_group(name: str, *, where: Where | None = None, expected: str | None = None,
                what: str = "group") -> Group:
    """The group a config names: ``"C4"`` → ``C(4)``, ``"D8"``, ``"SO2"``, ``"O2"``, ``"SO3"``, ``"O3"``,
    ``"SE3"``, ``"E3"``, ``"S5"``, ``"Octahedral"`` (every registered family); also the printed forms
    ``"C(4)"``, ``"SO2()"``, ``"SO(3)"``; case-insensitive.

    Args:
        name: the name.
        where: what the caller accepts, as a capability query (``lambda g: g.kind == "planar"``);
            default: every group.
        expected: what the caller accepts, in words, for messages; default: the registered
            families whose examples pass ``where``.
        what: the config key, for messages.

    Raises:
        ConfigError: the name is no group, a group that fails ``where`` or has an order < 1; the
            message says what is accepted and gives the closest accepted name.
    """
    wanted = expected if expected is not None else _expected(where)
    if not isinstance(name, str):
        raise ConfigError(f"{what}: expected a group name, {wanted}, got {type(name).__name__} {name!r}")
    text = _normalise(name)
    family = lookup(text)
    group: Group | None = None
    if family is not None and not family.indexed:
        group = family.build()
    match = re.fullmatch(r"([A-Z]+)(-?[0-9]+)", text)
    indexed = lookup(match.group(1)) if match and group is None else None
    if match and indexed is not None and indexed.indexed:
        n = int(match.group(2))
        if n < 1:
            raise ConfigError(f"{what} {name!r}: the order n of {indexed.name} must be an integer >= 1, got {n}")
        group = indexed.build(n)
    if group is None:
        raise ConfigError(f"unknown {what} {name!r}: expected {wanted}, got {name!r}{_hint(text, where)}")
    if where is not None and not where(group):
        raise ConfigError(f"{what} {name!r} names {group!r}, which is not accepted here: expected {wanted}, "
                          f"got {name!r}{_hint(text, where)}")
    return group


def as_group(value: Group | str, *, where: Where | None = None, expected: str | None = None,
             what: str = "group") -> Group:
    """A group from a value or a name: what constructors and configs call on their ``group`` argument.

    Args:
        value: a :class:`Group` (returned as it is) or a name for :func:`parse_group` (``"C8"``).
        where: what the caller accepts, as a capability query on the group
            (``lambda g: g.is_finite and g.kind == "planar"``); default: every group.
        expected: what the caller accepts, in words (``"a finite planar group C(n) or D(n)"``);
            default: the registered families whose examples pass ``where``.
        what: the argument's name, for messages (``"GroupConv: group"``).

    Raises:
        GroupMismatchError: a group value that fails ``where``.
        ConfigError: a name that is no accepted group, or a value that is neither a group nor a string.
    """
    if isinstance(value, Group):
        if where is not None and not where(value):
            wanted = expected if expected is not None else _expected(where)
            raise GroupMismatchError(f"{what}: expected {wanted}, got {value!r}")
        return value
    if isinstance(value, str):
        return parse_group(value, where=where, expected=expected, what=what)
    wanted = expected if expected is not None else _expected(where)
    example = next((g for g in examples() if where is None or where(g)), None)
    hint = f" (e.g. {group_name(example)!r} or {example!r})" if example is not None else ""
    raise ConfigError(f"{what}: expected a group or a group name, {wanted}{hint}, "
                      f"got {type(value).__name__} {value!r}")
