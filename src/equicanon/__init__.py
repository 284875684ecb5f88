"""equicanon: make any PyTorch model equivariant by learned canonicalization.

    >>> import equicanon as ec
    >>> ec.C(8), ec.D(4), ec.SO3()
    (C(8), D(4), SO3())
"""

from . import actions, canonicalizers, errors, groups, nn, testing
from .adapt import Canonicalized, GroupAveraged
from .groups import O2, O3, SO2, SO3, C, D, S

__version__ = "0.1.0"

__all__ = [
    "C", "D", "SO2", "O2", "SO3", "O3", "S",
    "Canonicalized", "GroupAveraged",
    "actions", "canonicalizers", "errors", "groups", "nn", "testing",
    "__version__",
]
