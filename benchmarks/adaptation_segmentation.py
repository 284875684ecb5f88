"""Equivariant adaptation of a pretrained segmentation network (Mondal et al., NeurIPS 2023, dense outputs).

Task: semantic segmentation of Fashion-MNIST items, zero-padded to ``size x size``. The label of a
pixel is the item's class + 1 where the image is above ``threshold`` (after /255), else 0
(background): 11 classes. Thresholding alone is rotation-equivariant (a 1x1 convolution does it);
naming the item is not, for a plain CNN trained on upright items.

1. (a) A small non-equivariant U-Net is "pretrained" on UPRIGHT training images only.
2. (b) ``ec.adapt_pretrained`` wraps it as ``h(x) ⋆ unet(h(x)⁻¹·x)`` with a ``GroupConv(C(n))``
   canonicalizer, trained with the canonicalization prior alone (the U-Net is frozen and never
   run in training); the predicted logit maps are mapped back through the pose by
   ``ec.actions.Image(C(n))`` (bilinear for 45° steps, exact index moves for multiples of 90°).
3. (c) Baseline: a copy of the U-Net fine-tuned on images rotated by random elements of C(n),
   for the same number of steps and batch size as the canonicalizer.

Each model segments the first ``test_size`` test images rotated by every element of C(n); the
ground truth of a rotated image is computed from that rotated image (threshold x class), so it
is exactly what the task asks of the image the model sees. Metrics per rotation, from the
confusion matrix summed over all pixels of all test images:

- mIoU: mean over the 11 classes (background and the 10 item classes) of TP / (TP + FP + FN);
- pixel acc.: share of all pixels labelled right; fg acc.: share of item (non-background) pixels.

Averages are reported over all elements of C(n) and over the multiples of 90° only (exact moves,
no interpolation). Writes ``segmentation.json`` and ``segmentation.png`` to ``--out`` and prints
markdown tables. Settings: configs/adaptation/segmentation.yaml (flags override them).

Run: python benchmarks/adaptation_segmentation.py            (about 6 minutes on a 2-core CPU)
     python benchmarks/adaptation_segmentation.py --quick    (seconds; writes to out/ unless --out)
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import nn

import equicanon as ec
from equicanon.data import load_fashion_mnist
from equicanon.data.mnist import FASHION_MNIST_CLASSES, DataNotFoundError
from equicanon.errors import ConfigError, check_number, check_positive_int, check_shape
from equicanon.groups import PlanarFiniteGroup

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _config import merge, read_settings  # noqa: E402

CONFIG = ROOT / "configs" / "adaptation" / "segmentation.yaml"
CLASSES = 11  # background + 10 Fashion-MNIST classes
LABEL_NAMES = ("background", *FASHION_MNIST_CLASSES)
MODELS = {"unet": "(a) U-Net, upright training only",
          "canonicalized": "(b) U-Net + canonicalizer with prior (U-Net frozen)",
          "augmented": "(c) U-Net fine-tuned with rotation augmentation"}


# --- configuration ------------------------------------------------------------------------------------------

def parse_assignment(text: str) -> dict[str, Any]:
    """``"adapt.steps=300"`` as the nested mapping ``{"adapt": {"steps": 300}}`` (the value is read as YAML)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects section.key=value, got {text!r}")
    out: dict[str, Any] = {}
    node = out
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = yaml.safe_load(value)
    return out


def load_config(path: str | Path = CONFIG, *, quick: bool = False, overrides: Sequence[dict[str, Any]] = ()
                ) -> dict[str, Any]:
    """The experiment's settings: the YAML file, then its ``quick`` section (with ``quick``), then ``overrides``."""
    config = read_settings(path, quick=quick)
    for update in overrides:
        config = merge(config, update)
    check_config(config)
    return config


def check_config(config: dict[str, Any]) -> None:
    """Raise ConfigError for a setting of the wrong kind."""
    data, unet, adapt = config["data"], config["unet"], config["adapt"]
    check_positive_int(config["seed"], "seed", minimum=0)
    check_number(data["threshold"], "data.threshold", minimum=0.0)
    if data["threshold"] >= 1:
        raise ConfigError(f"data.threshold is a fraction of the pixel range [0, 1); got {data['threshold']}")
    size = check_positive_int(data["size"], "data.size", minimum=28)
    if size % 4:
        raise ConfigError(f"data.size must be a multiple of 4 (the U-Net halves it twice), got {size}")
    check_positive_int(data["test_size"], "data.test_size")
    if data["train_size"] is not None:
        check_positive_int(data["train_size"], "data.train_size")
    for section, keys in (("unet", ("width", "steps", "batch_size")),
                          ("adapt", ("group", "steps", "batch_size", "hidden", "layers", "kernel_size"))):
        for key in keys:
            check_positive_int(config[section][key], f"{section}.{key}", minimum=0 if key == "steps" else 1)
    for section, part in (("unet", unet), ("adapt", adapt), ("baseline", config["baseline"])):
        check_number(part["lr"], f"{section}.lr", minimum=0.0, strict=True)
    check_number(adapt["prior_weight"], "adapt.prior_weight", minimum=0.0)
    check_positive_int(config["figure"]["samples"], "figure.samples")


