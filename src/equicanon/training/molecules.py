"""QM9 molecules for Lightning: invariant property regression on padded, variable-size molecules.

Batches are ``(x (B, N, 11), y (B, T), mask (B, N))``: each atom in the particle layout of
:class:`~equicanon.canonicalizers.ParticleVectorNeurons` (position in Å, a zero velocity, the one-hot element
H, C, N, O, F), the standardised targets, and the padding mask (True: a real atom), which the Lightning module
passes to the model as ``mask=``. The molecules come from the CSV files of the PyPI package ``qm9pack``
(:func:`equicanon.data.load_qm9`; nothing is downloaded). ``configs/qm9_gap_*.yaml`` train a
:class:`~equicanon.models.MoleculeTransformer` on the HOMO–LUMO gap plain, with rotation augmentation, behind
a ``ParticleVectorNeurons(E3())`` canonicalizer and with PCA frames (:class:`~equicanon.FrameAveraged`)::

    equicanon fit --config configs/qm9_gap_canonicalized.yaml
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch.utils.data import TensorDataset

from ..data.molecules import ATOMIC_NUMBERS, QM9Molecules, load_qm9
from ..errors import ConfigError, check_positive_int
from .data import SplitDataModule

__all__ = ["QM9DataModule", "QM9_TARGETS", "molecule_particles"]

HARTREE_EV = 27.211386245988
#: target name → (QM9 column, factor to the reported unit, unit); EGNN's table reports the same units
QM9_TARGETS: dict[str, tuple[str, float, str]] = {
    "gap": ("HOMO_LUMO_gap_au", HARTREE_EV, "eV"),
    "homo": ("HOMO_au", HARTREE_EV, "eV"),
    "lumo": ("LUMO_au", HARTREE_EV, "eV"),
    "polarizability": ("Polarizability_bohr3", 1.0, "bohr^3"),
    "dipole": ("Dipole_debye", 1.0, "D"),
    "cv": ("Heatcapacity_Cv_cal_mol_K", 1.0, "cal/mol K"),
}
_ELEMENTS = tuple(ATOMIC_NUMBERS.values())  # H C N O F


def molecule_particles(molecules: QM9Molecules, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Molecules as particles ``(M, N, 11)``: position (Å), zero velocity, one-hot element H, C, N, O, F;
    padding rows are 0."""
    onehot = (molecules.numbers[..., None] == torch.tensor(_ELEMENTS)).to(dtype)
    velocity = torch.zeros_like(molecules.positions, dtype=dtype)
    return torch.cat([molecules.positions.to(dtype), velocity, onehot], dim=-1)


class QM9DataModule(SplitDataModule):
    """QM9 regression of ``targets`` (:data:`QM9_TARGETS`); batches ``(x (B, N, 11), y (B, T), mask (B, N))``.

    The molecules of ``parts`` (and ``atoms``, ``limit``) are shuffled once with ``seed``; the first
    ``train_size`` are the training split, the next ``val_size`` and ``test_size`` the others, so every run
    and every rank sees the same split. Targets are converted to :data:`QM9_TARGETS`' units (eV, bohr³, D) and
    standardised with the training split's mean and standard deviation (:attr:`mean`, :attr:`std`, in those
    units; :meth:`unstandardize` maps predictions back). Molecules are padded to the largest one read.

    Args:
        targets: names in :data:`QM9_TARGETS`, e.g. ``["gap"]`` or ``["gap", "polarizability", "dipole"]``.
        parts: the ``qm9pack`` CSV files to read (1: 43,610 molecules; 1, 2, 3: all 130,831).
        atoms: keep molecules of these atom counts (``None``: all).
        limit: read at most this many molecules (after ``atoms``).
        root: a folder with the CSV files instead of the installed package's.
        train_size, val_size, test_size, batch_size, seed, num_workers: see :class:`SplitDataModule`.

    Raises:
        ConfigError: an unknown target, or splits larger than the molecules read.
        MissingDependencyError: ``qm9pack`` is not installed (``pip install qm9pack``) and ``root`` is not given.
    """

    def __init__(self, targets: Sequence[str] = ("gap",), *, parts: Sequence[int] = (1,),
                 atoms: int | Sequence[int] | None = None, limit: int | None = None,
                 root: str | os.PathLike[str] | None = None, train_size: int = 30000, val_size: int = 2000,
                 test_size: int = 5000, batch_size: int = 100, seed: int = 0, num_workers: int = 0) -> None:
        super().__init__(train_size=train_size, val_size=val_size, test_size=test_size, batch_size=batch_size,
                         seed=seed, num_workers=num_workers)
        targets = [targets] if isinstance(targets, str) else list(targets)
        unknown = [t for t in targets if t not in QM9_TARGETS]
        if not targets or unknown:
            raise ConfigError(f"targets: expected names among {', '.join(QM9_TARGETS)}, got {targets!r}")
        self.targets = targets
        self.parts = list(parts)
        self.atoms = atoms
        self.limit = None if limit is None else check_positive_int(limit, "limit")
        self.root = root
        self.units = [QM9_TARGETS[t][2] for t in targets]
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None
        self._splits: dict[str, TensorDataset] | None = None
        self.save_hyperparameters()

    def _read(self) -> dict[str, TensorDataset]:
        molecules = load_qm9(self.atoms, parts=self.parts, limit=self.limit, root=self.root,
                             properties=[QM9_TARGETS[t][0] for t in self.targets])
        total = self.train_size + self.val_size + self.test_size
        if total > len(molecules):
            raise ConfigError(f"train_size + val_size + test_size = {total}, but only {len(molecules)} molecules were "
                              f"read (parts={self.parts}, atoms={self.atoms}, limit={self.limit})")
        order = torch.randperm(len(molecules), generator=torch.Generator().manual_seed(self.seed))
        x = molecule_particles(molecules)
        y = torch.stack([molecules.properties[QM9_TARGETS[t][0]] * QM9_TARGETS[t][1] for t in self.targets], dim=-1)
        bounds = {"train": (0, self.train_size), "val": (self.train_size, self.train_size + self.val_size),
                  "test": (self.train_size + self.val_size, total)}
        train = order[:self.train_size]
        self.mean, self.std = y[train].mean(0), y[train].std(0).clamp_min(1e-12)
        scaled = ((y - self.mean) / self.std).float()
        splits = {}
        for split, (a, b) in bounds.items():
            rows = order[a:b]
            width = int(molecules.mask[rows].sum(1).max())  # pad each split to its own largest molecule
            splits[split] = TensorDataset(x[rows, :width], scaled[rows], molecules.mask[rows, :width])
        return splits

    def build(self, split: str) -> TensorDataset:
        """The molecules of ``split`` (all three splits are read and standardised on the first call)."""
        if self._splits is None:
            self._splits = self._read()
        return self._splits[split]

    def unstandardize(self, prediction: torch.Tensor) -> torch.Tensor:
        """Standardised predictions ``(B, T)`` in the targets' units (after :meth:`setup`)."""
        if self.mean is None or self.std is None:
            raise ConfigError("QM9DataModule: call setup() before unstandardize (the statistics come from the "
                              "training split)")
        return prediction * self.std.to(prediction) + self.mean.to(prediction)
