"""Models that YAML configs can build: group names as strings, sizes as numbers.

    >>> model = canonicalized_cnn("C4", hidden=16, layers=3, kernel_size=3)
    >>> parse_group("D4")
    D(4)
"""

from __future__ import annotations

from ..adapt import Canonicalized
from ..canonicalizers import GroupConv
from ..demo import small_cnn
from ..groups import Group
from ..groups.names import PLANAR
from ..groups.names import parse_group as _parse_group

__all__ = ["GROUP_NAMES", "parse_group", "CanonicalizedCNN", "canonicalized_cnn", "small_cnn"]

GROUP_NAMES = PLANAR


def parse_group(name: str) -> Group:
    """The planar group named by ``name``: ``"C4"`` → ``C(4)``, ``"D8"`` → ``D(8)``, ``"SO2"``, ``"O2"``.

    Also accepts the printed forms ``"C(4)"``, ``"SO2()"``; case-insensitive. The same parser as
    :func:`equicanon.groups.names.parse_group`, limited to planar groups.

    Raises:
        ConfigError: ``name`` names no planar group; the message suggests the closest name.
    """
    return _parse_group(name, PLANAR)


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
