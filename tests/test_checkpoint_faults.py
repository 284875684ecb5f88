"""Checkpoint faults: a truncated, corrupt, foreign or missing checkpoint is a clear equicanon error naming
the file (library and command line), and a final checkpoint written mid-epoch resumes inside that epoch."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

pytest.importorskip("lightning")
from equicanon.cli import main
from equicanon.errors import EquicanonError
from equicanon.training.checkpoint import (
    AtomicCheckpointIO,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    load_checkpoint_file,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "rotated_fashion_mnist_c4.yaml"
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:.*LightningCLI's args parameter",
                                        "ignore:.*does not have many workers", "ignore:.*could not find the monitored",
                                        "ignore:.*treespec, LeafSpec", "ignore:.*The number of training batches")


def _args(data: Path, root: Path) -> list[str]:
    return ["--config", str(CONFIG), f"--data.data_dir={data}", "--data.train_size=32", "--data.val_size=8",
            "--data.test_size=8", "--data.batch_size=4", "--model.model.init_args.canonicalizer.init_args.hidden=4",
            "--model.model.init_args.predictor.init_args.width=8", f"--trainer.default_root_dir={root}",
            "--trainer.accelerator=cpu",
            "--trainer.devices=1", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
            "--trainer.logger=false", "--trainer.max_epochs=-1", "--trainer.check_val_every_n_epoch=5",
            "--trainer.callbacks.every_n_train_steps=4"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, fake_split) -> tuple[Path, Path]:
    """``(data folder, last.ckpt)`` of a 6-step run (8 batches per epoch: it stops mid-epoch)."""
    tmp = tmp_path_factory.mktemp("faults")
    data, root = tmp / "data", tmp / "run"
    data.mkdir()
    fake_split(data, "train", 48)
    fake_split(data, "t10k", 8)
    assert main(["fit", *_args(data, root), "--trainer.max_steps=6"]) == 0
    return data, next(root.rglob("last.ckpt"))


def test_the_final_checkpoint_of_a_run_stopped_mid_epoch_stays_in_that_epoch(run: tuple[Path, Path]) -> None:
    """Saved at the last step (not after Lightning closes the epoch), with the loader's position: a run
    continued from it with a larger max_steps reads the rest of epoch 0, not a reshuffled epoch 1."""
    state = torch.load(run[1], map_location="cpu", weights_only=False)
    assert state["global_step"] == 6 and state["epoch"] == 0
    fit_loop = state["loops"]["fit_loop"]
    assert fit_loop["epoch_progress"]["current"]["completed"] == 0
    assert fit_loop["state_dict"]["combined_loader"] == [{"batches": 6}]


def _corrupt(kind: str, good: Path, folder: Path) -> Path:
    path = folder / f"{kind}.ckpt"
    data = good.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(b"\x00not a checkpoint\xff" * 50)
    elif kind == "flipped":  # a byte in the middle overwritten: the zip's checksums or pickle no longer hold
        middle = len(data) // 3
        path.write_bytes(data[:middle] + bytes(64) + data[middle + 64:])
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"state": 1})[:-3])
    elif kind == "foreign":
        torch.save([1, 2, 3], path)
    elif kind == "no_state_dict":
        torch.save({"epoch": 3}, path)
    return path


KINDS = ["truncated", "empty", "garbage", "flipped", "pickle", "foreign", "no_state_dict"]


@pytest.mark.parametrize("kind", KINDS)
def test_unreadable_checkpoints_are_corrupt_checkpoint_errors_naming_the_file(kind: str, run: tuple[Path, Path],
                                                                             tmp_path: Path) -> None:
    path = _corrupt(kind, run[1], tmp_path)
    for load in (load_checkpoint_file, AtomicCheckpointIO().load_checkpoint):
        with pytest.raises(CorruptCheckpointError) as info:
            load(path)
        assert str(path) in str(info.value)
        assert isinstance(info.value, EquicanonError) and isinstance(info.value, ValueError)
    assert load_checkpoint_file(run[1])["global_step"] == 6  # the intact checkpoint still loads


def test_a_missing_checkpoint_is_checkpoint_not_found(tmp_path: Path) -> None:
    for path, words in ((tmp_path / "nope.ckpt", "does not exist"), (tmp_path, "is a folder")):
        with pytest.raises(CheckpointNotFoundError, match=words) as info:
            load_checkpoint_file(path)
        assert str(path) in str(info.value) and isinstance(info.value, FileNotFoundError)


@pytest.mark.parametrize(("stage", "kind"), [("validate", "truncated"), ("fit", "flipped"), ("test", "missing")])
def test_the_command_line_exits_2_naming_the_bad_checkpoint(stage: str, kind: str, run: tuple[Path, Path],
                                                            tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "missing.ckpt" if kind == "missing" else _corrupt(kind, run[1], tmp_path)
    assert main([stage, *_args(run[0], tmp_path / "out"), "--trainer.max_steps=8", f"--ckpt_path={path}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"equicanon {stage}: error: ") and str(path) in err
    assert ("does not exist" if kind == "missing" else "truncated or corrupt") in err
