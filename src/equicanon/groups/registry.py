"""The group registry: every family of groups that configs can name, with small examples for the tests.

A family is a name as configs write it (``"SO3"``, or ``"C<n>"`` for a family with an order),
the class that builds its groups and a few small instances. :func:`~equicanon.groups.parse_group`
reads names through it, and the group axiom tests walk :func:`examples`. Adding a group is one
file (the class) plus one :func:`register_family` line at the end of this file.

    >>> [f.name for f in families()][:4]
    ['C<n>', 'D<n>', 'SO2', 'O2']
    >>> family_of(D(8)).name
    'D<n>'
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import ConfigError
from .base import Group
from .continuous import O2, O3, SO2, SO3
from .permutation import S
from .planar import C, D
from .polyhedral import Octahedral
from .rigid import E3, SE3

__all__ = ["Family", "register_family", "families", "examples", "family_of"]


@dataclass(frozen=True)
class Family:
    """One registered family of groups.

    Attributes:
        name: as configs write it: ``"SO3"`` (one group, built by ``cls()``) or ``"C<n>"``
            (one group per order ``n >= 1``, built by ``cls(n)``, written ``"C4"`` / ``"C(4)"``).
        cls: the group class.
        examples: small instances, in the order tests use them; the first is the one named in messages.
    """

    name: str
    cls: Callable[..., Group]
    examples: tuple[Group, ...]

    @property
    def indexed(self) -> bool:
        """Whether the family takes an order ``n`` (its name ends in ``<n>``)."""
        return self.name.endswith("<n>")

    @property
    def prefix(self) -> str:
        """The upper-case name without ``<n>``: ``"C"``, ``"SO3"``, ``"OCTAHEDRAL"``."""
        return self.name.removesuffix("<n>").upper()

    def build(self, n: int | None = None) -> Group:
        """The group of order ``n`` (indexed families) or the family's one group."""
        return self.cls(n) if self.indexed else self.cls()

    def spelled(self, group: Group) -> str:
        """How a config writes ``group``: ``C(4)`` → ``"C4"``, ``SO3()`` → ``"SO3"``."""
        return self.name.replace("<n>", str(getattr(group, "n", ""))) if self.indexed else self.name


_FAMILIES: dict[str, Family] = {}


def register_family(name: str, cls: Callable[..., Group], *, examples: Sequence[Group]) -> Family:
    """Make ``name`` a group name that :func:`~equicanon.groups.parse_group` (configs, the CLI) reads.

    Args:
        name: ``"<Letters><digits>"`` for one group (``"SO3"``, built by ``cls()``) or ``"<Letters><n>"``
            for a family with an order (``"C<n>"``, built by ``cls(n)``); case-insensitive when parsed.
        cls: the group class; its instances must be frozen values.
        examples: one or a few small instances; the group axiom tests run over them.

    Raises:
        ConfigError: the name is malformed or taken, or ``examples`` is empty or holds other classes.
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*(<n>)?", name):
        raise ConfigError(f"register_family: name must look like 'SO3' or 'C<n>', got {name!r}")
    family = Family(name, cls, tuple(examples))
    if any(f.prefix == family.prefix for f in _FAMILIES.values()):
        raise ConfigError(f"register_family: the group name {name!r} is already registered")
    if not family.examples or not all(type(g) is cls for g in family.examples):
        raise ConfigError(f"register_family({name!r}): examples must be one or more {getattr(cls, '__name__', cls)} "
                          f"instances, got {family.examples!r}")
    _FAMILIES[family.prefix] = family
    return family


def families() -> tuple[Family, ...]:
    """Every registered family, in registration order."""
    return tuple(_FAMILIES.values())


def examples() -> tuple[Group, ...]:
    """Small instances of every registered family, for tests that must hold for every group."""
    return tuple(g for f in _FAMILIES.values() for g in f.examples)


def family_of(group: Group) -> Family | None:
    """The registered family ``group`` belongs to (``None`` for an unregistered class)."""
    return next((f for f in _FAMILIES.values() if type(group) is f.cls), None)


def lookup(prefix: str) -> Family | None:
    """The family registered under the upper-case ``prefix`` (``"C"``, ``"SO3"``)."""
    return _FAMILIES.get(prefix)


# ---- the registry: one line per family ------------------------------------------------------------------------
register_family("C<n>", C, examples=[C(n) for n in (4, 8, 1, 2, 3, 5)])
register_family("D<n>", D, examples=[D(n) for n in (4, 8, 1, 2, 3, 5)])
register_family("SO2", SO2, examples=[SO2()])
register_family("O2", O2, examples=[O2()])
register_family("SO3", SO3, examples=[SO3()])
register_family("O3", O3, examples=[O3()])
register_family("SE3", SE3, examples=[SE3()])
register_family("E3", E3, examples=[E3()])
register_family("S<n>", S, examples=[S(n) for n in (5, 1, 2, 3, 4, 6)])
register_family("Octahedral", Octahedral, examples=[Octahedral()])
