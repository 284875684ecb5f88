"""Point-cloud classification under SO(3): a bare point encoder against the same network behind a
vector-neuron canonicalizer, trained upright or with random rotations, tested upright and rotated.

Procedural clouds (10 classes, equicanon.data.pointclouds); the predictor is ``ec.models.PointEncoder``,
the canonicalizer ``create("vector_neurons", group="SO3", ...)``; every model is trained by
``equicanon.training.fit`` (random rotations of the training batches, where used, as its ``augment``).
The test set is scored upright and after a random rotation (the same clouds).

    python experiments/pointcloud_accuracy.py              # 800 steps; ~4 min on 1 CPU thread
    python experiments/pointcloud_accuracy.py --steps 200  # any setting (configs/experiments/pointcloud_accuracy.yaml)
    python experiments/pointcloud_accuracy.py --quick      # seconds
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import equicanon as ec
from equicanon.data.pointclouds import make_pointclouds, rotate_clouds
from equicanon.settings import parse_settings, run_script
from equicanon.training import fit

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "experiments" / "pointcloud_accuracy.yaml"


@dataclass
class Settings:
    """Settings of the point-cloud comparison.

    Args:
        steps: Adam steps per model.
        points: points per cloud.
        train_clouds: training clouds (seed 0), upright.
        test_clouds: test clouds (seed 1), scored upright and rotated.
        batch_size: clouds per step.
        lr: Adam learning rate.
        width: width of the point encoder's per-point MLP.
        hidden: channels of the vector-neuron canonicalizer.
        layers: its layers.
        k: its neighbours per point.
        threads: torch threads.
    """

    steps: int
    points: int
    train_clouds: int
    test_clouds: int
    batch_size: int
    lr: float
    width: int
    hidden: int
    layers: int
    k: int
    threads: int


def rotate_so3(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``fit``'s ``augment``: each training cloud ``(B, N, 3)`` turned by a random SO(3) rotation."""
    return rotate_clouds(x, "SO3", generator=generator)


def run(name: str, model: nn.Module, train_rotated: bool, s: Settings, data: dict[str, torch.Tensor]) -> None:
    """Train ``model`` and print its row of the table."""
    start = time.perf_counter()
    fit(model, (data["x"], data["y"]), s.steps, lr=s.lr, batch_size=s.batch_size, seed=0,
        augment=rotate_so3 if train_rotated else None, transform=None)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        acc = [float((model(data[k]).argmax(1) == data["y_test"]).float().mean()) for k in ("upright", "rotated")]
    print(f"| {name} | {'random SO3' if train_rotated else 'upright'} | {seconds:.0f} s | {acc[0]:.3f} | {acc[1]:.3f} |",
          flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    """The command line: the settings (``--help``), ``--quick``; prints the table."""
    s = parse_settings(Settings, argv, config=CONFIG, description=__doc__).values
    torch.set_num_threads(s.threads)
    x, y = make_pointclouds(s.train_clouds, s.points, generator=torch.Generator().manual_seed(0), rotate=None)
    upright, y_test = make_pointclouds(s.test_clouds, s.points, generator=torch.Generator().manual_seed(1), rotate=None)
    rotated, _ = make_pointclouds(s.test_clouds, s.points, generator=torch.Generator().manual_seed(1), rotate="SO3")
    data = {"x": x, "y": y, "upright": upright, "rotated": rotated, "y_test": y_test}
    print(f"{s.steps} steps of batch {s.batch_size}, {torch.get_num_threads()} thread(s), torch {torch.__version__}\n")
    print("| model | trained on | time | test upright | test SO3 |\n|---|---|---|---|---|")
    for train_rotated in (False, True):
        torch.manual_seed(0)
        run("bare PointEncoder", ec.models.PointEncoder(3, 10, s.width), train_rotated, s, data)
    for train_rotated in (False, True):
        torch.manual_seed(0)
        canon = ec.canonicalizers.create("vector_neurons", group="SO3", hidden=s.hidden, layers=s.layers, k=s.k)
        model = ec.Canonicalized(ec.models.PointEncoder(3, 10, s.width), canon)  # canonicalizer first (weight order)
        run("VN(SO3)-canonicalized PointEncoder", model, train_rotated, s, data)


if __name__ == "__main__":
    raise SystemExit(run_script(main))
