"""``equicanon demo``: vanilla vs rotation augmentation vs learned canonicalization on Fashion-MNIST.

Three copies of one small CNN get the same number of optimisation steps (batch 128):

- **vanilla** — trained on upright images;
- **augmented** — trained on images rotated by uniform random angles (the usual baseline);
- **canonicalized** — ``Canonicalized(cnn, GroupConv(C(8)))``. The first
  ``canonicalizer_share`` of its steps train the canonicalizer with the prior on rotated
  copies: an upright image rotated by ``θ`` must get the pose of ``C(8)`` nearest to ``θ``
  (the prior of Mondal et al. moved by the group: for exactly equivariant elements it *is*
  the prior, and for 45° elements it also teaches the interpolated equivariance). The rest
  train the CNN, with the canonicalizer frozen, on the canonical forms of randomly rotated
  training images — what it will see at test time, residual rotation of at most ±22.5°
  included.

All three are evaluated on upright test images and on the same images rotated by uniformly
random angles in [0°, 360°). Nothing is downloaded: Fashion-MNIST is read from local files.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .actions.functional import rotate_image
from .adapt import Canonicalized
from .canonicalizers import create
from .data import FASHION_MNIST_CLASSES, load_fashion_mnist
from .groups import SO2, C
from .models import SmallCNN
from .training.step import fit

__all__ = ["DemoConfig", "run_demo"]


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo; the defaults finish in about 4 minutes on 2 CPU cores."""

    train_images: int = 20000
    test_images: int = 2000
    steps: int = 800
    batch: int = 128
    lr: float = 3e-3
    rotations: int = 8
    canonicalizer_share: float = 0.4
    seed: int = 0


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """Per-image correctness ``(N,)`` bool, in eval mode."""
    model.eval()
    with torch.inference_mode():
        pred = torch.cat([model(x[i:i + batch]).argmax(dim=1) for i in range(0, len(x), batch)])
    return pred == y


