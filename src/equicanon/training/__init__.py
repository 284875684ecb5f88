"""Training: the one training step and loop in plain torch, and Lightning modules, data and callbacks.

:func:`step` and :func:`fit` (:mod:`equicanon.training.step`) need only torch. Everything else here
(:class:`CanonicalizationModule`, the data modules, checkpoints) needs the ``train`` extra
(``pip install "equicanon[train]"``) and is imported on first use, so ``import equicanon.training``
never imports Lightning by itself.

    >>> from equicanon.training import fit, step            # plain torch
    >>> from equicanon.training import CanonicalizationModule  # Lightning (the train extra)

From the command line (:mod:`equicanon.training.cli`, Lightning's CLI over YAML configs)::

    equicanon fit --config configs/rotated_fashion_mnist_c4.yaml
    equicanon test --config configs/rotated_fashion_mnist_c4.yaml --ckpt_path runs/.../checkpoints/last.ckpt
"""

from __future__ import annotations

import importlib
from typing import Any

from .step import TRANSFORMS, StepOutput, auto_transform, batches, fit, step

#: Lightning-dependent names and the submodule that defines each
_LAZY = {
    "AtomicCheckpointIO": "checkpoint", "CheckpointNotFoundError": "checkpoint", "CorruptCheckpointError": "checkpoint",
    "ResumeCheckpoint": "checkpoint", "load_checkpoint_file": "checkpoint",
    "FashionMNISTDataModule": "data", "MNISTDataModule": "data", "ResumableDataLoader": "data",
    "RotatedImageDataModule": "data", "SplitDataModule": "data",
    "TASKS": "module", "CanonicalizationModule": "module",
    "NBodyDataModule": "nbody", "PointCloudDataModule": "points", "SetDataModule": "sets",
    "QM9DataModule": "molecules",
}

__all__ = ["step", "fit", "batches", "StepOutput", "TRANSFORMS", "auto_transform", *_LAZY]


def __getattr__(name: str) -> Any:
    """Import a Lightning-dependent name on first use, with a clear error when Lightning is missing."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from ..errors import MissingDependencyError

    try:
        import lightning  # noqa: F401
    except ImportError as e:
        raise MissingDependencyError(f'equicanon.training.{name} needs lightning: pip install "equicanon[train]"') from e
    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
