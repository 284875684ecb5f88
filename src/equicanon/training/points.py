"""Rotated point-cloud classification (Kaba et al., 2023, point-cloud experiments) for YAML configs.

:class:`PointCloudDataModule` serves the procedural shapes of
:mod:`equicanon.data.pointclouds` under random rotations. The configs
(``configs/pointcloud_vn_so3.yaml``, ``configs/pointcloud_vn_o3.yaml``) put a vector-neuron
canonicalizer in front of a plain PointNet, as an :class:`equicanon.Canonicalized` with
``predictor: equicanon.models.PointEncoder`` and ``canonicalizer: equicanon.canonicalizers.VectorNeurons``:

    >>> dm = PointCloudDataModule(points=128, rotate="SO3", fresh_rotations=True, train_size=4096)

The paper's two ModelNet40 settings: "SO3/SO3" (``rotate: SO3``, train and test on rotated
clouds) and "z/SO3" (``rotate: SO2``: train and validate on clouds rotated about the z axis;
``acc_transformed`` of :class:`~equicanon.training.CanonicalizationModule` moves them by
random 3-D rotations, so it measures the SO(3) test). ``rotate_train: false`` trains on
upright clouds instead.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import TensorDataset

from ..data.pointclouds import check_classes, cloud_rotations, make_pointclouds, rotate_clouds
from ..errors import check_number, check_positive_int
from ..groups import Group
from .data import SplitDataModule

__all__ = ["PointCloudDataModule"]


class PointCloudDataModule(SplitDataModule):
    """Procedural point clouds (:func:`~equicanon.data.pointclouds.make_pointclouds`): batches
    ``(x (B, points, 3) float32, y (B,) int64)``.

    Each split is generated from its own seeded generator (see :meth:`SplitDataModule.generator`),
    so splits differ and every run and rank builds the same examples.

    Args:
        points: points per cloud.
        classes: names of the classes to use, in label order (default: all of
            :data:`~equicanon.data.pointclouds.POINTCLOUD_CLASSES`).
        rotate: a group name: ``"SO3"`` (uniform rotations), ``"O3"`` (rotations and reflections),
            ``"SO2"`` (rotations about the z axis), ``"Octahedral"``; or ``None`` (upright).
        rotate_train: rotate the training clouds too (default); ``False`` trains on upright
            clouds and validates/tests on rotated ones.
        fresh_rotations: with ``rotate_train``, move every training batch by new random
            elements each step (on its device) instead of once per cloud.
        noise: standard deviation of the Gaussian jitter of every point.
        train_size, val_size, test_size, batch_size, seed, num_workers: see :class:`SplitDataModule`.
    """

    def __init__(self, points: int = 128, classes: list[str] | None = None, *, rotate: str | None = "SO3",
                 rotate_train: bool = True, fresh_rotations: bool = False, noise: float = 0.01,
                 train_size: int = 4096, val_size: int = 1024, test_size: int = 1024, batch_size: int = 32,
                 seed: int = 0, num_workers: int = 0) -> None:
        super().__init__(train_size=train_size, val_size=val_size, test_size=test_size, batch_size=batch_size,
                         seed=seed, num_workers=num_workers)
        self.points = check_positive_int(points, "points")
        self.classes = check_classes(classes)
        self.rotate: Group | None = cloud_rotations(rotate)
        self.rotate_train = bool(rotate_train)
        self.fresh_rotations = bool(fresh_rotations)
        self.noise = check_number(noise, "noise", minimum=0.0)
        self.save_hyperparameters()

    @property
    def num_classes(self) -> int:
        """Number of classes (labels are ``0 … num_classes - 1``)."""
        return len(self.classes)

    def build(self, split: str) -> TensorDataset:
        """Generate the clouds of ``split``: rotated, except training clouds that are upright or rotated per step."""
        upright = split == "train" and (not self.rotate_train or self.fresh_rotations)
        x, y = make_pointclouds(self.size(split), self.points, generator=self.generator(split), noise=self.noise,
                                rotate=None if upright else self.rotate, classes=self.classes)
        return TensorDataset(x, y)

    def augment(self, batch: Any, generator: torch.Generator) -> Any:
        """With ``fresh_rotations`` (and ``rotate_train``), move the batch's clouds by new random elements."""
        if not (self.rotate_train and self.fresh_rotations):
            return batch
        x, y = batch
        return rotate_clouds(x, self.rotate, generator=generator), y