# --- data ---------------------------------------------------------------------------------------------------

def pad_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 items ``(N, 28, 28)`` as float images ``(N, 1, size, size)`` in [0, 1], zero-padded evenly."""
    check_shape(images, "N H W", name="images")
    h, w = images.shape[-2:]
    if size < max(h, w) or (size - h) % 2 or (size - w) % 2:
        raise ConfigError(f"cannot pad {h}x{w} images evenly to {size}x{size}")
    top, left = (size - h) // 2, (size - w) // 2
    return F.pad(images.float()[:, None] / 255.0, (left, size - w - left, top, size - h - top))


def segmentation_labels(images: torch.Tensor, classes: torch.Tensor, threshold: float) -> torch.Tensor:
    """Per-pixel labels ``(B, H, W)`` int64 of images ``(B, 1, H, W)``: ``class + 1`` above ``threshold``, else 0."""
    check_shape(images, "B 1 H W", name="images")
    check_shape(classes, "B", name="classes", B=images.shape[0])
    return torch.where(images[:, 0] > threshold, classes[:, None, None] + 1, 0)


def rotate(group: PlanarFiniteGroup, elements: torch.Tensor | int, images: torch.Tensor) -> torch.Tensor:
    """``g·x`` for images ``(B, 1, H, W)``: exact for multiples of 90°, bilinear with zero padding otherwise."""
    return ec.actions.Image(group)(torch.as_tensor(elements).reshape(-1), images)


# --- the predictor ------------------------------------------------------------------------------------------

def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class UNet(nn.Module):
    """A plain (non-equivariant) U-Net: images ``(B, 1, H, W)`` to logits ``(B, classes, H, W)``, ``H, W`` divisible by 4.

    Two 2x2 max-pool levels (``width``, ``2 width``, ``4 width`` channels), transposed-convolution
    upsampling and skip connections; 66k parameters at ``width=12``.
    """

    def __init__(self, width: int = 16, classes: int = CLASSES) -> None:
        super().__init__()
        w = check_positive_int(width, "width")
        self.enc1, self.enc2, self.bottom = _block(1, w), _block(w, 2 * w), _block(2 * w, 4 * w)
        self.up2, self.dec2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2), _block(4 * w, 2 * w)
        self.up1, self.dec1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2), _block(2 * w, w)
        self.head = nn.Conv2d(w, check_positive_int(classes, "classes"), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, classes, H, W)`` of images ``x: (B, 1, H, W)``."""
        sizes = check_shape(x, "B 1 H W")
        if sizes["H"] % 4 or sizes["W"] % 4:
            raise ConfigError(f"UNet needs heights and widths divisible by 4, got {sizes['H']}x{sizes['W']}")
        a = self.enc1(x)
        b = self.enc2(F.max_pool2d(a, 2))
        c = self.bottom(F.max_pool2d(b, 2))
        d = self.dec2(torch.cat([self.up2(c), b], dim=1))
        return self.head(self.dec1(torch.cat([self.up1(d), a], dim=1)))


def train_segmenter(model: nn.Module, images: torch.Tensor, classes: torch.Tensor, *, steps: int, batch_size: int,
                    lr: float, threshold: float, seed: int, group: PlanarFiniteGroup | None = None) -> float:
    """Train ``model`` in place with per-pixel cross-entropy on random batches of ``images (N, 1, H, W)``.

    With ``group``, each image is first rotated by a random element (rotation augmentation); the
    labels are always those of the image the model sees. Returns the training time in seconds.
    """
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    start = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(len(images), (batch_size,), generator=gen)
        x = images[idx]
        if group is not None:
            x = rotate(group, group.sample(batch_size, generator=gen), x)
        loss = F.cross_entropy(model(x), segmentation_labels(x, classes[idx], threshold))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    return time.perf_counter() - start


# --- metrics ------------------------------------------------------------------------------------------------

