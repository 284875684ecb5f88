"""Shared test settings and fixtures.

Hypothesis runs a bounded number of examples without deadlines (torch's first
call of an op can be slow); set ``HYPOTHESIS_PROFILE=thorough`` for a longer run.

Every helper more than one test module needs is a fixture here (test modules never
import each other): ``smooth_image`` and ``inscribed_disk`` (test images),
``write_idx`` and ``fake_split`` (IDX dataset files), ``fake_data`` (a fake
Fashion-MNIST folder) and ``smoke`` (command-line overrides that shrink a config
to seconds). The warning filters for Lightning's noise are in ``pyproject.toml``.
"""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import settings

settings.register_profile("equicanon", max_examples=30, deadline=None)
settings.register_profile("thorough", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "equicanon"))


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> Iterator[None]:
    """Run tests on one thread: their tensors are tiny, and two threads mostly wait on each other
    (3-20x slower when another process holds a core of the 2-core machines)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _smooth_image(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A band-limited ``(1, 1, n, n)`` image: three wide Gaussians near the centre, peak about 1."""
    i = torch.arange(n, dtype=torch.float64)
    rows, cols = torch.meshgrid(i, i, indexing="ij")
    c = (n - 1) / 2
    img = torch.zeros(n, n, dtype=torch.float64)
    blobs = [(0.0, 0.0, n / 5, 1.0), (n / 8, -n / 10, n / 8, 0.7), (-n / 9, n / 7, n / 9, -0.5)]
    for d_row, d_col, sigma, amp in blobs:
        img += amp * torch.exp(-((rows - c - d_row) ** 2 + (cols - c - d_col) ** 2) / (2 * sigma**2))
    return img[None, None].to(dtype)


def _inscribed_disk(h: int, w: int) -> torch.Tensor:
    """``(H, W)`` bool: pixel centres within the disk inscribed in the image, about the grid centre."""
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                                indexing="ij")
    radius = (min(h, w) - 1) / 2
    return (rows - (h - 1) / 2) ** 2 + (cols - (w - 1) / 2) ** 2 <= radius**2


@pytest.fixture
def smooth_image() -> Callable[..., torch.Tensor]:
    """Factory ``smooth_image(n, dtype=float64)`` of a smooth, centred test image ``(1, 1, n, n)``."""
    return _smooth_image


@pytest.fixture
def inscribed_disk() -> Callable[[int, int], torch.Tensor]:
    """Factory ``inscribed_disk(h, w)`` of the boolean mask of the inscribed disk."""
    return _inscribed_disk


# ------------------------------------------------------------------ dataset files


def _write_idx(path: Path, array: np.ndarray, *, compress: bool = True, magic: int | None = None) -> None:
    header = struct.pack(">I", magic if magic is not None else 0x0800 + array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def _fake_split(folder: Path, prefix: str, n: int, *, compress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=(n,), dtype=np.uint8)
    suffix = ".gz" if compress else ""
    _write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, compress=compress)
    _write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress=compress)
    return images, labels


@pytest.fixture(scope="session")
def write_idx() -> Callable[..., None]:
    """Factory ``write_idx(path, array, *, compress=True, magic=None)``: an IDX file (uint8 values), gzipped by
    default; ``magic`` overrides the header's type code (to write a wrong file)."""
    return _write_idx


@pytest.fixture(scope="session")
def fake_split() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """Factory ``fake_split(folder, prefix, n, *, compress=True) -> (images, labels)``: the two IDX files of an
    MNIST-style split (``prefix`` "train" or "t10k") holding ``n`` random ``28 x 28`` uint8 images and labels 0-9
    (the same values for every call with the same ``n``)."""
    return _fake_split


@pytest.fixture(scope="session")
def fake_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of fake Fashion-MNIST IDX files: 48 training and 16 test images (tests only read it)."""
    folder = tmp_path_factory.mktemp("fashion")
    _fake_split(folder, "train", 48)
    _fake_split(folder, "t10k", 16)
    return folder


# ------------------------------------------------------------------ command line


def _smoke(config: Path, data: Path, root: Path) -> list[str]:
    data_dir = [f"--data.data_dir={data}"] if "data_dir" in config.read_text() else []  # generated data has none
    return ["--config", str(config), *data_dir, "--data.train_size=16", "--data.val_size=8",
            "--data.test_size=8", "--data.batch_size=8", f"--trainer.default_root_dir={root}",
            "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", "--trainer.log_every_n_steps=1"]


@pytest.fixture(scope="session")
def smoke() -> Callable[[Path, Path, Path], list[str]]:
    """Factory ``smoke(config, data, root)``: the ``equicanon fit|validate|test`` arguments that run ``config``
    in seconds (16 training images, batches of 8, CPU, no progress bar), reading ``data`` when the config has a
    ``data_dir`` and writing under ``root``."""
    return _smoke
