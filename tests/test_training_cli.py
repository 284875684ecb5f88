"""``equicanon fit | validate | test --config configs/X.yaml``: every config runs end to end (smoke sizes,
synthetic IDX files), checkpoints load back, and bad configs fail with equicanon's errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import equicanon as ec
from equicanon.errors import ConfigError
from tests.test_data import _fake_split

pytest.importorskip("lightning")
pytest.importorskip("jsonargparse")
from equicanon.cli import main
from equicanon.data import DataNotFoundError
from equicanon.training.data import FashionMNISTDataModule
from equicanon.training.models import CanonicalizedCNN, canonicalized_cnn, parse_group

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*does not have many workers",
    "ignore:.*treespec, LeafSpec",
    "ignore:.*The number of training batches",
    "ignore:.*could not find the monitored key",
    "ignore:.*dirpath has changed",
    "ignore:.*tensorboardX",
    "ignore:.*LightningCLI's args parameter",
    "ignore:.*Checkpoint directory .* exists and is not empty",
    "ignore::DeprecationWarning:lightning.pytorch.cli",  # jsonargparse 4.49+ deprecations inside Lightning's CLI
)


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fashion")
    _fake_split(folder, "train", 48)
    _fake_split(folder, "t10k", 16)
    return folder


def smoke(config: Path, data: Path, root: Path) -> list[str]:
    """Overrides that shrink any config to seconds: 16 images, batches of 8, no progress bar."""
    data_dir = [f"--data.data_dir={data}"] if "data_dir" in config.read_text() else []  # generated data has none
    return ["--config", str(config), *data_dir, "--data.train_size=16", "--data.val_size=8",
            "--data.test_size=8", "--data.batch_size=8", f"--trainer.default_root_dir={root}",
            "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", "--trainer.log_every_n_steps=1"]


def test_there_are_configs() -> None:
    assert any(c.name == "rotated_fashion_mnist_c4.yaml" for c in CONFIGS)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_config_fits_then_validates_and_tests_from_checkpoint(config: Path, fake_data: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    args = smoke(config, fake_data, tmp_path)
    assert main(["fit", *args, "--trainer.max_steps=2", "--trainer.max_epochs=1"]) == 0
    checkpoints = sorted(tmp_path.rglob("*.ckpt"))
    assert checkpoints, f"fit with {config.name} wrote no checkpoint under {tmp_path}"
    state = torch.load(checkpoints[0], map_location="cpu", weights_only=False)
    assert state["global_step"] == 2
    for stage in ("validate", "test"):
        assert main([stage, *args, f"--ckpt_path={checkpoints[0]}"]) == 0
    out = capsys.readouterr().out
    assert "val/pose_agreement" in out and ("test/acc_transformed" in out or "test/mse_transformed" in out)


def test_unknown_group_is_a_config_error_naming_close_matches(fake_data: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=r"unknown group 'C4x'.*did you mean 'C4'"):
        parse_group("C4x")
    with pytest.raises(ConfigError, match=r"did you mean 'SO2'"):
        canonicalized_cnn("SO3")
    args = [*smoke(CONFIGS[0], fake_data, tmp_path), "--model.model.init_args.group=S02"]
    assert main(["fit", *args]) == 2
    assert "did you mean 'SO2'" in capsys.readouterr().err


def test_group_names_parse() -> None:
    assert parse_group("C4") == ec.C(4) and parse_group("c8") == ec.C(8) and parse_group("D(4)") == ec.D(4)
    assert parse_group("SO2") == ec.SO2() and parse_group("O2()") == ec.O2()
    model = CanonicalizedCNN("D4", hidden=4, layers=2, kernel_size=3, width=4)
    assert model.group == ec.D(4) and model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_missing_data_is_data_not_found(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dm = FashionMNISTDataModule(str(tmp_path / "empty"), train_size=8, val_size=8)
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        dm.setup("fit")
    args = smoke(CONFIGS[0], tmp_path / "empty", tmp_path)
    assert main(["fit", *args]) == 2
    assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().err


@pytest.mark.parametrize("rotate", ["none", "random", "C4", "D4"])
def test_datamodule_splits_are_disjoint_and_rotated_as_asked(fake_data: Path, rotate: str) -> None:
    dm = FashionMNISTDataModule(str(fake_data), train_size=16, val_size=8, test_size=8, batch_size=4,
                                rotate=rotate)
    dm.setup(None)
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (4, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert len(dm.train_set) == 16 and len(dm.val_set) == 8 and len(dm.test_set) == 8  # type: ignore[arg-type]
    upright = ec.data.load_fashion_mnist("train", fake_data)[0][-8:, None].float() / 255
    val_x = dm.val_set.tensors[0]  # type: ignore[union-attr]
    assert torch.equal(val_x, upright) == (rotate == "none")
    if rotate in ("C4", "D4"):  # exact index operations: the same pixel values, moved
        assert torch.equal(val_x.flatten(1).sort(dim=1).values, upright.flatten(1).sort(dim=1).values)
    with pytest.raises(ConfigError, match="did you mean"):
        FashionMNISTDataModule(rotate="C4x")