def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, classes: int = CLASSES) -> torch.Tensor:
    """Counts ``(classes, classes)`` int64: entry ``[t, p]`` = pixels of true label ``t`` predicted ``p``."""
    if pred.shape != target.shape:
        raise ConfigError(f"predicted labels {tuple(pred.shape)} and targets {tuple(target.shape)} differ in shape")
    flat = target.reshape(-1).long() * classes + pred.reshape(-1).long()
    return torch.bincount(flat, minlength=classes * classes).reshape(classes, classes)


def scores(confusion: torch.Tensor) -> dict[str, float]:
    """mIoU (mean over classes present in target or prediction), pixel accuracy and foreground accuracy."""
    c = confusion.double()
    tp = c.diag()
    union = c.sum(0) + c.sum(1) - tp
    present = union > 0
    fg_total = c[1:].sum()
    return {"miou": float((tp[present] / union[present]).mean()) if bool(present.any()) else float("nan"),
            "pixel_acc": float(tp.sum() / c.sum()),
            "fg_acc": float(tp[1:].sum() / fg_total) if fg_total > 0 else float("nan")}


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, classes: torch.Tensor, group: PlanarFiniteGroup, threshold: float,
             *, batch_size: int = 250) -> dict[str, Any]:
    """Scores of ``model`` on ``images (N, 1, H, W)`` rotated by each element of ``group``.

    Returns ``{"per_element": [{"degrees", "miou", "pixel_acc", "fg_acc"[, "pose_acc"]}, ...]}``;
    ``pose_acc`` (share of rotated images whose pose is the rotation) for canonicalized models.
    """
    model.eval()
    rows = []
    for k in range(group.order):
        conf = torch.zeros(CLASSES, CLASSES, dtype=torch.long)
        poses_right = 0
        for start in range(0, len(images), batch_size):
            x = rotate(group, k, images[start:start + batch_size])
            if isinstance(model, ec.Canonicalized):
                logits, res = model(x, return_canonicalization=True)
                poses_right += int((res.pose == k).sum())
            else:
                logits = model(x)
            conf += confusion_matrix(logits.argmax(1), segmentation_labels(x, classes[start:start + batch_size], threshold))
        row = {"degrees": 360.0 * k / group.order, **scores(conf)}
        if isinstance(model, ec.Canonicalized):
            row["pose_acc"] = poses_right / len(images)
        rows.append(row)
    return {"per_element": rows}


def summarize(result: dict[str, Any]) -> dict[str, float]:
    """Upright, all-elements and multiples-of-90° averages of each metric in ``result["per_element"]``."""
    rows = result["per_element"]
    quarter = [r for r in rows if r["degrees"] % 90 == 0]
    out: dict[str, float] = {}
    for metric in [m for m in rows[0] if m != "degrees"]:
        out[f"{metric}_upright"] = rows[0][metric]
        out[f"{metric}_all"] = sum(r[metric] for r in rows) / len(rows)
        out[f"{metric}_90"] = sum(r[metric] for r in quarter) / len(quarter)
    return out


def markdown_tables(results: dict[str, dict[str, Any]], group: PlanarFiniteGroup) -> str:
    """Summary table (upright / all of ``group`` / multiples of 90°) and an mIoU-by-angle table, in markdown."""
    n = group.order
    lines = [f"| model | mIoU upright | mIoU {group} avg | mIoU 90° avg | pixel acc. upright | pixel acc. {group} avg "
             f"| pixel acc. 90° avg | fg acc. {group} avg | pose acc. {group} avg |",
             "|---|" + "---:|" * 8]
    for key, result in results.items():
        s = result["summary"]
        pose = f"{100 * s['pose_acc_all']:.1f}%" if "pose_acc_all" in s else "–"
        lines.append(f"| {MODELS[key]} | {100 * s['miou_upright']:.1f} | **{100 * s['miou_all']:.1f}** "
                     f"| {100 * s['miou_90']:.1f} | {100 * s['pixel_acc_upright']:.1f}% | {100 * s['pixel_acc_all']:.1f}% "
                     f"| {100 * s['pixel_acc_90']:.1f}% | {100 * s['fg_acc_all']:.1f}% | {pose} |")
    angles = [f"{360 * k / n:g}°" for k in range(n)]
    lines += ["", "mIoU (%) by rotation of the test images:", "",
              "| model | " + " | ".join(angles) + " |", "|---|" + "---:|" * n]
    for key, result in results.items():
        lines.append(f"| {MODELS[key]} | " + " | ".join(f"{100 * r['miou']:.1f}" for r in result["per_element"]) + " |")
    return "\n".join(lines)


# --- figure -------------------------------------------------------------------------------------------------