def _train(model: nn.Module, data: Any, steps: int, cfg: DemoConfig, name: str, verbose: bool,
           generator: torch.Generator, **options: Any) -> float:
    """:func:`equicanon.training.fit` with Adam and a one-cycle schedule; returns the wall time in seconds."""
    every = max(1, steps // 10)

    def progress(i: int, log: dict[str, float]) -> None:
        if verbose and (i + 1) % every == 0:
            print(f"\r  {name}: step {i + 1}/{steps}, loss {log['loss']:.3f}", end="", flush=True)

    start = time.perf_counter()
    fit(model, data, steps, lr=cfg.lr, lr_schedule="onecycle", batch_size=cfg.batch, generator=generator,
        callback=progress, **options)
    if verbose:
        print()
    return time.perf_counter() - start


def run_demo(out: str | Path = "equicanon-demo", config: DemoConfig | None = None, *,
             data_dir: str | None = None, plots: bool = True, verbose: bool = True) -> dict[str, dict[str, float]]:
    """Train and evaluate the three models; write ``out/metrics.json`` (and PNG plots).

    Returns:
        ``{"vanilla": {"upright": acc, "rotated": acc, "train_seconds": s}, "augmented": …,
        "canonicalized": …}`` with accuracies in 0..1.
    """
    cfg = config or DemoConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    say = print if verbose else (lambda *a, **k: None)

    x_train, y_train = load_fashion_mnist("train", data_dir)
    x_test, y_test = load_fashion_mnist("test", data_dir)
    x_train = x_train[: cfg.train_images, None].float() / 255
    y_train = y_train[: cfg.train_images]
    x_test = x_test[: cfg.test_images, None].float() / 255
    y_test = y_test[: cfg.test_images]
    test_angles = torch.rand(len(x_test), generator=gen) * 360
    x_test_rot = rotate_image(x_test, SO2().from_angle(test_angles, degrees=True))
    say(f"Fashion-MNIST: {len(x_train)} training images, {len(x_test)} test images; "
        f"{cfg.steps} steps of batch {cfg.batch} per model; torch {torch.__version__}, {torch.get_num_threads()} threads")

    labelled = (x_train, y_train)

    def rotate(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The augmentation: uniform random angles in [-180°, 180°)."""
        degrees = (torch.rand(x.shape[0], generator=generator) - 0.5) * 360
        return rotate_image(x, SO2().from_angle(degrees, degrees=True))

    results: dict[str, dict[str, float]] = {}
    models: dict[str, nn.Module] = {}

    vanilla = SmallCNN()
    seconds = _train(vanilla, labelled, cfg.steps, cfg, "vanilla", verbose, gen)
    models["vanilla"], results["vanilla"] = vanilla, {"train_seconds": seconds}

    augmented = SmallCNN()
    seconds = _train(augmented, labelled, cfg.steps, cfg, "augmented", verbose, gen, augment=rotate)
    models["augmented"], results["augmented"] = augmented, {"train_seconds": seconds}

    # The canonicalizer with the library's default network, looking at the image shrunk to 16 pixels; trained
    # with the prior on upright images turned by continuous angles, aimed at the nearest C(8) element.
    canonicalizer = create("group_conv", group=C(cfg.rotations), in_channels=1, resize=16)
    canon_steps = round(cfg.steps * cfg.canonicalizer_share)
    seconds = _train(canonicalizer, x_train, canon_steps, cfg, "canonicalizer (prior)", verbose, gen,
                     prior_weight=1.0, transform="angle")
    canonicalizer.requires_grad_(False)
    # Then the CNN on canonical forms of randomly rotated images (the canonicalizer frozen, in eval mode).
    predictor = SmallCNN()
    model = Canonicalized(predictor, canonicalizer)
    seconds += _train(model, labelled, cfg.steps - canon_steps, cfg, "canonicalized CNN", verbose, gen,
                      augment=rotate, transform=None)
    models["canonicalized"] = model
    results["canonicalized"] = {"train_seconds": seconds}

    correct: dict[str, torch.Tensor] = {}
    for name, net in models.items():
        results[name]["upright"] = float(_accuracy(net, x_test, y_test).float().mean())
        correct[name] = _accuracy(net, x_test_rot, y_test)
        results[name]["rotated"] = float(correct[name].float().mean())

    say("\n| model | upright accuracy | rotated accuracy (random angles) | training time |")
    say("|---|---|---|---|")
    for name, r in results.items():
        say(f"| {name} | {100 * r['upright']:.1f}% | {100 * r['rotated']:.1f}% | {r['train_seconds']:.0f} s |")
    (out / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    say(f"\nwrote {out / 'metrics.json'}")
    if plots:
        _plots(out, model, x_test_rot, y_test, test_angles, correct, say)
    return results


def _plots(out: Path, model: Canonicalized, x_rot: torch.Tensor, y: torch.Tensor, angles: torch.Tensor,
           correct: dict[str, torch.Tensor], say: Callable[[str], object]) -> None:
    from .plots import plot_canonical_forms, plot_metric_by_angle

    model.eval()
    with torch.inference_mode():
        res = model.canonicalizer(x_rot[:8])
    titles = [f"{FASHION_MNIST_CLASSES[int(y[i])]}, {angles[i]:.0f}°" for i in range(8)]
    plot_canonical_forms(x_rot[:8], res.canonical, out / "canonical_forms.png", titles=titles,
                         title="Rotated test images (top) and their canonical forms (bottom)")
    bins = torch.linspace(0, 360, 25)
    centres = (bins[:-1] + bins[1:]) / 2
    which = torch.bucketize(angles, bins[1:-1])
    scores = {name: [float(ok[which == b].float().mean()) if (which == b).any() else math.nan for b in range(len(centres))]
              for name, ok in correct.items()}
    plot_metric_by_angle(centres, scores, out / "accuracy_by_angle.png",
                         title="Fashion-MNIST test accuracy against rotation angle")
    say(f"wrote {out / 'canonical_forms.png'} and {out / 'accuracy_by_angle.png'}")
