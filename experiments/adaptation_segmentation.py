"""Equivariant adaptation of a pretrained segmentation network (Mondal et al., NeurIPS 2023, dense outputs).

Task (``equicanon.data.segmentation``): semantic segmentation of Fashion-MNIST items, zero-padded to
``size x size``. The label of a pixel is the item's class + 1 where the image is above ``threshold``
(after /255), else 0 (background): 11 classes. Thresholding alone is rotation-equivariant (a 1x1
convolution does it); naming the item is not, for a plain CNN trained on upright items.

1. (a) A small non-equivariant U-Net (``ec.models.UNet``) is "pretrained" on UPRIGHT training images only.
2. (b) ``ec.adapt_pretrained`` wraps it as ``h(x) ⋆ unet(h(x)⁻¹·x)`` with a ``GroupConv(C(n))``
   canonicalizer, trained with the canonicalization prior alone (the U-Net is frozen and never
   run in training); the predicted logit maps are mapped back through the pose by
   ``ec.actions.Image(C(n))`` (bilinear for 45° steps, exact index moves for multiples of 90°).
3. (c) Baseline: a copy of the U-Net fine-tuned on images rotated by random elements of C(n),
   for the same number of steps and batch size as the canonicalizer.

Each model segments the first ``test_size`` test images rotated by every element of C(n); the
ground truth of a rotated image is computed from that rotated image (threshold x class), so it
is exactly what the task asks of the image the model sees. Metrics per rotation, from the
confusion matrix summed over all pixels of all test images (``ec.data.segmentation_scores``):

- mIoU: mean over the 11 classes (background and the 10 item classes) of TP / (TP + FP + FN);
- pixel acc.: share of all pixels labelled right; fg acc.: share of item (non-background) pixels.

Averages are reported over all elements of C(n) and over the multiples of 90° only (exact moves,
no interpolation). Prints markdown tables; writes ``segmentation.json`` and ``segmentation.png``.

    python experiments/adaptation_segmentation.py                   # about 6 minutes on a 2-core CPU; docs/adaptation
    python experiments/adaptation_segmentation.py --quick           # seconds; --output-dir DIR to keep its files
    python experiments/adaptation_segmentation.py --adapt.steps 300 # any setting (configs/experiments/...)
"""

from __future__ import annotations

import copy
import json
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

import equicanon as ec
from equicanon.data import FASHION_MNIST_CLASSES, SEGMENTATION_CLASSES, load_fashion_mnist_segmentation
from equicanon.data.segmentation import confusion_matrix, segmentation_labels, segmentation_scores
from equicanon.errors import ConfigError, check_number, check_positive_int
from equicanon.settings import parse_settings, run_script
from equicanon.training import fit

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "experiments" / "adaptation_segmentation.yaml"
CLASSES = len(SEGMENTATION_CLASSES)  # background + 10 Fashion-MNIST classes
MODELS = {"unet": "(a) U-Net, upright training only",
          "canonicalized": "(b) U-Net + canonicalizer with prior (U-Net frozen)",
          "augmented": "(c) U-Net fine-tuned with rotation augmentation"}


# --- settings -----------------------------------------------------------------------------------------------

@dataclass
class DataSettings:
    """The task.

    Args:
        data_dir: Fashion-MNIST IDX files (null: $EQUICANON_DATA, then /usr/share/datasets/fashion-mnist).
        threshold: foreground: pixel / 255 > threshold (of the image being segmented, rotated or not).
        size: items zero-padded to size x size (a multiple of 4: the U-Net halves it twice).
        train_size: first training images the U-Net and the canonicalizer draw from (null: all 60000).
        test_size: first test images; each is evaluated at every rotation of the group.
    """

    data_dir: str | None
    threshold: float
    size: int
    train_size: int | None
    test_size: int


@dataclass
class UNetSettings:
    """The "pretrained" predictor, ``ec.models.UNet``, trained on upright images.

    Args:
        width: channels of the first level (then 2x, 4x).
        steps: Adam steps on random upright training images.
        batch_size: images per step.
        lr: learning rate.
    """

    width: int
    steps: int
    batch_size: int
    lr: float