@torch.no_grad()
def plot_examples(model: ec.Canonicalized, bare: nn.Module, images: torch.Tensor, classes: torch.Tensor,
                  group: PlanarFiniteGroup, threshold: float, path: str | Path) -> Path:
    """Rotated test items (item ``i`` by element ``i mod |G|``): input, canonical form, the adapted model's mask
    (mapped back through the pose), the bare U-Net's mask, and the ground truth; saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    n = len(images)
    elements = torch.arange(n) % group.order
    x = rotate(group, elements, images)
    logits, res = model(x, return_canonicalization=True)
    rows = [("input", x[:, 0], "gray"), ("canonical form", res.canonical[:, 0], "gray"),
            ("adapted: mask", logits.argmax(1), "labels"), ("bare U-Net: mask", bare(x).argmax(1), "labels"),
            ("ground truth", segmentation_labels(x, classes, threshold), "labels")]
    colours = ListedColormap(["black", *plt.get_cmap("tab10").colors])
    fig, axes = plt.subplots(len(rows), n, figsize=(1.45 * n + 0.9, 1.5 * len(rows) + 0.6), squeeze=False)
    for r, (name, data, kind) in enumerate(rows):
        for i in range(n):
            ax = axes[r][i]
            if kind == "gray":
                ax.imshow(data[i].numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(data[i].numpy(), cmap=colours, vmin=-0.5, vmax=CLASSES - 0.5, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                degrees = 360 * int(elements[i]) / group.order
                pose = 360 * int(res.pose[i]) / group.order
                ax.set_title(f"{FASHION_MNIST_CLASSES[int(classes[i])]}\n{degrees:g}°, pose {pose:g}°", fontsize=7)
            if i == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.suptitle(f"Segmentation of rotated test items: U-Net + {group} canonicalizer (prior only)", fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours(c)) for c in range(CLASSES)]
    fig.legend(handles, LABEL_NAMES, loc="lower center", ncol=6, fontsize=6, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- the experiment -----------------------------------------------------------------------------------------

def load_data(config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Padded upright train/test images ``(N, 1, S, S)`` and classes ``(N,)``: the first ``train_size`` / ``test_size``."""
    data = config["data"]
    train_x, train_y = load_fashion_mnist("train", data["data_dir"])
    test_x, test_y = load_fashion_mnist("test", data["data_dir"])
    n, m = data["test_size"], data["train_size"] or len(train_x)
    return {"train_x": pad_images(train_x[:m], data["size"]), "train_y": train_y[:m],
            "test_x": pad_images(test_x[:n], data["size"]), "test_y": test_y[:n]}


