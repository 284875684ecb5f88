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
C(8) elements; ``ec.adapt_pretrained(transform="group")``), where the prior's target is the
element each was moved by. Reported: accuracy on upright test images and averaged over the 8
rotations of C(8) (the 4 quarter turns are exact, the 4 others interpolate), and the identity
rate (share of upright test images whose pose is the identity).

    python experiments/adaptation_fashion_mnist.py                 # 18 min on 2 CPU cores; docs/adaptation/fashion_mnist.*
    python experiments/adaptation_fashion_mnist.py --quick         # a seconds-long smoke run
    python experiments/adaptation_fashion_mnist.py --print_config  # the settings (configs/experiments/...)
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

import equicanon as ec
from equicanon.data import FASHION_MNIST_CLASSES, load_fashion_mnist
from equicanon.metrics import identity_rate
from equicanon.plots import metric_by_angle
from equicanon.settings import parse_settings, run_script
from equicanon.training import fit

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "experiments" / "adaptation_fashion_mnist.yaml"
NAMES = {"vanilla": "vanilla", "augmented": "rotation augmentation", "canonicalized": "canonicalized, no prior",
         "prior": "canonicalized + prior", "contrastive": "contrastive + prior",
         "prior_only": "prior only (predictor frozen)"}


@dataclass
class Predictor:
    """The predictor, ``ec.models.resnet_small`` (ResNet-20 layout), pretrained on upright images.

    Args:
        width: channels of the first stage (then 2x and 4x).
        pretrain_steps: Adam steps on upright images.
        lr: learning rate of the pretraining.
    """

    width: int
    pretrain_steps: int
    lr: float


@dataclass
class Finetune:
    """Fine-tuning of the pretrained predictor, the same for every method.

    Args:
        steps: Adam steps.
        lr: learning rate of the predictor (small steps).
    """

    steps: int
    lr: float


@dataclass
class GroupConvSettings:
    """The learned canonicalizer: ``ec.canonicalizers.create("group_conv", group=..., in_channels=1, **args)``.

    Args:
        args: any GroupConv arguments (``hidden``, ``crop``, ``resize``, ``pool``, ...); the rest are its defaults.
            ``crop`` and ``resize`` are also the contrastive canonicalizer's view.
        lr: learning rate of the canonicalizer.
    """

    args: dict[str, Any]
    lr: float


@dataclass
class ContrastiveSettings:
    """EquiOptAdapt: ``create("contrastive", network=ec.models.ConvEncoder(...))``, same view as the GroupConv.

    Args:
        hidden: channels of the encoder's first convolution.
        out_dim: size of its features.
        logit_scale: logits are ``logit_scale`` times the cosine scores.
        weight: weight of the contrastive loss.
    """

    hidden: int
    out_dim: int
    logit_scale: float
    weight: float


@dataclass
class Settings:
    """Settings of experiment 1.

    Args:
        seed: seeds the weights (global generator), the batches and the group elements.
        data_dir: Fashion-MNIST IDX files (default: $EQUICANON_DATA, then the Debian package's folder).
        train_images: the first training images used.
        test_images: the first test images, each scored at every element of the group.
        batch_size: images per step, for every training run.
        group: the symmetry group, e.g. C8.
        prior_weight: weight of the canonicalization prior.
        predictor: the pretrained network.
        finetune: fine-tuning.
        canonicalizer: the GroupConv canonicalizer.
        contrastive: the EquiOptAdapt canonicalizer.
    """

    seed: int
    data_dir: str | None
    train_images: int
    test_images: int
    batch_size: int
    group: str
    prior_weight: float
    predictor: Predictor
    finetune: Finetune
    canonicalizer: GroupConvSettings
    contrastive: ContrastiveSettings


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


