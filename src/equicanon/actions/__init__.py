"""How groups act on data. ``action(g, x)`` is ``g·x``; inputs are never modified.

- :class:`Image` — images ``(B, C, H, W)`` under C(n), D(n), SO2(), O2()
- :class:`Mask` — label maps ``(B, H, W)`` / ``(B, C, H, W)``, nearest-neighbour
- :class:`Points` — point clouds ``(B, N, d)``; :class:`Vectors` — ``(B, *, d)``
- :class:`Particles` — positions, velocities and invariant features ``(B, N, 6 + k)``
- :class:`Regular` — an axis of size ``|G|`` (logits, group-conv features)
- :class:`Set` — the element axis of sets under S(n)
- :class:`Trivial` — invariant data
- :class:`Pose` — group elements, by left multiplication (poses)
- :class:`Structured` — one action per key (dict, dataclass) or position (tuple) of a structured prediction
"""

from . import functional
from .base import Action, Pose, Trivial
from .discrete import Regular, Set
from .geometric import Particles, Points, Vectors
from .image import Image, Mask
from .structured import Structured

__all__ = ["Action", "Pose", "Trivial", "Image", "Mask", "Points", "Particles", "Vectors", "Regular", "Set",
           "Structured", "functional"]
