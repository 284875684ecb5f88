"""Charged n-body (EGNN's task, nbody_small sizes): validation MSE of the SE(3)-canonicalized model
against the same predictor without canonicalization, on the systems as generated and moved by a
random rigid motion, with the constant-position and straight-line baselines.

The canonicalized model is ``ec.Canonicalized(predictor, create("particle_vector_neurons", group="SE3"),
output=Points(SE3))``; both are trained by ``equicanon.training.fit`` (MSE, epochs of shuffled batches).

    python experiments/nbody.py                        # transformer, 100 epochs, 3000 + 1000 systems
    python experiments/nbody.py --predictor mlp --epochs 20
    python experiments/nbody.py --quick                # seconds
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import equicanon as ec
from equicanon.data.nbody import make_nbody, nbody_baselines
from equicanon.errors import check_choice
from equicanon.settings import parse_settings, run_script
from equicanon.training import fit

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "experiments" / "nbody.yaml"


@dataclass
class Settings:
    """Settings of the n-body comparison.

    Args:
        predictor: ``transformer`` (``ec.models.NBodyTransformer``) or ``mlp`` (``ec.models.NBodyMLP``).
        epochs: passes over the training systems.
        train: training systems (simulated with seed 1, as NBodyDataModule(seed=0)'s training split).
        val: validation systems (seed 2); moved by random SE(3) elements (seed 3) for the second score.
        width: the predictor's width.
        depth: the predictor's depth.
        heads: attention heads of the transformer.
        hidden: channels of the canonicalizer (ParticleVectorNeurons, 2 layers).
        batch_size: systems per step.
        lr: Adam learning rate (constant).
        threads: torch threads.
        seed: seeds the initial weights of both models.
    """

    predictor: str
    epochs: int
    train: int
    val: int
    width: int
    depth: int
    heads: int
    hidden: int
    batch_size: int
    lr: float
    threads: int
    seed: int

    def __post_init__(self) -> None:
        check_choice(self.predictor, ("transformer", "mlp"), "predictor")


def predictor(s: Settings) -> nn.Module:
    """The plain n-body network of the settings (5 particles, 1 charge column)."""
    if s.predictor == "mlp":
        return ec.models.NBodyMLP(5, 1, width=s.width, depth=s.depth)
    return ec.models.NBodyTransformer(1, width=s.width, depth=s.depth, heads=s.heads)


def epochs(x: torch.Tensor, y: torch.Tensor, count: int, batch_size: int, seed: int
           ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` epochs of shuffled batches ``(x, y)`` (the permutations drawn from one seeded generator)."""
    order = torch.Generator().manual_seed(seed)
    for _ in range(count):
        for idx in torch.randperm(len(x), generator=order).split(batch_size):
            yield x[idx], y[idx]


def _mse(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(F.mse_loss(model(x), y))


def main(argv: Sequence[str] | None = None) -> None:
    """The command line: the settings (``--help``), ``--quick``; prints the table."""
    s = parse_settings(Settings, argv, config=CONFIG, description=__doc__).values
    torch.set_num_threads(s.threads)
    start = time.perf_counter()
    xt, yt = make_nbody(s.train, generator=torch.Generator().manual_seed(1))  # NBodyDataModule(seed=0)'s training split
    xv, yv = make_nbody(s.val, generator=torch.Generator().manual_seed(2))
    print(f"simulated {s.train} + {s.val} systems in {time.perf_counter() - start:.0f} s")
    group = ec.SE3()
    moves = group.sample(s.val, generator=torch.Generator().manual_seed(3))
    xm, ym = ec.actions.Particles(group)(moves, xv), ec.actions.Points(group)(moves, yv)
    print("baselines (val as generated):", {k: round(v, 4) for k, v in nbody_baselines(xv, yv, 1.0).items()})
    print("\n| model | val MSE, as generated | val MSE, moved by SE(3) | training time |\n|---|---|---|---|")
    torch.manual_seed(s.seed)
    net = predictor(s)  # built before the canonicalizer (the order the weights are drawn in)
    canon = ec.canonicalizers.create("particle_vector_neurons", group=group, features=1, hidden=s.hidden, layers=2)
    models = [("canonicalized", ec.Canonicalized(net, canon, output=ec.actions.Points(group))), ("plain", predictor(s))]
    steps = s.epochs * -(-s.train // s.batch_size)
    for name, model in models:
        torch.manual_seed(0)
        begin = time.perf_counter()
        fit(model, epochs(xt, yt, s.epochs, s.batch_size, seed=1), steps, lr=s.lr, task_loss="mse", transform=None)
        print(f"| {name} {s.predictor} | {_mse(model, xv, yv):.4f} | {_mse(model, xm, ym):.4f} | "
              f"{time.perf_counter() - begin:.0f} s |", flush=True)


if __name__ == "__main__":
    raise SystemExit(run_script(main))
