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
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .actions.functional import rotate_image
from .adapt import Canonicalized
from .canonicalizers import GroupConv
from .data import FASHION_MNIST_CLASSES, load_fashion_mnist
from .groups import SO2, C

__all__ = ["DemoConfig", "small_cnn", "run_demo"]


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


def small_cnn(classes: int = 10, in_channels: int = 1, width: int = 32, batch_norm: bool = True) -> nn.Sequential:
    """The CNN all three demo models share (and the training configs' predictor): three 3x3 conv
    blocks with batch norm, global average pooling and a linear layer. ``(B, C, H, W) → (B, classes)``.

    ``batch_norm=False`` leaves the normalisation out (e.g. DDP on CPU, where ``SyncBatchNorm`` is unavailable).
    """
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout) if batch_norm else nn.Identity(), nn.ReLU()]

    return nn.Sequential(
        *block(in_channels, width), nn.MaxPool2d(2), *block(width, 2 * width), nn.MaxPool2d(2),
        *block(2 * width, 2 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, classes),
    )


def _rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    return rotate_image(x, SO2().from_angle(degrees, degrees=True))


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """Per-image correctness ``(N,)`` bool, in eval mode."""
    model.eval()
    with torch.inference_mode():
        pred = torch.cat([model(x[i:i + batch]).argmax(dim=1) for i in range(0, len(x), batch)])
    return pred == y


def _fit(model: nn.Module, steps: int, batch_fn, loss_fn, lr: float, progress: str) -> float:
    """``steps`` Adam steps of ``loss_fn(model, *batch_fn())`` with a cosine learning-rate decay;
    returns the wall time in seconds."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        loss = loss_fn(model, *batch_fn())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        if progress and (step + 1) % max(1, steps // 10) == 0:
            print(f"\r  {progress}: step {step + 1}/{steps}, loss {float(loss.detach()):.3f}", end="", flush=True)
    if progress:
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
    x_test_rot = _rotate(x_test, test_angles)
    say(f"Fashion-MNIST: {len(x_train)} training images, {len(x_test)} test images; "
        f"{cfg.steps} steps of batch {cfg.batch} per model; torch {torch.__version__}, {torch.get_num_threads()} threads")

    def batch(rotate: float | None) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(x_train), (cfg.batch,), generator=gen)
        x = x_train[idx]
        if rotate is not None:
            x = _rotate(x, (torch.rand(cfg.batch, generator=gen) - 0.5) * 2 * rotate)
        return x, y_train[idx]

    def classify(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x), y)

    results: dict[str, dict[str, float]] = {}
    models: dict[str, nn.Module] = {}
    half_turn = 180.0

    vanilla = small_cnn()
    seconds = _fit(vanilla, cfg.steps, lambda: batch(None), classify, cfg.lr, "vanilla" if verbose else "")
    models["vanilla"], results["vanilla"] = vanilla, {"train_seconds": seconds}

    augmented = small_cnn()
    seconds = _fit(augmented, cfg.steps, lambda: batch(half_turn), classify, cfg.lr, "augmented" if verbose else "")
    models["augmented"], results["augmented"] = augmented, {"train_seconds": seconds}

    group = C(cfg.rotations)
    canonicalizer = GroupConv(group, in_channels=1, hidden=8, layers=3, kernel_size=5, resize=16)
    step_angle = 360.0 / cfg.rotations

    def rotated_pose_batch() -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(x_train), (cfg.batch,), generator=gen)
        theta = torch.rand(cfg.batch, generator=gen) * 360
        target = torch.round(theta / step_angle).long() % cfg.rotations
        return _rotate(x_train[idx], theta), target

    def pose_prior(canon: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(canon.logits(x), target)

    canon_steps = round(cfg.steps * cfg.canonicalizer_share)
    seconds = _fit(canonicalizer, canon_steps, rotated_pose_batch, pose_prior, cfg.lr,
                   "canonicalizer (prior)" if verbose else "")
    canonicalizer.eval().requires_grad_(False)

    def canonical_batch() -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch(half_turn)
        with torch.no_grad():
            return canonicalizer(x).canonical, y

    predictor = small_cnn()
    seconds += _fit(predictor, cfg.steps - canon_steps, canonical_batch, classify, cfg.lr,
                    "canonicalized CNN" if verbose else "")
    models["canonicalized"] = Canonicalized(predictor, canonicalizer)
    results["canonicalized"] = {"train_seconds": seconds}

    correct: dict[str, torch.Tensor] = {}
    for name, model in models.items():
        results[name]["upright"] = float(_accuracy(model, x_test, y_test).float().mean())
        correct[name] = _accuracy(model, x_test_rot, y_test)
        results[name]["rotated"] = float(correct[name].float().mean())

    say("\n| model | upright accuracy | rotated accuracy (random angles) | training time |")
    say("|---|---|---|---|")
    for name, r in results.items():
        say(f"| {name} | {100 * r['upright']:.1f}% | {100 * r['rotated']:.1f}% | {r['train_seconds']:.0f} s |")
    (out / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    say(f"\nwrote {out / 'metrics.json'}")
    if plots:
        _plots(out, models["canonicalized"], x_test_rot, y_test, test_angles, correct, say)
    return results


def _plots(out: Path, model: nn.Module, x_rot: torch.Tensor, y: torch.Tensor, angles: torch.Tensor,
           correct: dict[str, torch.Tensor], say) -> None:
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