def run(s: Settings, out: Path | None, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Pretrain, adapt by every method, evaluate; print the table and write ``fashion_mnist.{json,png}`` to ``out``."""
    torch.manual_seed(s.seed)
    x_train, y_train = load_fashion_mnist("train", s.data_dir)
    x_test, y_test = load_fashion_mnist("test", s.data_dir)
    x_train = x_train[: s.train_images, None].float() / 255
    y_train = y_train[: s.train_images]
    x_test = x_test[: s.test_images, None].float() / 255
    y_test = y_test[: s.test_images]
    group = cast(ec.groups.FiniteGroup, ec.groups.as_group(s.group, where=lambda g: g.is_finite and g.kind == "planar",
                                                           expected="C(n) or D(n)"))
    batch, seed = s.batch_size, s.seed
    pc, fc, cc, kc = s.predictor, s.finetune, s.canonicalizer, s.contrastive
    say(f"Fashion-MNIST: {len(x_train)} training images, {len(x_test)} test images x {group.order} angles; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    t0 = time.perf_counter()
    pretrained = ec.models.resnet_small(10, 1, pc.width)
    fit(pretrained, (x_train, y_train), pc.pretrain_steps, lr=pc.lr, batch_size=batch, seed=seed, transform=None)
    say(f"pretrained {pc.pretrain_steps} steps on upright images in {time.perf_counter() - t0:.0f} s")

    def finetuned(transform: str | None) -> nn.Module:
        model = copy.deepcopy(pretrained)
        fit(model, (x_train, y_train), fc.steps, lr=fc.lr, batch_size=batch, seed=seed, transform=transform,
            action=ec.actions.Image(group))
        return model

    def group_conv() -> ec.canonicalizers.Canonicalizer:
        return ec.canonicalizers.create("group_conv", group=group, in_channels=1, **cc.args)

    def contrastive() -> ec.canonicalizers.Canonicalizer:
        net = ec.models.ConvEncoder(1, out_dim=kc.out_dim, hidden=kc.hidden)
        return ec.canonicalizers.create("contrastive", group=group, network=net, logit_scale=kc.logit_scale,
                                        crop=cc.args.get("crop"), resize=cc.args.get("resize"), seed=seed)

    def adapt(canon: ec.canonicalizers.Canonicalizer, *, finetune: bool = True, prior: float = s.prior_weight,
              contrastive_weight: float = 0.0) -> nn.Module:
        return ec.adapt_pretrained(copy.deepcopy(pretrained), group, canonicalizer=canon, data=(x_train, y_train),
                                   steps=fc.steps, finetune=finetune, prior_weight=prior,
                                   contrastive_weight=contrastive_weight, transform="group", lr=cc.lr,
                                   finetune_lr=fc.lr, batch_size=batch, seed=seed)

    methods: dict[str, Callable[[], nn.Module]] = {
        "vanilla": lambda: finetuned(None),
        "augmented": lambda: finetuned("group"),
        "canonicalized": lambda: adapt(group_conv(), prior=0.0),
        "prior": lambda: adapt(group_conv()),
        "contrastive": lambda: adapt(contrastive(), contrastive_weight=kc.weight),
        "prior_only": lambda: adapt(group_conv(), finetune=False),
    }
    results: dict[str, Any] = {"pretrained": evaluate(pretrained, x_test, y_test, group)}
    models: dict[str, nn.Module] = {}
    for name, make in methods.items():
        t0 = time.perf_counter()
        models[name] = make()
        seconds = time.perf_counter() - t0
        results[name] = {**evaluate(models[name], x_test, y_test, group), "train_seconds": seconds}
        say(f"{NAMES[name]}: {fc.steps} steps in {seconds:.0f} s")

    say(f"\n| method | upright | C{group.order}-averaged | quarter turns | identity rate |")
    say("|---|---|---|---|---|")
    for name, r in results.items():
        rate = f"{100 * r['identity_rate']:.1f}%" if "identity_rate" in r else "-"
        label = f"pretrained (no fine-tuning, {pc.pretrain_steps} steps)" if name == "pretrained" else NAMES[name]
        say(f"| {label} | {100 * r['upright']:.2f} | {100 * r['averaged']:.2f} | {100 * r['quarter_turns']:.2f} | {rate} |")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "fashion_mnist.json").write_text(json.dumps({"config": dataclasses.asdict(s), "results": results},
                                                           indent=2) + "\n")
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


def main(argv: Sequence[str] | None = None) -> None:
    """The command line: the settings (``--help``), ``--quick``, ``--output-dir``."""
    settings = parse_settings(Settings, argv, config=CONFIG, output_dir=ROOT / "docs" / "adaptation",
                              description=__doc__)
    start = time.perf_counter()
    run(settings.values, settings.output_dir)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    raise SystemExit(run_script(main))
