"""Training never loses work: ``equicanon fit`` killed with SIGKILL mid-epoch resumes from its last
checkpoint and finishes with the same weights as a run that was never interrupted (deterministic mode,
same seed); checkpoints are written atomically."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("lightning")
from equicanon.training.checkpoint import AtomicCheckpointIO, atomic_torch_save

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "rotated_fashion_mnist_c4.yaml"
STEPS_PER_EPOCH = 8  # train_size 64 / batch 8


def _fit_command(data: Path, root: Path, max_steps: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "equicanon.cli", "fit", "--config", str(CONFIG), f"--data.data_dir={data}",
            "--data.train_size=64", "--data.val_size=8", "--data.test_size=8", "--data.batch_size=8",
            "--model.model.init_args.canonicalizer.init_args.hidden=4",
            "--model.model.init_args.predictor.init_args.width=8",
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


# float32: with precision=64-true Lightning loads a checkpoint's float64 weights into the still-float32
# model before converting it, which rounds them (a Lightning limitation, see docs/reliability.md)
DETERMINISTIC = ["--trainer.deterministic=true", "--data.fresh_rotations=true", "--model.transform=group",
                 "--trainer.callbacks.every_n_train_steps=3"]


def _kill_mid_epoch(command: list[str], root: Path) -> int:
    """Start ``command``, SIGKILL it once ``last.ckpt`` holds a step in the middle of an epoch; that step."""
    proc = subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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
    return _step(last)


def _fit_in_process(args: list[str]) -> None:
    """``equicanon fit`` in this process (no interpreter start-up), leaving torch's global flags as they were."""
    from equicanon.cli import main

    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        assert main(args) == 0
    finally:
        torch.use_deterministic_algorithms(deterministic)


def _final_state(root: Path) -> dict[str, object]:
    final = max(root.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)
    return torch.load(final, map_location="cpu", weights_only=False)  # type: ignore[no-any-return]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_fit_killed_mid_epoch_resumes_and_ends_where_an_uninterrupted_run_ends(tmp_path: Path, fake_split) -> None:
    """SIGKILL mid-epoch, ``--ckpt_path last``: the run finishes, and in deterministic mode (with fresh
    per-step rotations and transform="group", whose random streams must survive the restart) its final
    weights and optimizer state equal those of the same run never interrupted, to 1e-12."""
    data = tmp_path / "data"
    data.mkdir()
    fake_split(data, "train", 72)
    fake_split(data, "t10k", 8)
    total = 20
    killed_root, plain_root = tmp_path / "killed", tmp_path / "plain"
    slow = ["--trainer.callbacks+=tests._slow_callback.SlowDown", "--trainer.callbacks.seconds=0.1"]
    killed_at = _kill_mid_epoch(_fit_command(data, killed_root, total, *DETERMINISTIC, *slow), killed_root)
    assert 0 < killed_at < total and killed_at % STEPS_PER_EPOCH != 0
    assert not list(killed_root.rglob("*.tmp")), "a temporary checkpoint file was left behind"

    resumed = subprocess.run(_fit_command(data, killed_root, total, *DETERMINISTIC, "--ckpt_path", "last"), cwd=ROOT,
                             env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "Restored all states from the checkpoint" in resumed.stdout + resumed.stderr
    _fit_in_process(_fit_command(data, plain_root, total, *DETERMINISTIC)[3:])  # the same run, never interrupted

    a, b = _final_state(killed_root), _final_state(plain_root)
    assert a["global_step"] == b["global_step"] == total
    weights_a, weights_b = a["state_dict"], b["state_dict"]
    assert weights_a.keys() == weights_b.keys()
    for key in weights_a:
        torch.testing.assert_close(weights_a[key], weights_b[key], atol=1e-12, rtol=1e-12, msg=key)
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values(),
                      strict=True):
        for key in sa:
            torch.testing.assert_close(sa[key], sb[key], atol=1e-12, rtol=1e-12)


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
