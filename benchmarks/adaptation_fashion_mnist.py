"""Experiment 1 of docs/adaptation.md: adapting a pretrained classifier to C(8), with and without the prior.

Mondal et al. (NeurIPS 2023), Table 1, on Fashion-MNIST: a ResNet is pretrained on upright
images, then each method fine-tunes a copy of it for the same number of steps:

- ``vanilla``: upright images;
- ``augmented``: images moved by random elements of C(8);
- ``canonicalized``: learned canonicalization (GroupConv, C(8)), no prior;
- ``canonicalized + prior``: the same with the prior (weight 100);
- ``contrastive + prior``: EquiOptAdapt's canonicalizer (a non-equivariant CNN scores the
  8 rotated copies) with its contrastive loss and the prior;
- ``prior only``: the canonicalizer alone with the prior, the predictor frozen (no labels).

The canonicalized models get the same inputs as ``augmented`` (upright images moved by random
C(8) elements; ``ec.train_canonicalizer(transform_inputs=True)``), where the prior's target is
the element each was moved by. Reported: accuracy on upright test images and averaged over
the 8 rotations of C(8) (the 4 quarter turns are exact, the 4 others interpolate), and the
identity rate (share of upright test images whose pose is the identity).

Run: python benchmarks/adaptation_fashion_mnist.py [--config configs/adaptation/fashion_mnist.yaml] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import equicanon as ec
from equicanon.canonicalizers import Contrastive, GroupConv
from equicanon.canonicalizers.backbones import SmallCNN
from equicanon.data import FASHION_MNIST_CLASSES, load_fashion_mnist
from equicanon.metrics import identity_rate
from equicanon.nn import resnet_small
from equicanon.plots import metric_by_angle
from equicanon.training.models import parse_group

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _config import merge, read_settings  # noqa: E402

CONFIG = ROOT / "configs" / "adaptation" / "fashion_mnist.yaml"
QUICK = {"train_images": 512, "test_images": 64, "batch_size": 32,
         "predictor": {"pretrain_steps": 20}, "finetune": {"steps": 4}}
NAMES = {"vanilla": "vanilla", "augmented": "rotation augmentation", "canonicalized": "canonicalized, no prior",
         "prior": "canonicalized + prior", "contrastive": "contrastive + prior",
         "prior_only": "prior only (predictor frozen)"}


def fit_plain(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float, batch: int, seed: int,
              action: ec.actions.Action | None = None) -> nn.Module:
    """Adam on cross-entropy for ``steps`` random batches; with ``action``, each batch moved by random elements."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(x), (batch,), generator=gen)
        xb = x[idx]
        if action is not None:
            assert action.group is not None
            xb = action(action.group.sample(batch, generator=gen), xb)
        loss = F.cross_entropy(model(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, group: ec.groups.FiniteGroup,
             batch: int = 500) -> dict[str, Any]:
    """Accuracy at each element of ``group`` (``g·x`` for all test images; the turns of
    :func:`equicanon.plots.metric_by_angle` are the group's elements), and the identity rate on upright ``x``."""
    _, scores = metric_by_angle(model, x, y, ec.actions.Image(group), angles=group.order, batch=batch)
    per_element = scores.tolist()
    out: dict[str, Any] = {"upright": per_element[0], "averaged": sum(per_element) / len(per_element),
                           "per_element": per_element,
                           "quarter_turns": sum(per_element[::group.order // 4]) / 4 if group.order % 4 == 0 else None}
    if isinstance(model, ec.Canonicalized):
        rates = [float(identity_rate(model.canonicalizer(x[s:s + batch]))) * len(x[s:s + batch])
                 for s in range(0, len(x), batch)]
        out["identity_rate"] = sum(rates) / len(x)
    return out


def run(cfg: dict[str, Any], out: Path | None, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Pretrain, adapt by every method, evaluate; print the table and write ``fashion_mnist.{json,png}`` to ``out``."""
    torch.manual_seed(cfg["seed"])
    x_train, y_train = load_fashion_mnist("train", cfg["data_dir"])
    x_test, y_test = load_fashion_mnist("test", cfg["data_dir"])
    x_train = x_train[: cfg["train_images"], None].float() / 255
    y_train = y_train[: cfg["train_images"]]
    x_test = x_test[: cfg["test_images"], None].float() / 255
    y_test = y_test[: cfg["test_images"]]
    group = parse_group(cfg["group"])
    batch, seed = cfg["batch_size"], cfg["seed"]
    pc, fc, cc, kc = cfg["predictor"], cfg["finetune"], cfg["canonicalizer"], cfg["contrastive"]
    say(f"Fashion-MNIST: {len(x_train)} training images, {len(x_test)} test images x {group.order} angles; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    t0 = time.perf_counter()
    pretrained = fit_plain(resnet_small(10, 1, pc["width"]), x_train, y_train, pc["pretrain_steps"], pc["lr"], batch, seed)
    say(f"pretrained {pc['pretrain_steps']} steps on upright images in {time.perf_counter() - t0:.0f} s")

    def group_conv() -> GroupConv:
        return GroupConv(group, 1, hidden=cc["hidden"], layers=cc["layers"], kernel_size=cc["kernel_size"],
                         crop=cc["crop"], resize=cc["resize"])

    def contrastive() -> Contrastive:
        net = SmallCNN(1, out_dim=kc["out_dim"], hidden=kc["hidden"])
        return Contrastive(group, net, temperature=kc["temperature"], crop=cc["crop"], resize=cc["resize"], seed=seed)

    def adapt(canon: ec.canonicalizers.Canonicalizer, *, finetune: bool = True, prior: float = cfg["prior_weight"],
              contrastive_weight: float = 0.0) -> nn.Module:
        return ec.adapt_pretrained(copy.deepcopy(pretrained), group, canonicalizer=canon, data=(x_train, y_train),
                                   steps=fc["steps"], finetune=finetune, prior_weight=prior,
                                   contrastive_weight=contrastive_weight, lr=cc["lr"], finetune_lr=fc["lr"],
                                   batch_size=batch, seed=seed)

    methods: dict[str, Callable[[], nn.Module]] = {
        "vanilla": lambda: fit_plain(copy.deepcopy(pretrained), x_train, y_train, fc["steps"], fc["lr"], batch, seed),
        "augmented": lambda: fit_plain(copy.deepcopy(pretrained), x_train, y_train, fc["steps"], fc["lr"], batch, seed,
                                       action=ec.actions.Image(group)),
        "canonicalized": lambda: adapt(group_conv(), prior=0.0),
        "prior": lambda: adapt(group_conv()),
        "contrastive": lambda: adapt(contrastive(), contrastive_weight=kc["weight"]),
        "prior_only": lambda: adapt(group_conv(), finetune=False),
    }
    results: dict[str, Any] = {"pretrained": evaluate(pretrained, x_test, y_test, group)}
    models: dict[str, nn.Module] = {}
    for name, make in methods.items():
        t0 = time.perf_counter()
        models[name] = make()
        seconds = time.perf_counter() - t0
        results[name] = {**evaluate(models[name], x_test, y_test, group), "train_seconds": seconds}
        say(f"{NAMES[name]}: {fc['steps']} steps in {seconds:.0f} s")

    say(f"\n| method | upright | C{group.order}-averaged | quarter turns | identity rate |")
    say("|---|---|---|---|---|")
    for name, r in results.items():
        rate = f"{100 * r['identity_rate']:.1f}%" if "identity_rate" in r else "-"
        label = f"pretrained (no fine-tuning, {pc['pretrain_steps']} steps)" if name == "pretrained" else NAMES[name]
        say(f"| {label} | {100 * r['upright']:.2f} | {100 * r['averaged']:.2f} | {100 * r['quarter_turns']:.2f} | {rate} |")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "fashion_mnist.json").write_text(json.dumps({"config": cfg, "results": results}, indent=2) + "\n")
        say(f"\nwrote {out / 'fashion_mnist.json'}")
        plot(models, x_test, y_test, group, out / "fashion_mnist.png")
        say(f"wrote {out / 'fashion_mnist.png'}")
    return results


@torch.inference_mode()
def plot(models: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor, group: ec.groups.FiniteGroup, path: Path) -> None:
    """The first ``|G|`` test items, item ``k`` turned by element ``k``; their canonical forms without and with the prior."""
    from equicanon.plots import plot_rows

    k = torch.arange(group.order)
    inputs = ec.actions.Image(group)(k, x[: group.order])
    rows = {"input": inputs}
    for name in ("canonicalized", "prior"):
        model = models[name]
        assert isinstance(model, ec.Canonicalized)
        rows[f"canonical:\n{'prior' if name == 'prior' else 'no prior'}"] = model.canonicalizer(inputs).canonical
    angle = 360 // group.order
    titles = [f"{FASHION_MNIST_CLASSES[int(y[i])]}, {int(i) * angle}°" for i in k]
    plot_rows(rows, path, titles=titles, title="Turned test items and their canonical forms, without and with the prior")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "adaptation")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test (writes nothing)")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    cfg = read_settings(args.config)
    if args.data_dir is not None:
        cfg["data_dir"] = args.data_dir
    if args.quick:
        cfg = merge(cfg, QUICK)
    start = time.perf_counter()
    run(cfg, None if args.quick else args.out)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
