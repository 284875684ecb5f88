"""The generated set task of :mod:`equicanon.data.sets` for Lightning.

:class:`SetDataModule` serves ``(x (B, n, F) float32, y (B,) int64)`` batches of digit sets and
their order-statistic labels. ``configs/set_sort_sn.yaml`` classifies them with an
:class:`equicanon.Canonicalized` model: a :class:`~equicanon.canonicalizers.Sort`
canonicalizer in front of :class:`equicanon.models.SetMLP` (an MLP on the flattened set), which
makes the MLP exactly invariant to ``S(n)``::

    equicanon fit --config configs/set_sort_sn.yaml
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import TensorDataset

from ..actions import Set
from ..data.sets import SET_TARGETS, make_set_task
from ..errors import ConfigError, check_choice, check_positive_int
from ..groups import S
from .data import SplitDataModule

__all__ = ["SetDataModule"]


class SetDataModule(SplitDataModule):
    """Digit sets and an order statistic of their digits (:func:`~equicanon.data.sets.make_set_task`).

    Batches are ``(x (B, set_size, features) float32, y (B,) int64)``, ``y`` a class in
    ``0 … digits−1``. Every split is generated from its own seeded generator; the elements
    of every set come in random order.

    Args:
        set_size, features, digits, target, noise: the task, see :func:`~equicanon.data.sets.make_set_task`.
        shuffle_train: permute the elements of every training set by a fresh random
            permutation at every step (default), so an order-dependent model cannot memorise
            orders of the training sets.
        train_size, val_size, test_size, batch_size, seed, num_workers: see :class:`SplitDataModule`.
    """

    def __init__(self, set_size: int = 9, features: int = 4, digits: int = 10, target: str = "median",
                 noise: float = 0.02, *, shuffle_train: bool = True, train_size: int = 10000, val_size: int = 2000,
                 test_size: int = 2000, batch_size: int = 128, seed: int = 0, num_workers: int = 0) -> None:
        super().__init__(train_size=train_size, val_size=val_size, test_size=test_size, batch_size=batch_size,
                         seed=seed, num_workers=num_workers)
        self.set_size = check_positive_int(set_size, "set_size")
        self.features = check_positive_int(features, "features")
        self.digits = check_positive_int(digits, "digits", minimum=2)
        self.target = check_choice(target, SET_TARGETS, "target")
        if isinstance(noise, bool) or not isinstance(noise, (int, float)):
            raise ConfigError(f"noise: expected a finite number >= 0, got {noise!r}")
        self.noise = float(noise)
        make_set_task(1, set_size=self.set_size, generator=torch.Generator(), features=self.features,
                      digits=self.digits, target=self.target, noise=self.noise)  # checks the rest now, not at setup
        if not isinstance(shuffle_train, bool):
            raise ConfigError(f"shuffle_train: expected true or false, got {shuffle_train!r}")
        self.shuffle_train = shuffle_train
        self.group = S(self.set_size)
        self.save_hyperparameters()

    def build(self, split: str) -> TensorDataset:
        """Generate the sets of ``split`` (seeded by ``seed`` and the split)."""
        x, y = make_set_task(self.size(split), set_size=self.set_size, generator=self.generator(split),
                             features=self.features, digits=self.digits, target=self.target, noise=self.noise)
        return TensorDataset(x, y)

    def augment(self, batch: Any, generator: torch.Generator) -> Any:
        """With ``shuffle_train``, permute the elements of each set ``x (B, n, F)`` by a new random permutation."""
        if not self.shuffle_train:
            return batch
        x, y = batch
        g = self.group.sample(x.shape[0], generator=generator).to(x.device)
        return Set(self.group)(g, x), y
