"""Symmetry groups as frozen values; their elements are batched tensors.

=========  ======================  ==============================
group      element tensor          meaning
=========  ======================  ==============================
``C(n)``   ``(B,)`` int64          rotation by ``2πk/n``
``D(n)``   ``(B,)`` int64          ``r^k f^s`` at index ``k + n·s``
``SO2()``  ``(B, 2, 2)`` float     rotation matrix
``O2()``   ``(B, 2, 2)`` float     rotation or reflection matrix
``SO3()``  ``(B, 3, 3)`` float     rotation matrix
``O3()``   ``(B, 3, 3)`` float     orthogonal matrix
``S(n)``   ``(B, n)`` int64        permutation, ``p[i]`` = image of ``i``
=========  ======================  ==============================
"""

from .base import FiniteGroup, Group, MatrixGroup
from .continuous import O2, O3, SO2, SO3
from .permutation import S
from .planar import C, D, PlanarFiniteGroup

__all__ = ["Group", "FiniteGroup", "MatrixGroup", "PlanarFiniteGroup", "C", "D", "SO2", "O2", "SO3", "O3", "S"]
