"""Pose agreement of image canonicalizers at exact and interpolated angles.

For a canonicalizer ``h`` and a rotation ``g``, the pose agrees when ``h(g·x) == g h(x)``
(``ec.metrics.pose_agreement``). Quarter turns are exact index operations, so agreement there must
be 100%; at other angles (45° for C(8), 22.5° for C(16)) the filters and the input are
interpolated and agreement is measured on real images: Fashion-MNIST test images (zero-padded so
that rotations cut nothing off), at random initialisation and after training the canonicalizer
with the prior alone on upright training images (``equicanon.training.fit``, ``transform=None``).

    python experiments/pose_agreement.py            # about 10 minutes on 2 CPU cores
    python experiments/pose_agreement.py --quick    # seconds
    python experiments/pose_agreement.py --steps 0  # any setting (configs/experiments/pose_agreement.yaml)
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch

import equicanon as ec
from equicanon.canonicalizers import Canonicalizer
from equicanon.data import load_fashion_mnist
from equicanon.metrics import pose_agreement, pose_error
from equicanon.settings import parse_settings, run_script
from equicanon.training import fit

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "experiments" / "pose_agreement.yaml"


@dataclass
class Settings:
    """Settings of the pose-agreement measurement.

    Args:
        images: test images to evaluate on.
        train_images: the first training images the prior is trained on.
        steps: prior-training steps (0: random initialisation only).
        batch_size: images per prior-training step.
        pad: zero-pad images to this size so rotations cut nothing off (28: no padding).
        hidden: channels per group element.
        filters: filter kind of the canonicalizers: auto (steerable for C(8), C(16)), free or steerable.
        seed: seeds the weights (global generator) and the batches.
        data_dir: Fashion-MNIST IDX files (default: $EQUICANON_DATA, then the Debian package's folder).
    """

    images: int
    train_images: int
    steps: int
    batch_size: int
    pad: int
    hidden: int
    filters: str
    seed: int
    data_dir: str | None = None


def agreement(canon: Canonicalizer, x: torch.Tensor, batch: int = 250) -> dict[int, float]:
    """Share of images with ``pose(g·x) == g pose(x)``, for each element ``g`` of the canonicalizer's group."""
    group = cast(ec.groups.FiniteGroup, canon.group)
    act = ec.actions.Image(group)
    hits = torch.zeros(group.order)
    with torch.no_grad():
        for start in range(0, len(x), batch):
            xb = x[start:start + batch]
            res = canon(xb)
            for k in range(group.order):
                g = torch.full((len(xb),), k)
                hits[k] += pose_agreement(res, canon(act(g, xb)), g, reduction="none").sum()
    return {k: float(hits[k]) / len(x) for k in range(group.order)}


def angle_error(canon: Canonicalizer, x: torch.Tensor, generator: torch.Generator) -> float:
    """Mean angle in degrees between ``h(g·x)`` and ``g h(x)`` over random angles g (SO(2) canonicalizers)."""
    g = canon.group.sample(len(x), generator=generator)
    with torch.no_grad():
        return float(pose_error(canon(x), canon(ec.actions.Image(canon.group)(g, x)), g))


def layer_error(filters: str, n: int, x: torch.Tensor) -> float:
    """Relative error ``|lift(g·x) - g·lift(x)| / |lift(x)|`` of a random lifting layer at g = 360°/n,
    on images ``x``, inside the disk that neither rotation nor the filter support cuts."""
    group = ec.C(n)
    lift = ec.nn.LiftingConv2d(group, x.shape[1], 8, 5, filters=filters).double()
    g = torch.ones(len(x), dtype=torch.long)
    x = x.double()
    with torch.no_grad():
        lhs, rhs = lift(ec.actions.Image(group)(g, x)), ec.nn.RegularFeatures(group)(g, lift(x))
    size = x.shape[-1]
    yy, xx = torch.meshgrid(torch.arange(size) - (size - 1) / 2, torch.arange(size) - (size - 1) / 2, indexing="ij")
    disk = (xx**2 + yy**2) <= ((size - 1) / 2 - 3) ** 2
    return float((lhs - rhs)[..., disk].norm() / rhs[..., disk].norm())


def random_batches(x: torch.Tensor, batch: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless random batches of ``x``, drawn from ``generator`` (one stream shared by every canonicalizer)."""
    while True:
        yield x[torch.randint(len(x), (batch,), generator=generator)]


def main(argv: Sequence[str] | None = None) -> None:
    """The command line: the settings (``--help``), ``--quick``; prints the tables."""
    s = parse_settings(Settings, argv, config=CONFIG, description=__doc__).values
    torch.manual_seed(s.seed)
    gen = torch.Generator().manual_seed(s.seed)
    test_x, _ = load_fashion_mnist("test", s.data_dir)
    train_x, _ = load_fashion_mnist("train", s.data_dir)
    margin = (s.pad - 28) // 2
    pad = (margin, s.pad - 28 - margin) * 2
    test_x = torch.nn.functional.pad(test_x[: s.images, None].float() / 255, pad)
    train_x = torch.nn.functional.pad(train_x[: s.train_images, None].float() / 255, pad)

    print(f"Fashion-MNIST, {len(test_x)} test images zero-padded to {s.pad}x{s.pad}, "
          f"hidden={s.hidden}, filters={s.filters}, torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("Lifting layer, relative equivariance error at the smallest rotation (random filters):\n")
    print("| filters | C(8), 45° | C(16), 22.5° |")
    print("|---|---|---|")
    for filters in ("free", "steerable"):
        errs = [layer_error(filters, n, test_x[:100]) for n in (8, 16)]
        print(f"| {filters} | {100 * errs[0]:.1f}% | {100 * errs[1]:.1f}% |")
    print("\nPose agreement h(g·x) == g h(x), share of test images:\n")
    print("| canonicalizer | state | quarter turns | other angles | worst element |")
    print("|---|---|---|---|---|")
    for n in (8, 16):
        canon = ec.canonicalizers.create("group_conv", group=ec.C(n), in_channels=1, hidden=s.hidden, layers=3,
                                         kernel_size=5, filters=s.filters, pool=False).eval()
        for state in ("random init", f"prior, {s.steps} steps"):
            if state != "random init":
                if s.steps == 0:
                    continue
                t0 = time.perf_counter()
                fit(canon, random_batches(train_x, s.batch_size, gen), s.steps, lr=1e-3, prior_weight=1.0,
                    transform=None)
                state += f" ({time.perf_counter() - t0:.0f} s)"
            agree = agreement(canon, test_x)
            quarter = [v for k, v in agree.items() if (4 * k) % n == 0]
            other = {k: v for k, v in agree.items() if (4 * k) % n != 0}
            worst = min(other, key=other.__getitem__)
            print(f"| GroupConv(C({n})) | {state} | {100 * min(quarter):.1f}% (min) | "
                  f"{100 * sum(other.values()) / len(other):.1f}% (mean) | "
                  f"{360 * worst / n:g}°: {100 * other[worst]:.1f}% |")
    for n in (8, 16):
        canon = ec.canonicalizers.create("group_conv", group=ec.SO2(), in_channels=1, hidden=s.hidden, layers=3,
                                         kernel_size=5, rotations=n, filters=s.filters, pool=False,
                                         refine=False).eval()  # the harmonic pose Σ ℓ_h ρ(h), unrefined
        err = angle_error(canon, test_x, gen)
        print(f"| GroupConv(SO2(), rotations={n}, refine=False) | random init | — "
              f"| mean pose error {err:.2f}° at random angles | — |")


if __name__ == "__main__":
    raise SystemExit(run_script(main))
