"""Fashion-MNIST from local IDX files (the Debian package ``dataset-fashion-mnist``, or any folder).

Nothing is downloaded: missing files raise :class:`DataNotFoundError` naming
the file and how to install it.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, EquicanonError

__all__ = ["DataNotFoundError", "CorruptDataError", "load_fashion_mnist", "FASHION_MNIST_DIRS", "FASHION_MNIST_CLASSES"]

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_INSTALL = ("install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or download the "
            "four *-ubyte.gz files of Fashion-MNIST into a folder and pass it as data_dir (or set EQUICANON_DATA)")


class DataNotFoundError(EquicanonError, FileNotFoundError):
    """A dataset file is not on disk."""


class CorruptDataError(EquicanonError, ValueError):
    """A dataset file exists but cannot be read as what it should be."""


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise CorruptDataError(f"cannot read {path}: {e}; delete it and reinstall the dataset") from e
    if len(data) < 4 + 4 * ndim:
        raise CorruptDataError(f"{path} is truncated ({len(data)} bytes); reinstall the dataset")
    magic = struct.unpack(">I", data[:4])[0]
    if magic != 0x0800 + ndim:
        raise CorruptDataError(
            f"{path}: expected an IDX file of {ndim} dimensions (magic {0x0800 + ndim:#x}), got magic {magic:#x}"
        )
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    expected = int(np.prod(dims))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != expected:
        raise CorruptDataError(f"{path}: header says {dims} = {expected} values, file holds {body.size}; reinstall it")
    return body.reshape(dims)


def _find(name: str, data_dir: str | os.PathLike[str] | None, *, dataset: str = "Fashion-MNIST",
          install: str = _INSTALL, default_dirs: tuple[str, ...] = FASHION_MNIST_DIRS) -> Path:
    """``name`` (or ``name`` without ``.gz``) in ``data_dir``; without one, in ``$EQUICANON_DATA`` and ``default_dirs``.

    Raises:
        DataNotFoundError: naming the ``dataset``, the file, the folders searched and ``install``.
    """
    dirs = [Path(data_dir)] if data_dir is not None else []
    if data_dir is None and os.environ.get("EQUICANON_DATA"):
        dirs.append(Path(os.environ["EQUICANON_DATA"]))
    if data_dir is None:
        dirs += [Path(d) for d in default_dirs]
    for d in dirs:
        for candidate in (d / name, d / name.removesuffix(".gz")):
            if candidate.is_file():
                return candidate
    searched = ", ".join(str(d) for d in dirs) or "(no folder: pass data_dir or set EQUICANON_DATA)"
    raise DataNotFoundError(f"{dataset} file {name} not found in {searched}; {install}")


def load_fashion_mnist(split: str = "train", data_dir: str | os.PathLike[str] | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Upright Fashion-MNIST images and labels.

    Args:
        split: ``"train"`` (60 000 images) or ``"test"`` (10 000).
        data_dir: folder holding ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``;
            by default ``$EQUICANON_DATA``, then ``/usr/share/datasets/fashion-mnist``.

    Returns:
        ``images (N, 28, 28)`` uint8 and ``labels (N,)`` int64 in ``0..9``.
    """
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    prefix = "train" if split == "train" else "t10k"
    images = _read_idx(_find(f"{prefix}-images-idx3-ubyte.gz", data_dir), 3)
    labels = _read_idx(_find(f"{prefix}-labels-idx1-ubyte.gz", data_dir), 1)
    if len(images) != len(labels):
        raise CorruptDataError(f"Fashion-MNIST {split}: {len(images)} images but {len(labels)} labels")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))