@dataclass
class AdaptSettings:
    """``ec.adapt_pretrained(unet, group, output=Image(group), finetune=False, canonicalizer_args=...)``.

    Args:
        group: the canonicalizer's group, e.g. C8.
        steps: Adam steps of the prior (and of the baseline).
        batch_size: images per step (and of the baseline).
        lr: learning rate.
        prior_weight: weight of the prior.
        transform: ``group``: move each upright batch by random g and aim the prior at g (45-degree poses
            need it); null: the prior on the upright batch.
        canonicalizer: ``canonicalizer_args`` of ``adapt_pretrained``: any GroupConv argument (``hidden``,
            ``crop``, ``resize``, ``pool``, ...) over the paper's view; the rest are GroupConv's defaults.
    """

    group: str
    steps: int
    batch_size: int
    lr: float
    prior_weight: float
    transform: str | None
    canonicalizer: dict[str, Any]


@dataclass
class BaselineSettings:
    """(c): the U-Net fine-tuned on rotated images, same steps and batch size as ``adapt``.

    Args:
        enabled: train and score it.
        lr: learning rate.
    """

    enabled: bool
    lr: float


@dataclass
class FigureSettings:
    """The figure ``segmentation.png``.

    Args:
        samples: rotated test items drawn (item i turned by element i mod |G|).
    """

    samples: int


@dataclass
class Settings:
    """Settings of experiment 3.

    Args:
        seed: seeds the U-Net's weights, the batches and the group elements.
        data: the task.
        unet: the predictor.
        adapt: the canonicalizer and its training.
        baseline: the augmentation baseline.
        figure: the figure.
    """

    seed: int
    data: DataSettings
    unet: UNetSettings
    adapt: AdaptSettings
    baseline: BaselineSettings
    figure: FigureSettings

    def __post_init__(self) -> None:
        data, unet, adapt = self.data, self.unet, self.adapt
        check_positive_int(self.seed, "seed", minimum=0)
        check_number(data.threshold, "data.threshold", minimum=0.0)
        if data.threshold >= 1:
            raise ConfigError(f"data.threshold is a fraction of the pixel range [0, 1); got {data.threshold}")
        size = check_positive_int(data.size, "data.size", minimum=28)
        if size % 4:
            raise ConfigError(f"data.size must be a multiple of 4 (the U-Net halves it twice), got {size}")
        check_positive_int(data.test_size, "data.test_size")
        if data.train_size is not None:
            check_positive_int(data.train_size, "data.train_size")
        for section, part, keys in (("unet", unet, ("width", "steps", "batch_size")),
                                    ("adapt", adapt, ("steps", "batch_size"))):
            for key in keys:
                check_positive_int(getattr(part, key), f"{section}.{key}", minimum=0 if key == "steps" else 1)
        for section, lr in (("unet", unet.lr), ("adapt", adapt.lr), ("baseline", self.baseline.lr)):
            check_number(lr, f"{section}.lr", minimum=0.0, strict=True)
        check_number(adapt.prior_weight, "adapt.prior_weight", minimum=0.0)
        check_positive_int(self.figure.samples, "figure.samples")


# --- data, training and metrics -----------------------------------------------------------------------------

def rotate(group: ec.groups.FiniteGroup, elements: torch.Tensor | int, images: torch.Tensor) -> torch.Tensor:
    """``g·x`` for images ``(B, 1, H, W)``: exact for multiples of 90°, bilinear with zero padding otherwise."""
    return ec.actions.Image(group)(torch.as_tensor(elements).reshape(-1), images)


