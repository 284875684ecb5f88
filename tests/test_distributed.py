"""DDP: two CPU processes (gloo) train to the same weights and report the same validation metrics
as one process with the same global batch.

Float64 (``--trainer.precision=64-true``): in float32 the two runs differ by reduction order
(~1e-7), and Adam divides by the gradient's running RMS, which turns that noise on
near-zero gradients into steps of up to ``lr``; in float64 they agree to 1e-9. Batch norm is
off because ``SyncBatchNorm`` needs GPUs; per-rank statistics would differ from one process's.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("lightning")
if not torch.distributed.is_available():  # pragma: no cover
    pytest.skip("torch.distributed is not available", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "rotated_fashion_mnist_c4.yaml"
STEPS = 6


def _fit(data: Path, root: Path, devices: int) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Fit on ``devices`` CPU processes with a global batch of 8; return the final weights and validation metrics."""
    command = [sys.executable, "-m", "equicanon.cli", "fit", "--config", str(CONFIG), f"--data.data_dir={data}",
               "--data.train_size=32", "--data.val_size=16", "--data.test_size=8", f"--data.batch_size={8 // devices}",
               "--model.model.init_args.canonicalizer.init_args.hidden=4", "--model.model.init_args.predictor.init_args.width=8",
               f"--trainer.default_root_dir={root}", "--trainer.accelerator=cpu", f"--trainer.devices={devices}",
               f"--trainer.strategy={'ddp' if devices > 1 else 'auto'}",
               "--model.model.init_args.canonicalizer.init_args.batch_norm=false",
               "--model.model.init_args.predictor.init_args.batch_norm=false",
               "--model.transform=group",  # the moves are drawn for the global batch: each rank keeps its share
               "--trainer.precision=64-true",
               f"--trainer.max_steps={STEPS}", "--trainer.max_epochs=-1", "--trainer.num_sanity_val_steps=0",
               "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
               "--trainer.logger=lightning.pytorch.loggers.CSVLogger", f"--trainer.logger.save_dir={root}",
               "--trainer.val_check_interval=2", "--trainer.check_val_every_n_epoch=null"]
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", OMP_NUM_THREADS="1",
               PYTHONWARNINGS="ignore")
    env.pop("MASTER_PORT", None)
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (last,) = root.rglob("last.ckpt")
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert state["global_step"] == STEPS
    (log,) = root.rglob("metrics.csv")
    with open(log, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/loss")]
    assert len(rows) == STEPS // 2, rows
    metrics = {k: float(v) for k, v in rows[-1].items() if k.startswith("val/") and v}
    return state["state_dict"], metrics


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_two_gloo_processes_match_one_process(tmp_path: Path, fake_split) -> None:
    data = tmp_path / "data"
    data.mkdir()
    fake_split(data, "train", 48)
    fake_split(data, "t10k", 8)
    one_weights, one_metrics = _fit(data, tmp_path / "one", 1)
    two_weights, two_metrics = _fit(data, tmp_path / "two", 2)
    assert one_weights.keys() == two_weights.keys()
    for name, value in one_weights.items():
        other = two_weights[name]
        if value.is_floating_point():
            torch.testing.assert_close(other, value, atol=1e-9, rtol=1e-7, msg=lambda m, n=name: f"{n}: {m}")
        else:
            assert torch.equal(other, value), name
    assert set(one_metrics) == set(two_metrics) and "val/pose_agreement" in one_metrics
    for name in ("val/loss", "val/acc_upright", "val/acc_transformed", "val/identity_rate", "val/pose_agreement"):
        assert two_metrics[name] == pytest.approx(one_metrics[name], abs=1e-4), name
