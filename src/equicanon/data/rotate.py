"""The ``rotate`` setting of datasets: a group name (``"SO2"``, ``"C4"``, ``"SO3"``) or ``None`` for upright data.

One vocabulary with the rest of the library (:func:`equicanon.groups.as_group`); the spellings of earlier
versions (``"random"``, ``"none"``, ``"z"``) raise a :class:`~equicanon.errors.ConfigError` saying what to
write now.

    >>> rotation_group("C4", where=lambda g: g.kind == "planar", expected="a planar group")
    C(4)
    >>> rotation_group(None, where=lambda g: True, expected="any group") is None
    True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..errors import ConfigError
from ..groups import Group, as_group

__all__ = ["rotation_group"]


def rotation_group(rotate: Group | str | None, *, where: Callable[[Group], bool], expected: str,
                   retired: Mapping[str, str] | None = None, what: str = "rotate") -> Group | None:
    """The group whose uniformly random elements move the data, or ``None`` (upright data).

    Args:
        rotate: a group, a group name, or ``None``.
        where: the groups the dataset can apply (a capability query).
        expected: what is accepted, in words, for messages.
        retired: old spellings (lower case) and what to write instead (``{"random": "SO2"}``).
        what: the setting's name, for messages.

    Raises:
        ConfigError: an old spelling, an unknown name or a group ``where`` refuses.
        GroupMismatchError: a group value ``where`` refuses.
    """
    if rotate is None:
        return None
    if isinstance(rotate, str) and retired and rotate.strip().lower() in retired:
        raise ConfigError(f"{what}: {rotate!r} is no longer accepted; write {retired[rotate.strip().lower()]} "
                          f"(accepted: {expected})")
    return as_group(rotate, where=where, expected=expected, what=what)
