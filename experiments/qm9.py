"""QM9 molecules: invariant regression of the HOMO–LUMO gap, polarizability and dipole moment.

The four configs ``configs/qm9_gap_{plain,augmented,canonicalized,frames}.yaml`` train one
``ec.models.MoleculeTransformer`` (atoms as tokens, padded molecules with a padding mask) on the three
standardised properties jointly: plain on the files' coordinates, plain with E(3) augmentation (every
training batch moved by random rotations, reflections and translations), behind a
``ParticleVectorNeurons(E3())`` canonicalizer, and averaged over PCA frames (``ec.FrameAveraged``). Each is
built from its config exactly as ``equicanon fit --config ...`` builds it (same data module, split and
module), trained with its ``Trainer`` for ``epochs``, then scored on the test split as given and moved by
random E(3) elements (seeded): mean absolute error in the properties' units (eV, bohr³, D), training time,
inference time; for the canonicalized model also the share of test molecules whose pose turns by more than
``angle`` degrees when ``noise`` Å of Gaussian noise is added to every atom's position, and for frame averaging
the share whose principal axes (up to their signs) turn by more.

    python experiments/qm9.py                                   # the full run of docs/molecules.md
    python experiments/qm9.py --models '[plain, canonicalized]' --epochs 5
    python experiments/qm9.py --quick                           # seconds: 300 molecules, one epoch

Writes ``docs/molecules/qm9.json`` (a full run) and prints markdown tables.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

import equicanon as ec
from equicanon.adapt import pca_frames
from equicanon.errors import ConfigError
from equicanon.settings import parse_settings, run_script
from equicanon.training.cli import build_cli
from equicanon.training.molecules import QM9DataModule

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "experiments" / "qm9.yaml"
MODELS = ("plain", "augmented", "canonicalized", "frames")
#: EGNN (Satorras et al. 2021, Table 3; 100k training molecules, one model per property), as context
EGNN_MAE = {"gap": 0.048, "polarizability": 0.071, "dipole": 0.029, "homo": 0.029, "lumo": 0.025, "cv": 0.031}


@dataclass
class Settings:
    """Settings of the QM9 comparison.

    Args:
        models: configs to run (``plain``, ``augmented``, ``canonicalized``, ``frames``).
        epochs: training epochs of every model (the configs' ``trainer.max_epochs`` is replaced).
        train_size: training molecules (the data module's split; all models share it).
        val_size: validation molecules.
        test_size: test molecules, scored as given and moved.
        limit: read at most this many molecules of the first file (null: all 43,610).
        batch: molecules per evaluation call.
        noise: standard deviation (Å) of the noise on every coordinate for the pose stability.
        angle: degrees; a pose that turns by more under the noise moved.
        tolerance: a molecule's prediction is not invariant when moving it changes a standardised target by more.
        seed: seeds the E(3) moves and the noise of the evaluation.
        threads: torch threads.
    """

    models: list[str]
    epochs: int
    train_size: int
    val_size: int
    test_size: int
    limit: int | None
    batch: int
    noise: float
    angle: float
    tolerance: float
    seed: int
    threads: int

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in MODELS]
        if unknown or not self.models:
            raise ConfigError(f"models: expected names among {', '.join(MODELS)}, got {self.models!r}")


def build(name: str, s: Settings, root: str) -> Any:
    """The Lightning CLI objects (model, data module, trainer) of ``configs/qm9_gap_<name>.yaml`` with the
    settings' sizes and epochs, checkpoints under ``root``."""
    args = ["--config", str(ROOT / "configs" / f"qm9_gap_{name}.yaml"), "--trainer.max_epochs", str(s.epochs),
            "--trainer.default_root_dir", root, "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.logger", "false",
            "--data.init_args.train_size", str(s.train_size), "--data.init_args.val_size", str(s.val_size),
            "--data.init_args.test_size", str(s.test_size)]
    if s.limit is not None:
        args += ["--data.init_args.limit", str(s.limit)]
    argv, sys.argv = sys.argv, sys.argv[:1]  # the CLI reads args only, not this script's own flags
    try:
        return build_cli(args, run=False)
    finally:
        sys.argv = argv


def predict(fn: Callable[..., torch.Tensor], x: torch.Tensor, mask: torch.Tensor, batch: int) -> torch.Tensor:
    """``fn(x, mask=mask)`` on ``batch`` molecules at a time, concatenated."""
    return torch.cat([fn(x[i:i + batch], mask=mask[i:i + batch]) for i in range(0, len(x), batch)])


def mae(data: QM9DataModule, pred: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Mean absolute error per target, in its unit, of standardised predictions against standardised targets."""
    errors = (data.unstandardize(pred) - data.unstandardize(y)).abs().mean(0)
    return {t: float(v) for t, v in zip(data.targets, errors, strict=True)}


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: QM9DataModule, s: Settings) -> dict[str, Any]:
    """MAE per target in its units on the test split, as given and moved by random E(3) elements, the inference
    time per molecule, and (canonicalized models) the pose stability under noise."""
    assert data.test_set is not None and data.train_set is not None
    x, y, mask = data.test_set.tensors
    group = ec.E3()
    moves = group.sample(len(x), generator=torch.Generator().manual_seed(s.seed))
    moved = ec.actions.Particles(group)(moves.to(x.dtype), x, mask=mask)  # padding rows stay 0
    model.eval()
    out: dict[str, Any] = {}
    preds = {}
    for label, inputs in (("upright", x), ("moved", moved)):
        start = time.perf_counter()
        preds[label] = predict(model, inputs, mask, s.batch)
        if label == "upright":
            out["inference_ms_per_molecule"] = 1e3 * (time.perf_counter() - start) / len(x)
        out[label] = mae(data, preds[label], y)
    # each molecule's largest change of a standardised prediction when moved (1.0: a target's standard deviation)
    change = (preds["moved"] - preds["upright"]).abs().amax(-1).double()
    out["invariance_error"] = {"median": float(change.median()), "p99": float(change.quantile(0.99)),
                               "max": float(change.max()), "share_above": float((change > s.tolerance).double().mean())}
    noise = torch.randn((*x.shape[:-1], 3), generator=torch.Generator().manual_seed(s.seed + 1)) * s.noise
    noisy = x.clone()
    noisy[..., :3] += noise * mask[..., None]
    if isinstance(model, ec.Canonicalized):
        turned = []
        for i in range(0, len(x), s.batch):
            a = model.canonicalizer(x[i:i + s.batch], mask=mask[i:i + s.batch]).pose
            b = model.canonicalizer(noisy[i:i + s.batch], mask=mask[i:i + s.batch]).pose
            turned.append(ec.metrics.pose_error(group, a, b, reduction="none"))
        out["pose_moved_share"] = float((torch.cat(turned) > s.angle).double().mean())
    if isinstance(model, ec.FrameAveraged):  # the frames up to their signs: the nearest of the 8 noisy ones
        a = pca_frames(x[..., :3].double(), group, mask)[:, :1]  # (M, 1, 3, 3)
        b = pca_frames(noisy[..., :3].double(), group, mask)  # (M, 8, 3, 3)
        angle = ec.metrics.pose_error("O3", a.expand_as(b).reshape(-1, 3, 3), b.reshape(-1, 3, 3), reduction="none")
        out["pose_moved_share"] = float((angle.reshape(len(x), -1).min(1).values > s.angle).double().mean())
        out["one_frame"] = one_frame_mae(model, data, s)
    xt, yt, mt = (t[:s.test_size] for t in data.train_set.tensors)  # as many training molecules as test ones
    out["train"] = mae(data, predict(model, xt, mt, s.batch), yt)
    return out


def one_frame_mae(model: ec.FrameAveraged, data: QM9DataModule, s: Settings) -> dict[str, float]:
    """Test MAE of the frame-averaged predictor run on one of its 8 frames instead of their mean (averaged over
    the 8 choices): what the averaging itself adds, beyond putting the molecule in its principal axes."""
    assert data.test_set is not None
    x, y, mask = data.test_set.tensors
    poses = model.frame_poses(x[..., :3], mask)  # (M, 8, 4, 4)
    errors = []
    for k in range(poses.shape[1]):
        turned = model.input.act(model.group.inverse(poses[:, k]), x, mask=mask)
        errors.append(mae(data, predict(model.predictor, turned, mask, s.batch), y))
    return {t: sum(e[t] for e in errors) / len(errors) for t in data.targets}


def main(argv: Sequence[str] | None = None) -> None:
    """The command line: the settings (``--help``), ``--quick``; prints the tables, writes the JSON."""
    settings = parse_settings(Settings, argv, config=CONFIG, output_dir=ROOT / "docs" / "molecules", description=__doc__)
    s = settings.values
    torch.set_num_threads(s.threads)
    results: dict[str, Any] = {"settings": asdict(s), "egnn_mae": EGNN_MAE, "models": {}}
    targets: list[str] = []
    units: list[str] = []
    with tempfile.TemporaryDirectory() as root:
        for name in s.models:
            cli = build(name, s, f"{root}/{name}")
            data = cli.datamodule
            start = time.perf_counter()
            cli.trainer.fit(cli.model, datamodule=data)
            seconds = time.perf_counter() - start
            data.setup("test")
            row = {"train_seconds": seconds, **evaluate(cli.model.model, data, s)}
            targets, units = data.targets, data.units
            results["models"][name] = row
            print(f"{name}: trained in {seconds:.0f} s; test MAE upright {row['upright']}, moved {row['moved']}",
                  flush=True)
    head = " | ".join(f"{t} ({u}) upright / moved" for t, u in zip(targets, units, strict=True))
    print(f"\n| model | {head} | training | inference per molecule |")
    print("|---|" + "---|" * len(targets) + "---|---|")
    for name, row in results["models"].items():
        cells = " | ".join(f"{row['upright'][t]:.3f} / {row['moved'][t]:.3f}" for t in targets)
        print(f"| {name} | {cells} | {row['train_seconds']:.0f} s | {row['inference_ms_per_molecule']:.2f} ms |")
    print("| EGNN (published, 100k molecules) | " + " | ".join(f"{EGNN_MAE[t]:.3f}" for t in targets) + " | | |")
    print(f"\nLargest change of a standardised prediction when a test molecule is moved (share above {s.tolerance}):")
    for name, row in results["models"].items():
        e = row["invariance_error"]
        print(f"- {name}: median {e['median']:.2e}, 99th percentile {e['p99']:.2e}, max {e['max']:.2e}; "
              f"{100 * e['share_above']:.2f}% above")
    print("\nTest MAE against MAE on as many training molecules (upright):")
    for name, row in results["models"].items():
        cells = ", ".join(f"{t} {row['upright'][t]:.3f} / {row['train'][t]:.3f}" for t in targets)
        print(f"- {name}: {cells}")
        if "one_frame" in row:
            cells = ", ".join(f"{t} {row['one_frame'][t]:.3f}" for t in targets)
            print(f"- {name} on one PCA frame instead of the mean of 8 (test): {cells}")
    for name, row in results["models"].items():
        if "pose_moved_share" in row:
            what = "principal axes" if name == "frames" else "poses"
            print(f"\n{name}: {100 * row['pose_moved_share']:.2f}% of the test molecules' {what} turn by more than "
                  f"{s.angle}° under {s.noise} Å of noise")
    if settings.output_dir is not None:
        path = Path(settings.output_dir) / "qm9.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=1) + "\n")
        print(f"\nwrote {path}")


if __name__ == "__main__":
    raise SystemExit(run_script(main))
