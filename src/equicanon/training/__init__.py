"""Training with Lightning: modules for canonicalized (or plain) models.

Needs the ``train`` extra (``pip install "equicanon[train]"``); ``import equicanon``
never imports Lightning, only ``import equicanon.training`` does.

    >>> from equicanon.training import CanonicalizationModule
    >>> module = CanonicalizationModule(model, prior_weight=100.0, val_action=ec.actions.Image(ec.C(4)))
    >>> lightning.Trainer(max_epochs=10).fit(module, train_loader, val_loader)

From the command line (:mod:`equicanon.training.cli`, Lightning's CLI over YAML configs)::

    equicanon fit --config configs/rotated_fashion_mnist_c4.yaml
    equicanon test --config configs/rotated_fashion_mnist_c4.yaml --ckpt_path runs/.../checkpoints/last.ckpt
"""

from __future__ import annotations

from ..errors import MissingDependencyError

try:
    import lightning  # noqa: F401
except ImportError as e:
    raise MissingDependencyError('equicanon.training needs lightning: pip install "equicanon[train]"') from e

from .checkpoint import (
    AtomicCheckpointIO,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    ResumeCheckpoint,
    load_checkpoint_file,
)
from .data import FashionMNISTDataModule, MNISTDataModule, ResumableDataLoader, RotatedImageDataModule, SplitDataModule
from .image_models import CanonicalizedEfficientNet, ContrastiveCNN, EfficientNetClassifier
from .models import CanonicalizedCNN, canonicalized_cnn, parse_group
from .module import TASKS, CanonicalizationModule
from .nbody import CanonicalizedNBody, NBodyDataModule, NBodyMLP, NBodyTransformer, nbody_predictor
from .points import CanonicalizedPointNet, PointCloudDataModule
from .sets import CanonicalizedSetMLP, SetDataModule, SetMLP

__all__ = ["CanonicalizationModule", "TASKS", "SplitDataModule", "RotatedImageDataModule", "FashionMNISTDataModule",
           "MNISTDataModule", "PointCloudDataModule", "SetDataModule", "CanonicalizedCNN", "CanonicalizedPointNet",
           "CanonicalizedSetMLP", "SetMLP", "ContrastiveCNN", "CanonicalizedEfficientNet", "EfficientNetClassifier",
           "canonicalized_cnn", "parse_group", "NBodyDataModule", "CanonicalizedNBody", "NBodyMLP",
           "NBodyTransformer", "nbody_predictor", "AtomicCheckpointIO", "ResumeCheckpoint",
           "ResumableDataLoader", "CorruptCheckpointError", "CheckpointNotFoundError", "load_checkpoint_file"]
