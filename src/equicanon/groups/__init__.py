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
``SE3()``  ``(B, 4, 4)`` float     ``[[R, t], [0, 1]]``, ``det R = 1``
``E3()``   ``(B, 4, 4)`` float     ``[[R, t], [0, 1]]``, ``R`` orthogonal
=========  ======================  ==============================

``Octahedral()``: ``(B,)`` int64 indices of the 24 rotations of the cube (exact 0/±1 matrices).
"""

from .base import FiniteGroup, Group, MatrixGroup
from .continuous import O2, O3, SO2, SO3
from .names import parse_group
from .permutation import S
from .planar import C, D, PlanarFiniteGroup
from .polyhedral import Octahedral
from .rigid import E3, SE3, RigidGroup

__all__ = ["Group", "FiniteGroup", "MatrixGroup", "PlanarFiniteGroup", "C", "D", "SO2", "O2", "SO3", "O3", "S", "SE3", "E3",
           "RigidGroup", "Octahedral", "parse_group"]
