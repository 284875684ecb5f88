"""``equicanon demo``: a smoke run on small synthetic IDX files, and the full run on real Fashion-MNIST.

The full run (about 3.5 minutes on 2 CPU cores) checks the claims the README makes about it.
It needs the Debian package dataset-fashion-mnist (the README's setup installs it where apt
exists) and is skipped elsewhere.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from equicanon.cli import main
from equicanon.data.mnist import FASHION_MNIST_DIRS
from equicanon.demo import DemoConfig, run_demo

pytest.importorskip("matplotlib")


@pytest.fixture
def fake_data(tmp_path: Path, fake_split) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    fake_split(folder, "train", 300)
    fake_split(folder, "t10k", 64)
    return folder


def _check_outputs(out: Path, results: dict) -> None:
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"vanilla", "augmented", "canonicalized"}
    for name, row in metrics.items():
        assert 0.0 <= row["upright"] <= 1.0 and 0.0 <= row["rotated"] <= 1.0
        assert row == pytest.approx(results[name])
    for png in ("canonical_forms.png", "accuracy_by_angle.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_smoke_run_writes_metrics_and_plots(fake_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    results = run_demo(out, DemoConfig(train_images=300, test_images=64, steps=4, batch=16),
                       data_dir=str(fake_data), verbose=False)
    _check_outputs(out, results)


def test_cli_demo_smoke_and_missing_data_error(fake_data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    code = main(["demo", "--out", str(out), "--data-dir", str(fake_data), "--steps", "3", "--batch", "8",
                 "--train-images", "100", "--test-images", "32"])
    assert code == 0
    assert (out / "metrics.json").is_file()
    code = main(["demo", "--out", str(tmp_path / "x"), "--data-dir", str(tmp_path / "empty"), "--no-plots"])
    assert code == 2
    assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().err


def test_console_script_is_installed() -> None:
    done = subprocess.run([sys.executable, "-m", "equicanon.cli", "demo", "--help"], capture_output=True, text=True,
                          check=True)
    assert "--out" in done.stdout


@pytest.mark.slow
@pytest.mark.skipif(not Path(FASHION_MNIST_DIRS[0], "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="dataset-fashion-mnist is not installed")
def test_full_demo_meets_the_readme_claims(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the demo's setting; tests otherwise run on one thread
    try:
        r = run_demo(tmp_path, verbose=False)
    finally:
        torch.set_num_threads(threads)
    print(json.dumps(r, indent=1))
    van, aug, can = r["vanilla"], r["augmented"], r["canonicalized"]
    assert van["upright"] - van["rotated"] >= 0.20
    assert can["upright"] - can["rotated"] <= 0.03
    assert can["rotated"] - aug["rotated"] >= 0.03
    assert np.isfinite([v for row in r.values() for v in row.values()]).all()