def labelled_batches(images: torch.Tensor, classes: torch.Tensor, batch_size: int, threshold: float, seed: int,
                     group: ec.groups.FiniteGroup | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless random batches ``(x (B, 1, H, W), labels (B, H, W))`` for :func:`equicanon.training.fit`.

    With ``group``, each image is first rotated by a random element (rotation augmentation); the labels
    are always those of the image the model sees, computed from it (so a 45° turn is labelled by
    thresholding the interpolated image, not by turning the label map).
    """
    gen = torch.Generator().manual_seed(seed)
    while True:
        idx = torch.randint(len(images), (batch_size,), generator=gen)
        x = images[idx]
        if group is not None:
            x = rotate(group, group.sample(batch_size, generator=gen), x)
        yield x, segmentation_labels(x, classes[idx], threshold)


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, classes: torch.Tensor, group: ec.groups.FiniteGroup,
             threshold: float, *, batch_size: int = 250) -> dict[str, Any]:
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
            conf += confusion_matrix(logits.argmax(1), segmentation_labels(x, classes[start:start + batch_size],
                                                                           threshold), CLASSES)
        row = {"degrees": 360.0 * k / group.order, **segmentation_scores(conf)}
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


def markdown_tables(results: dict[str, dict[str, Any]], group: ec.groups.FiniteGroup) -> str:
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
                  group: ec.groups.FiniteGroup, threshold: float, path: str | Path) -> Path:
    """Rotated test items (item ``i`` by element ``i mod |G|``): input, canonical form, the adapted model's mask
    (mapped back through the pose), the bare U-Net's mask, and the ground truth; saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap, to_hex

    n = len(images)
    elements = torch.arange(n) % group.order
    x = rotate(group, elements, images)
    logits, res = model(x, return_canonicalization=True)
    rows = [("input", x[:, 0], "gray"), ("canonical form", res.canonical[:, 0], "gray"),
            ("adapted: mask", logits.argmax(1), "labels"), ("bare U-Net: mask", bare(x).argmax(1), "labels"),
            ("ground truth", segmentation_labels(x, classes, threshold), "labels")]
    tab10 = plt.get_cmap("tab10")
    colours = ListedColormap(["black", *(to_hex(tab10(i)) for i in range(10))])
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
    fig.legend(handles, SEGMENTATION_CLASSES, loc="lower center", ncol=6, fontsize=6, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- the experiment -----------------------------------------------------------------------------------------

def run(s: Settings, out: Path | None, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Pretrain, adapt, fine-tune the baseline, evaluate, plot; write ``segmentation.json`` and ``.png`` to ``out``.

    Returns the JSON record (settings, timings, per-rotation and averaged metrics, markdown tables).
    """
    started = time.perf_counter()
    seed, data_cfg, unet_cfg, adapt_cfg = s.seed, s.data, s.unet, s.adapt
    threshold = float(data_cfg.threshold)
    group = cast(ec.groups.FiniteGroup, ec.groups.as_group(adapt_cfg.group, where=lambda g: g.is_finite and
                                                           g.kind == "planar", expected="C(n) or D(n)", what="adapt.group"))
    train_x, train_y = load_fashion_mnist_segmentation("train", data_cfg.size, data_cfg.train_size, data_cfg.data_dir)
    test_x, test_y = load_fashion_mnist_segmentation("test", data_cfg.size, data_cfg.test_size, data_cfg.data_dir)
    timings: dict[str, float] = {}
    torch.manual_seed(seed)
    unet = ec.models.UNet(unet_cfg.width, classes=CLASSES)
    log(f"pretraining the U-Net ({sum(p.numel() for p in unet.parameters()):,} parameters) on upright images ...")
    t0 = time.perf_counter()
    fit(unet, labelled_batches(train_x, train_y, unet_cfg.batch_size, threshold, seed), unet_cfg.steps,
        lr=unet_cfg.lr, transform=None)
    timings["pretrain_s"] = time.perf_counter() - t0
    frozen = {k: v.clone() for k, v in unet.state_dict().items()}
    log(f"  {timings['pretrain_s']:.0f} s; adapting it to {group} with the canonicalization prior ...")
    t0 = time.perf_counter()
    adapted = ec.adapt_pretrained(unet, group, in_channels=1, output=ec.actions.Image(group),
                                  canonicalizer_args=adapt_cfg.canonicalizer,
                                  data=train_x, steps=adapt_cfg.steps, finetune=False,
                                  prior_weight=adapt_cfg.prior_weight, transform=adapt_cfg.transform, lr=adapt_cfg.lr,
                                  batch_size=adapt_cfg.batch_size, seed=seed)
    timings["adapt_s"] = time.perf_counter() - t0
    log(f"  {timings['adapt_s']:.0f} s")
    if any(not torch.equal(v, unet.state_dict()[k]) for k, v in frozen.items()):
        raise RuntimeError("adapt_pretrained(finetune=False) changed the pretrained U-Net")
    models: dict[str, nn.Module] = {"unet": unet, "canonicalized": adapted}
    if s.baseline.enabled:
        log(f"baseline: fine-tuning a copy of the U-Net with {group} rotation augmentation ...")
        augmented = copy.deepcopy(unet)
        t0 = time.perf_counter()
        fit(augmented, labelled_batches(train_x, train_y, adapt_cfg.batch_size, threshold, seed + 1, group),
            adapt_cfg.steps, lr=s.baseline.lr, transform=None)
        timings["baseline_s"] = time.perf_counter() - t0
        models["augmented"] = augmented
        log(f"  {timings['baseline_s']:.0f} s")
    results: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    for key, model in models.items():
        log(f"evaluating {MODELS[key]} on {len(test_x)} test images x {group.order} rotations ...")
        result = evaluate(model, test_x, test_y, group, threshold)
        result["summary"] = summarize(result)
        results[key] = result
    timings["evaluate_s"] = time.perf_counter() - t0
    figure = None
    if out is not None:
        samples = min(s.figure.samples, len(test_x))
        figure = plot_examples(adapted, unet, test_x[:samples], test_y[:samples], group, threshold,
                               out / "segmentation.png")
    tables = markdown_tables(results, group)
    timings["total_s"] = time.perf_counter() - started
    record = {
        "task": "Fashion-MNIST semantic segmentation (11 classes: background + item class), "
                f"{data_cfg.size}x{data_cfg.size}, foreground = pixel/255 > {threshold}",
        "metrics": "per rotation, from the confusion matrix over all test pixels: mIoU = mean over classes of "
                   "TP/(TP+FP+FN); pixel_acc over all pixels; fg_acc over item pixels; pose_acc = share of poses "
                   "equal to the rotation; *_all averages all group elements, *_90 the multiples of 90 degrees",
        "group": str(group), "config": asdict(s), "models": {k: MODELS[k] for k in results},
        "parameters": {"unet": sum(p.numel() for p in unet.parameters()),
                       "canonicalizer": sum(p.numel() for p in adapted.canonicalizer.parameters())},
        "results": results, "timings_s": timings, "figure": None if figure is None else str(figure), "table": tables,
        "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
                        "python": platform.python_version()},
    }
    if out is not None:
        (out / "segmentation.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The command line: the settings (``--help``), ``--quick``, ``--output-dir``; prints the tables."""
    settings = parse_settings(Settings, argv, config=CONFIG, output_dir=ROOT / "docs" / "adaptation",
                              description=__doc__)
    s, out = settings.values, settings.output_dir
    record = run(s, out)
    print()
    print(f"{record['task']}; {s.data.test_size} test images, each rotated by every element of "
          f"{record['group']}. U-Net {record['parameters']['unet']:,} parameters, canonicalizer "
          f"{record['parameters']['canonicalizer']:,}; {s.unet.steps} pretraining steps (upright), "
          f"{s.adapt.steps} canonicalizer / baseline steps.")
    print()
    print(record["table"])
    print()
    t = record["timings_s"]
    print("time: " + ", ".join(f"{k.removesuffix('_s')} {v:.0f} s" for k, v in t.items())
          + f" (torch {torch.__version__}, {torch.get_num_threads()} threads)")
    if out is not None:
        print(f"wrote {out / 'segmentation.json'} and {record['figure']}")
    return record


if __name__ == "__main__":
    raise SystemExit(run_script(main))
