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

Every group says what it is, so no code outside this package asks a group its class: ``dim`` (2, 3, or
``None`` for ``S(n)``), ``has_reflections``, ``has_translations``, ``rotation_subgroup``, ``is_finite``,
``is_indexed`` (elements are indices ``0..|G|-1``), ``needs_square_images``, ``all_quarter_turns`` and
``kind`` (``"planar"``, ``"spatial"``, ``"rigid"``, ``"permutation"``). Constructors take a group or a
name through :func:`as_group`; names come from the registry (:func:`register_family`, :func:`families`,
:func:`examples`). Adding a group is one file with its class plus one ``register_family`` line in
``registry.py``.
"""

from .base import FiniteGroup, Group, MatrixGroup
from .continuous import O2, O3, SO2, SO3
from .names import as_group, group_name, parse_group
from .permutation import S
from .planar import C, D, PlanarFiniteGroup
from .polyhedral import Octahedral
from .registry import Family, examples, families, family_of, register_family
from .rigid import E3, SE3, RigidGroup

__all__ = ["Group", "FiniteGroup", "MatrixGroup", "PlanarFiniteGroup", "C", "D", "SO2", "O2", "SO3", "O3", "S", "SE3", "E3",
           "RigidGroup", "Octahedral", "parse_group", "as_group", "group_name", "Family", "register_family",
           "families", "examples", "family_of"]
