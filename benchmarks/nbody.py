"""Charged n-body (EGNN's task, nbody_small sizes): validation MSE of the SE(3)-canonicalized model
against the same predictor without canonicalization, on the systems as generated and moved by a
random rigid motion, with the constant-position and straight-line baselines.

    python benchmarks/nbody.py [PREDICTOR] [EPOCHS] [TRAIN] [VAL]   # default transformer 100 3000 1000

One CPU thread; batch 100; constant Adam learning rate 1e-3 (the config's settings).
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

import equicanon as ec
from equicanon.data.nbody import make_nbody, nbody_baselines
from equicanon.training.nbody import CanonicalizedNBody, nbody_predictor


def _mse(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(F.mse_loss(model(x), y))


def main(predictor: str = "transformer", epochs: int = 100, n_train: int = 3000, n_val: int = 1000) -> None:
    torch.set_num_threads(1)
    start = time.perf_counter()
    xt, yt = make_nbody(n_train, generator=torch.Generator().manual_seed(1))  # NBodyDataModule(seed=0)'s training split
    xv, yv = make_nbody(n_val, generator=torch.Generator().manual_seed(2))
    print(f"simulated {n_train} + {n_val} systems in {time.perf_counter() - start:.0f} s")
    group = ec.SE3()
    moves = group.sample(n_val, generator=torch.Generator().manual_seed(3))
    xm, ym = ec.actions.Particles(group)(moves, xv), ec.actions.Points(group)(moves, yv)
    print("baselines (val as generated):", {k: round(v, 4) for k, v in nbody_baselines(xv, yv, 1.0).items()})
    print("\n| model | val MSE, as generated | val MSE, moved by SE(3) | training time |\n|---|---|---|---|")
    for name, model in [("canonicalized", CanonicalizedNBody("SE3", predictor=predictor, width=64, depth=2, hidden=32)),
                        ("plain", nbody_predictor(predictor, width=64, depth=2))]:
        torch.manual_seed(0)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        order = torch.Generator().manual_seed(1)
        begin = time.perf_counter()
        for _ in range(epochs):
            model.train()
            for idx in torch.randperm(n_train, generator=order).split(100):
                loss = F.mse_loss(model(xt[idx]), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        print(f"| {name} {predictor} | {_mse(model, xv, yv):.4f} | {_mse(model, xm, ym):.4f} | "
              f"{time.perf_counter() - begin:.0f} s |", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0] if args else "transformer", *(int(a) for a in args[1:4]))