def run(config: dict[str, Any], out: str | Path, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Pretrain, adapt, fine-tune the baseline, evaluate, plot; write ``segmentation.json`` and ``.png`` to ``out``.

    Returns the JSON record (settings, timings, per-rotation and averaged metrics, markdown tables).
    """
    started = time.perf_counter()
    seed, data_cfg, unet_cfg, adapt_cfg = config["seed"], config["data"], config["unet"], config["adapt"]
    threshold = float(data_cfg["threshold"])
    group = ec.C(adapt_cfg["group"])
    data = load_data(config)
    timings: dict[str, float] = {}
    torch.manual_seed(seed)
    unet = UNet(unet_cfg["width"])
    log(f"pretraining the U-Net ({sum(p.numel() for p in unet.parameters()):,} parameters) on upright images ...")
    timings["pretrain_s"] = train_segmenter(unet, data["train_x"], data["train_y"], steps=unet_cfg["steps"],
                                            batch_size=unet_cfg["batch_size"], lr=unet_cfg["lr"], threshold=threshold,
                                            seed=seed)
    frozen = {k: v.clone() for k, v in unet.state_dict().items()}
    log(f"  {timings['pretrain_s']:.0f} s; adapting it to {group} with the canonicalization prior ...")
    t0 = time.perf_counter()
    adapted = ec.adapt_pretrained(unet, group, in_channels=1, output=ec.actions.Image(group), data=data["train_x"],
                                  steps=adapt_cfg["steps"], finetune=False, crop=adapt_cfg["crop"],
                                  resize=adapt_cfg["resize"], hidden=adapt_cfg["hidden"], layers=adapt_cfg["layers"],
                                  kernel_size=adapt_cfg["kernel_size"], pool=adapt_cfg["pool"],
                                  prior_weight=adapt_cfg["prior_weight"],
                                  transform_inputs=adapt_cfg["transform_inputs"], lr=adapt_cfg["lr"],
                                  batch_size=adapt_cfg["batch_size"], seed=seed)
    timings["adapt_s"] = time.perf_counter() - t0
    log(f"  {timings['adapt_s']:.0f} s")
    if any(not torch.equal(v, unet.state_dict()[k]) for k, v in frozen.items()):
        raise RuntimeError("adapt_pretrained(finetune=False) changed the pretrained U-Net")
    models: dict[str, nn.Module] = {"unet": unet, "canonicalized": adapted}
    if config["baseline"]["enabled"]:
        log(f"baseline: fine-tuning a copy of the U-Net with {group} rotation augmentation ...")
        augmented = copy.deepcopy(unet)
        timings["baseline_s"] = train_segmenter(augmented, data["train_x"], data["train_y"], steps=adapt_cfg["steps"],
                                                batch_size=adapt_cfg["batch_size"], lr=config["baseline"]["lr"],
                                                threshold=threshold, seed=seed + 1, group=group)
        models["augmented"] = augmented
        log(f"  {timings['baseline_s']:.0f} s")
    results: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    for key, model in models.items():
        log(f"evaluating {MODELS[key]} on {len(data['test_x'])} test images x {group.order} rotations ...")
        result = evaluate(model, data["test_x"], data["test_y"], group, threshold)
        result["summary"] = summarize(result)
        results[key] = result
    timings["evaluate_s"] = time.perf_counter() - t0
    out = Path(out)
    samples = min(config["figure"]["samples"], len(data["test_x"]))
    figure = plot_examples(adapted, unet, data["test_x"][:samples], data["test_y"][:samples], group, threshold,
                           out / "segmentation.png")
    tables = markdown_tables(results, group)
    timings["total_s"] = time.perf_counter() - started
    record = {
        "task": "Fashion-MNIST semantic segmentation (11 classes: background + item class), "
                f"{data_cfg['size']}x{data_cfg['size']}, foreground = pixel/255 > {threshold}",
        "metrics": "per rotation, from the confusion matrix over all test pixels: mIoU = mean over classes of "
                   "TP/(TP+FP+FN); pixel_acc over all pixels; fg_acc over item pixels; pose_acc = share of poses "
                   "equal to the rotation; *_all averages all group elements, *_90 the multiples of 90 degrees",
        "group": str(group), "config": config, "models": {k: MODELS[k] for k in results},
        "parameters": {"unet": sum(p.numel() for p in unet.parameters()),
                       "canonicalizer": sum(p.numel() for p in adapted.canonicalizer.parameters())},
        "results": results, "timings_s": timings, "figure": str(figure), "table": tables,
        "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
                        "python": platform.python_version()},
    }
    (out / "segmentation.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(CONFIG), help="YAML settings (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="tiny settings (the config's quick section): seconds")
    parser.add_argument("--out", default=None,
                        help="folder for segmentation.json/.png (default: docs/adaptation; out/adaptation_quick with --quick)")
    parser.add_argument("--data-dir", default=None, help="Fashion-MNIST folder (overrides data.data_dir)")
    parser.add_argument("--group", type=int, default=None, help="n of C(n) (overrides adapt.group)")
    parser.add_argument("--steps", type=int, default=None, help="canonicalizer (and baseline) steps (adapt.steps)")
    parser.add_argument("--seed", type=int, default=None, help="seed (overrides seed)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any setting, e.g. --set unet.steps=300 (repeatable; values read as YAML)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the experiment from the command line; print the tables; 0 on success, 2 on missing data or bad settings."""
    args = build_parser().parse_args(argv)
    overrides = [parse_assignment(s) for s in args.set]
    for key, value in (("data.data_dir", args.data_dir), ("adapt.group", args.group), ("adapt.steps", args.steps),
                       ("seed", args.seed)):
        if value is not None:
            overrides.append(parse_assignment(f"{key}={json.dumps(value)}"))
    out = args.out or str(ROOT / ("out/adaptation_quick" if args.quick else "docs/adaptation"))
    try:
        config = load_config(args.config, quick=args.quick, overrides=overrides)
        record = run(config, out)
    except (DataNotFoundError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print()
    print(f"{record['task']}; {config['data']['test_size']} test images, each rotated by every element of "
          f"{record['group']}. U-Net {record['parameters']['unet']:,} parameters, canonicalizer "
          f"{record['parameters']['canonicalizer']:,}; {config['unet']['steps']} pretraining steps (upright), "
          f"{config['adapt']['steps']} canonicalizer / baseline steps.")
    print()
    print(record["table"])
    print()
    t = record["timings_s"]
    print("time: " + ", ".join(f"{k.removesuffix('_s')} {v:.0f} s" for k, v in t.items())
          + f" (torch {torch.__version__}, {torch.get_num_threads()} threads)")
    print(f"wrote {Path(out) / 'segmentation.json'} and {record['figure']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
