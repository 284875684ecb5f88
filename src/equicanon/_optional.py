"""Imports of optional packages, with errors that name the pip command."""

from __future__ import annotations

from types import ModuleType

from .errors import MissingDependencyError


def require_matplotlib() -> ModuleType:
    """``matplotlib.pyplot`` with the non-interactive Agg backend; a clear error if it is not installed."""
    try:
        import matplotlib
    except ImportError as e:
        raise MissingDependencyError("plots need matplotlib: pip install 'equicanon[plot]'") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
