"""Group names as configs and the command line write them: ``"C4"``, ``"D(8)"``, ``"SO3"``, ``"se(3)"``.

One parser for every config: :func:`parse_group` reads a name, checks it against the
families a model accepts (``allowed``) and raises :class:`~equicanon.errors.ConfigError`
with a did-you-mean hint otherwise.

    >>> parse_group("C4")
    C(4)
    >>> parse_group("so(3)", allowed=SPATIAL)
    SO3()
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..errors import ConfigError, suggest
from .base import Group
from .continuous import O2, O3, SO2, SO3
from .permutation import S
from .planar import C, D
from .polyhedral import Octahedral
from .rigid import E3, SE3

__all__ = ["parse_group", "group_name", "FAMILIES", "PLANAR", "SPATIAL", "RIGID", "FINITE_PLANAR"]

#: every family :func:`parse_group` knows, as written in configs (``<n>``: an order >= 1)
FAMILIES = ("C<n>", "D<n>", "SO2", "O2", "SO3", "O3", "SE3", "E3", "S<n>", "Octahedral")
PLANAR = ("C<n>", "D<n>", "SO2", "O2")
FINITE_PLANAR = ("C<n>", "D<n>")
SPATIAL = ("SO3", "O3")
RIGID = ("SE3", "E3")

_FIXED: dict[str, Group] = {"SO2": SO2(), "O2": O2(), "SO3": SO3(), "O3": O3(), "SE3": SE3(), "E3": E3(),
                            "OCTAHEDRAL": Octahedral()}
_INDEXED = {"C": C, "D": D, "S": S}
_EXAMPLES = {"C<n>": ("C2", "C4", "C8", "C16"), "D<n>": ("D2", "D4", "D8", "D16"), "S<n>": ("S3", "S5", "S9")}


def _normalise(text: str) -> str:
    """Upper case without spaces, and ``(`` / ``)`` only where they hold an order: ``so(3)`` → ``SO3``."""
    text = text.strip().upper().replace(" ", "")
    match = re.fullmatch(r"([A-Z][A-Z0-9]*)\((-?[0-9]*)\)", text)  # SO(3), C(4), SE3(), O2()
    return match.group(1) + match.group(2) if match else text


def group_name(group: Group) -> str:
    """The family of ``group`` as :data:`FAMILIES` writes it: ``C(4)`` → ``"C<n>"``, ``SO3()`` → ``"SO3"``."""
    for key, cls in _INDEXED.items():
        if isinstance(group, cls):
            return f"{key}<n>"
    return "Octahedral" if isinstance(group, Octahedral) else repr(group).removesuffix("()")


def parse_group(name: str, allowed: Iterable[str] | None = None, *, what: str = "group") -> Group:
    """The group a config names: ``"C4"`` → ``C(4)``, ``"D8"``, ``"SO2"``, ``"O2"``, ``"SO3"``, ``"O3"``,
    ``"SE3"``, ``"E3"``, ``"S5"``, ``"Octahedral"``; also the printed forms ``"C(4)"``, ``"SO2()"``,
    ``"SO(3)"``; case-insensitive.

    Args:
        name: the name.
        allowed: the families the caller accepts, from :data:`FAMILIES` (e.g. :data:`PLANAR`);
            default: all of them.
        what: the config key, for messages.

    Raises:
        ConfigError: the name is no group, a group outside ``allowed`` or has an order < 1; the
            message lists the accepted families and the closest accepted name.
    """
    families = tuple(FAMILIES if allowed is None else allowed)
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ConfigError(f"parse_group: allowed families must be among {', '.join(FAMILIES)}, got {unknown}")
    expected = ", ".join(repr(f) for f in families)
    if not isinstance(name, str):
        example = _EXAMPLES.get(families[0], (families[0],))[-1] if families else "C4"
        raise ConfigError(f"{what}: expected a group name, one of {expected} (e.g. {example!r}), "
                          f"got {type(name).__name__} {name!r}")
    text = _normalise(name)
    group: Group | None = _FIXED.get(text)
    match = re.fullmatch(r"([CDS])(-?[0-9]+)", text)
    if match:
        n = int(match.group(2))
        if n < 1:
            raise ConfigError(f"{what} {name!r}: the order n of {match.group(1)}<n> must be an integer >= 1, got {n}")
        group = _INDEXED[match.group(1)](n)
    candidates = {e.upper(): e for f in families for e in _EXAMPLES.get(f, (f,))}
    hint = suggest(text, candidates)
    for upper, spelled in candidates.items():  # show the accepted spelling, not the upper-cased one
        hint = hint.replace(repr(upper), repr(spelled))
    if group is None:
        raise ConfigError(f"unknown {what} {name!r}: expected one of {expected}, got {name!r}{hint}")
    if group_name(group) not in families:
        raise ConfigError(f"{what} {name!r} names {group!r}, which is not accepted here: expected one of {expected}, "
                          f"got {name!r}{hint}")
    return group
