"""Models that YAML configs can build: group names as strings, sizes as numbers.

    >>> model = canonicalized_cnn("C4", hidden=16, layers=3, kernel_size=3)
    >>> parse_group("D4")
    D(4)
"""

from __future__ import annotations

import re

from ..adapt import Canonicalized
from ..canonicalizers import GroupConv
from ..demo import small_cnn
from ..errors import ConfigError
from ..groups import O2, SO2, C, D, Group

__all__ = ["GROUP_NAMES", "parse_group", "CanonicalizedCNN", "canonicalized_cnn", "small_cnn"]

GROUP_NAMES = ("C<n>", "D<n>", "SO2", "O2")
_KNOWN = ("C2", "C4", "C8", "C16", "D2", "D4", "D8", "D16", "SO2", "O2")


def parse_group(name: str) -> Group:
    """The planar group named by ``name``: ``"C4"`` → ``C(4)``, ``"D8"`` → ``D(8)``, ``"SO2"``, ``"O2"``.

    Also accepts the printed forms ``"C(4)"``, ``"SO2()"``; case-insensitive.

    Raises:
        ConfigError: ``name`` names no such group; the message lists close matches.
    """
    if not isinstance(name, str):
        raise ConfigError(f"group must be a string such as 'C4', 'D4', 'SO2' or 'O2', got {type(name).__name__} {name!r}")
    text = name.strip().upper().replace(" ", "")
    match = re.fullmatch(r"([CD])\(?([0-9]+)\)?", text)
    if match:
        n = int(match.group(2))
        if n < 1:
            raise ConfigError(f"group {name!r}: the order must be >= 1")
        return C(n) if match.group(1) == "C" else D(n)
    if text in ("SO2", "SO2()", "SO(2)"):
        return SO2()
    if text in ("O2", "O2()", "O(2)"):
        return O2()
    import difflib

    close = difflib.get_close_matches(text, _KNOWN, n=3, cutoff=0.4)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(f"unknown group {name!r}: expected one of {', '.join(GROUP_NAMES)} (e.g. 'C4', 'D8'){hint}")


class CanonicalizedCNN(Canonicalized):
    """``Canonicalized(small_cnn(...), GroupConv(group, ...))`` with every size a plain argument (for YAML configs).

    Args:
        group: pose group name, see :func:`parse_group` (``"C4"``, ``"D4"``, ``"C8"``, ``"SO2"``, ...).
        hidden, layers, kernel_size: the canonicalizer network (:class:`~equicanon.canonicalizers.GroupConv`).
        classes, in_channels, width: the predictor (:func:`small_cnn`).
        resize, crop, temperature, rotations: passed to :class:`~equicanon.canonicalizers.GroupConv`.
        batch_norm: batch normalisation in both networks (``False`` for DDP on CPU: no ``SyncBatchNorm`` there).
    """

    def __init__(self, group: str = "C4", *, hidden: int = 16, layers: int = 3, kernel_size: int = 3,
                 classes: int = 10, in_channels: int = 1, width: int = 32, resize: int | None = None,
                 crop: float | None = None, temperature: float = 1.0, rotations: int = 8,
                 batch_norm: bool = True) -> None:
        canon = GroupConv(parse_group(group), in_channels, hidden=hidden, layers=layers, kernel_size=kernel_size,
                          resize=resize, crop=crop, temperature=temperature, rotations=rotations, batch_norm=batch_norm)
        super().__init__(small_cnn(classes, in_channels, width, batch_norm), canon)


def canonicalized_cnn(group: str = "C4", **kwargs: object) -> CanonicalizedCNN:
    """A :class:`CanonicalizedCNN`; keyword arguments as there."""
    return CanonicalizedCNN(group, **kwargs)  # type: ignore[arg-type]
