"""``FashionMNISTDataModule``: (rotated) Fashion-MNIST from local IDX files, for Lightning and YAML configs."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from ..actions.functional import rotate_image
from ..actions.image import Image
from ..data import load_fashion_mnist
from ..errors import ConfigError, check_positive_int
from ..groups import SO2
from .models import parse_group

__all__ = ["FashionMNISTDataModule"]


class FashionMNISTDataModule(pl.LightningDataModule):
    """Fashion-MNIST batches ``(x (B, 1, 28, 28) float in [0, 1], y (B,) int64)``; nothing is downloaded.

    ``train`` holds the first ``train_images`` images of the training split, ``val`` the last
    ``val_images`` of it (disjoint), ``test`` the first ``test_images`` of the test split.

    Args:
        data_dir: folder with the ``*-ubyte.gz`` files (default: ``$EQUICANON_DATA``, then the Debian
            package's folder); missing files raise :class:`~equicanon.data.DataNotFoundError`.
        rotate: ``"none"`` (upright), ``"random"`` (uniform angles in [0°, 360°), bilinear, zero
            padding) or a group name such as ``"C4"`` / ``"D4"`` (a uniformly random element,
            exact index operations for multiples of 90°).
        rotate_train: rotate the training images too (default); ``False`` trains on upright images
            and validates/tests on rotated ones.
        seed: seed of the rotations; each image keeps its rotation across epochs.
    """

    def __init__(self, data_dir: str | None = None, *, train_images: int = 50000, val_images: int = 10000,
                 test_images: int = 10000, batch_size: int = 128, rotate: str = "random", rotate_train: bool = True,
                 seed: int = 0, num_workers: int = 0) -> None:
        super().__init__()
        self.data_dir = data_dir
        self.train_images = check_positive_int(train_images, "train_images")
        self.val_images = check_positive_int(val_images, "val_images")
        self.test_images = check_positive_int(test_images, "test_images")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.num_workers = check_positive_int(num_workers, "num_workers", minimum=0)
        if not isinstance(rotate, str):
            raise ConfigError(f"rotate must be 'none', 'random' or a group name such as 'C4', got {rotate!r}")
        self.rotate = rotate
        self._group = None if rotate in ("none", "random") else parse_group(rotate)
        self.rotate_train = bool(rotate_train)
        self.seed = int(seed)
        self.save_hyperparameters()
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None
        self.test_set: TensorDataset | None = None

    def _rotated(self, x: torch.Tensor, salt: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + salt)
        if self.rotate == "none":
            return x
        if self._group is None:
            angles = torch.rand(len(x), generator=gen) * 360
            return rotate_image(x, SO2().from_angle(angles, degrees=True))
        g = self._group.sample(len(x), generator=gen)
        return Image(self._group)(g, x)

    def setup(self, stage: str | None = None) -> None:
        """Read the files and rotate the images (once, seeded)."""
        if stage in (None, "fit", "validate") and self.val_set is None:
            x, y = load_fashion_mnist("train", self.data_dir)
            if self.train_images + self.val_images > len(x):
                raise ConfigError(f"train_images + val_images = {self.train_images + self.val_images} exceeds the "
                                  f"{len(x)} images of the training split")
            x = x[:, None].float() / 255
            train_x, train_y = x[: self.train_images], y[: self.train_images]
            val_x, val_y = x[len(x) - self.val_images:], y[len(x) - self.val_images:]
            if self.rotate_train:
                train_x = self._rotated(train_x, 1)
            self.train_set = TensorDataset(train_x, train_y)
            self.val_set = TensorDataset(self._rotated(val_x, 2), val_y)
        if stage in (None, "test") and self.test_set is None:
            x, y = load_fashion_mnist("test", self.data_dir)
            x = x[: self.test_images, None].float() / 255
            self.test_set = TensorDataset(self._rotated(x, 3), y[: self.test_images])

    def _loader(self, data: TensorDataset | None, shuffle: bool) -> DataLoader:
        assert data is not None, "setup() was not called"
        return DataLoader(data, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          generator=torch.Generator().manual_seed(self.seed) if shuffle else None)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, False)
