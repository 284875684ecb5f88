"""Training with Lightning: modules for canonicalized (or plain) models.

Needs the ``train`` extra (``pip install "equicanon[train]"``); ``import equicanon``
never imports Lightning, only ``import equicanon.training`` does.

    >>> from equicanon.training import CanonicalizationModule
    >>> module = CanonicalizationModule(model, prior_weight=100.0, val_action=ec.actions.Image(ec.C(4)))
    >>> lightning.Trainer(max_epochs=10).fit(module, train_loader, val_loader)
"""

from __future__ import annotations

from ..errors import MissingDependencyError

try:
    import lightning  # noqa: F401
except ImportError as e:
    raise MissingDependencyError('equicanon.training needs lightning: pip install "equicanon[train]"') from e

from .module import TASKS, CanonicalizationModule

__all__ = ["CanonicalizationModule", "TASKS"]
