"""Training never loses work: ``equicanon fit`` killed with SIGKILL mid-epoch resumes from its last
checkpoint and finishes; checkpoints are written atomically."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.test_data import _fake_split

pytest.importorskip("lightning")
from equicanon.training.checkpoint import AtomicCheckpointIO, atomic_torch_save

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "rotated_fashion_mnist_c4.yaml"
STEPS_PER_EPOCH = 8  # train_size 64 / batch 8


def _fit_command(data: Path, root: Path, max_steps: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "equicanon.cli", "fit", "--config", str(CONFIG), f"--data.data_dir={data}",
            "--data.train_size=64", "--data.val_size=8", "--data.test_size=8", "--data.batch_size=8",
            "--model.model.init_args.hidden=4", "--model.model.init_args.width=8",
            f"--trainer.default_root_dir={root}", "--trainer.accelerator=cpu", "--trainer.devices=1",
            f"--trainer.max_steps={max_steps}", "--trainer.max_epochs=-1", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", "--trainer.logger=false", "--trainer.check_val_every_n_epoch=2",
            "--trainer.callbacks.every_n_train_steps=3", *extra]


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", OMP_NUM_THREADS="1")
    env["PYTHONWARNINGS"] = "ignore"
    return env


def _step(path: Path) -> int:
    for _ in range(50):  # the file is complete once it exists (atomic rename), but be patient with slow disks
        try:
            return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])
        except (FileNotFoundError, EOFError, RuntimeError):
            time.sleep(0.05)
    raise AssertionError(f"cannot read {path}")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_fit_killed_mid_epoch_resumes_from_last_checkpoint_and_finishes(tmp_path: Path) -> None:
    data, root = tmp_path / "data", tmp_path / "run"
    data.mkdir()
    _fake_split(data, "train", 72)
    _fake_split(data, "t10k", 8)
    total = 40
    slow = ["--trainer.callbacks+=tests._slow_callback.SlowDown", "--trainer.callbacks.seconds=0.15"]
    proc = subprocess.Popen(_fit_command(data, root, total, *slow), cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            found = sorted(root.rglob("last.ckpt"))
            if found and _step(found[0]) >= 3 and _step(found[0]) % STEPS_PER_EPOCH:
                last = found[0]
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before it could be killed:\n{proc.communicate()[0][-3000:]}"
        assert last is not None, "no mid-epoch checkpoint appeared within 120 s"
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = _step(last)
    assert 0 < killed_at < total and killed_at % STEPS_PER_EPOCH != 0
    assert not list(root.rglob("*.tmp")), "a temporary checkpoint file was left behind"

    resumed = subprocess.run(_fit_command(data, root, total, "--ckpt_path", "last"), cwd=ROOT, env=_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert "Restored all states from the checkpoint" in log, log[-3000:]
    final = max(root.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)
    state = torch.load(final, map_location="cpu", weights_only=False)
    assert state["global_step"] == total


def test_atomic_save_leaves_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "ckpt" / "last.ckpt"
    atomic_torch_save({"step": 1}, path)
    assert torch.load(path)["step"] == 1

    class Unpicklable:
        def __reduce__(self) -> object:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_torch_save({"step": 2, "bad": Unpicklable()}, path)
    assert torch.load(path)["step"] == 1  # the previous checkpoint survives, whole
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temporary file left


def test_checkpoint_io_round_trips_and_is_what_the_cli_uses(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.arange(3.0)}, "global_step": 5}, tmp_path / "a.ckpt")
    loaded = io.load_checkpoint(tmp_path / "a.ckpt")
    assert loaded["global_step"] == 5 and torch.equal(loaded["state_dict"]["w"], torch.arange(3.0))
    with pytest.raises(TypeError, match="storage_options"):
        io.save_checkpoint({}, tmp_path / "b.ckpt", storage_options={"x": 1})
