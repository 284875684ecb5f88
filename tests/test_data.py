"""Local dataset loading: real files when present, clear errors when missing or corrupt."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from equicanon.data import CorruptDataError, DataNotFoundError, load_fashion_mnist
from equicanon.data.mnist import FASHION_MNIST_DIRS
from equicanon.errors import ConfigError, EquicanonError


@pytest.mark.parametrize("compress", [True, False])
def test_reads_idx_files_exactly(tmp_path: Path, compress: bool, fake_split) -> None:
    images, labels = fake_split(tmp_path, "t10k", 7, compress=compress)
    x, y = load_fashion_mnist("test", data_dir=tmp_path)
    assert x.dtype == torch.uint8 and y.dtype == torch.int64
    assert torch.equal(x, torch.from_numpy(images))
    assert torch.equal(y, torch.from_numpy(labels.astype(np.int64)))


def test_missing_file_names_file_and_install_command(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match=r"train-images-idx3-ubyte\.gz.*apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("train", data_dir=tmp_path)
    assert issubclass(DataNotFoundError, FileNotFoundError) and issubclass(DataNotFoundError, EquicanonError)


def test_truncated_and_wrong_files_give_clear_errors(tmp_path: Path, fake_split, write_idx) -> None:
    fake_split(tmp_path, "t10k", 5)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    with gzip.open(path, "rb") as f:
        data = f.read()
    with gzip.open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(CorruptDataError, match="header says"):
        load_fashion_mnist("test", data_dir=tmp_path)
    path.write_bytes(b"not gzip at all")
    with pytest.raises(CorruptDataError, match="cannot read"):
        load_fashion_mnist("test", data_dir=tmp_path)
    write_idx(path, np.zeros((5, 28, 28)), magic=0x0801)
    with pytest.raises(CorruptDataError, match="magic"):
        load_fashion_mnist("test", data_dir=tmp_path)


def test_mismatched_counts(tmp_path: Path, fake_split, write_idx) -> None:
    fake_split(tmp_path, "t10k", 5)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(4))
    with pytest.raises(CorruptDataError, match="5 images but 4 labels"):
        load_fashion_mnist("test", data_dir=tmp_path)


def test_bad_split() -> None:
    with pytest.raises(ConfigError, match="'train' or 'test'"):
        load_fashion_mnist("validation")


@pytest.mark.skipif(not Path(FASHION_MNIST_DIRS[0]).is_dir(), reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist() -> None:
    x, y = load_fashion_mnist("test")
    assert x.shape == (10000, 28, 28)
    assert torch.equal(torch.bincount(y), torch.full((10,), 1000))
