"""equicanon: make any PyTorch model equivariant by learned canonicalization.

    >>> import equicanon as ec
    >>> ec.C(8), ec.D(4), ec.SO3()
    (C(8), D(4), SO3())
"""

from . import actions, canonicalizers, data, errors, groups, metrics, models, nn, testing
from .adapt import Canonicalized, FrameAveraged, GroupAveraged, Symmetrized, WeightedCanonicalized
from .groups import E3, O2, O3, SE3, SO2, SO3, C, D, Octahedral, S
from .pretrained import adapt_pretrained, train_canonicalizer

__version__ = "0.1.0"

__all__ = [
    "C", "D", "SO2", "O2", "SO3", "O3", "S", "SE3", "E3", "Octahedral",
    "Canonicalized", "WeightedCanonicalized", "Symmetrized", "GroupAveraged", "FrameAveraged",
    "adapt_pretrained", "train_canonicalizer",
    "actions", "canonicalizers", "data", "errors", "groups", "models", "nn", "testing", "metrics",
    "__version__",
]
