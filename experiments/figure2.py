"""Figure 2 of EquiOptAdapt (Panigrahi & Mondal, 2024) on rotated Fashion-MNIST: identity metric against wall time.

Two canonicalizers learn the canonicalization prior while the same predictor is
trained on upright Fashion-MNIST (the prior says: training images are upright):

- GroupConv + prior (learned canonicalization, Kaba et al. 2023, with Mondal et al.'s prior);
- Contrastive + prior (EquiOptAdapt: a non-equivariant CNN scores all |G| copies; plus the contrastive loss);
- optionally (``--methods``), the same Contrastive with a trainable reference vector (``learn_reference=True``)
  and with the rotation-artifact loss (``artifact_weight``: a copy turned by g and back embeds like the
  original), the two additions of the authors' library; they matter for ``--group C8``, whose turns interpolate.

Both get the same predictor (``ec.models.LeNet``, same initial weights), the same batches in
the same order, the same optimiser and the same training-time budget, in one process on one
machine; their training steps (``equicanon.training.fit``, the prior on the upright batches as
given: ``transform=None``) are interleaved in blocks so that load on the machine hits both
alike. Every ``eval_every`` steps the identity metric (share of inputs whose pose is the
identity) is measured on a fixed held-out set of upright test images; evaluation time is
excluded from the training clock. At the end, both wrapped models are evaluated on the test
images rotated by random elements of the group (accuracy is the same as upright, up to
rounding, as the models are invariant), and the share of rotated images whose pose is the rotation applied.

Writes ``figure2.png`` and ``figure2.md`` (the markdown table with the training time each method
needs to reach 90% and 95% identity rate and the ratio of the two) and prints the table.

    python experiments/figure2.py            # about 5 minutes on a 2-core CPU; writes docs/figure2.{png,md}
    python experiments/figure2.py --quick    # seconds (a 1-second budget, 1 seed)
    python experiments/figure2.py --group C8 --methods '[group_conv, contrastive, learn_reference, artifact]' \
        --output-name figure2_c8            # about 10 minutes; writes docs/figure2_c8.{png,md}
    python experiments/figure2.py --help     # the settings (configs/experiments/figure2.yaml)
"""

from __future__ import annotations

import copy
import math
import platform
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import torch

import equicanon as ec
from equicanon.canonicalizers import Canonicalizer
from equicanon.data import load_fashion_mnist
from equicanon.errors import ConfigError
from equicanon.metrics import argmax_margin, identity_rate
from equicanon.settings import parse_settings, run_script
from equicanon.training import fit

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "experiments" / "figure2.yaml"
THRESHOLDS = (0.90, 0.95)
METHODS = {"group_conv": "GroupConv + prior", "contrastive": "Contrastive + prior",
           "learn_reference": "Contrastive, learnt reference", "artifact": "Contrastive + artifact loss"}


@dataclass
class Settings:
    """Settings of the identity-metric race.

    Args:
        group: rotation group (C4, or C8: 45-degree turns interpolate).
        budget: training seconds per method and seed.
        seeds: repetitions with different initial weights and batch orders.
        batch: images per step.
        lr: Adam learning rate.
        prior_weight: weight of the prior.
        contrastive_weight: weight of the contrastive loss (Contrastive only).
        logit_scale: Contrastive's logits are logit_scale x the cosine scores (a temperature of 1 / logit_scale).
        gc_hidden: channels per group element of the GroupConv.
        cnn_hidden: first-layer channels of Contrastive's encoder (``ec.models.ConvEncoder``).
        embed_dim: feature size of Contrastive's encoder.
        eval_every: steps per interleaved block (one evaluation each); 4x as many after ``dense_steps``.
        dense_steps: steps with dense evaluation.
        eval_images: held-out upright test images for the identity metric.
        test_images: other test images, for the final accuracies.
        threads: torch threads (1: robust when another process holds one of 2 cores).
        methods: which canonicalizers race, from ``group_conv``, ``contrastive``, ``learn_reference``
            (Contrastive with ``learn_reference=True``) and ``artifact`` (Contrastive with ``artifact_weight``).
        artifact_weight: weight of the rotation-artifact loss of the ``artifact`` method.
        output_name: stem of the files written to the output directory (``figure2``: figure2.png, figure2.md).
        data_dir: Fashion-MNIST IDX files (default: $EQUICANON_DATA, then the Debian package's folder).
    """

    group: str
    budget: float
    seeds: int
    batch: int
    lr: float
    prior_weight: float
    contrastive_weight: float
    logit_scale: float
    gc_hidden: int
    cnn_hidden: int
    embed_dim: int
    eval_every: int
    dense_steps: int
    eval_images: int
    test_images: int
    threads: int
    methods: list[str] = field(default_factory=lambda: ["group_conv", "contrastive"])
    artifact_weight: float = 1.0
    output_name: str = "figure2"
    data_dir: str | None = None

    def __post_init__(self) -> None:
        if self.group.upper() not in ("C4", "C8"):
            raise ConfigError(f"group must be C4 or C8, got {self.group!r}")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods or len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"methods must be distinct names from {', '.join(METHODS)}, got {self.methods!r}")


@dataclass
class Run:
    """One method's model, optimiser, clock and curve."""

    name: str
    canon: Canonicalizer
    model: ec.Canonicalized
    opt: torch.optim.Optimizer
    contrastive_weight: float = 0.0
    steps: int = 0
    train_seconds: float = 0.0
    curve: list[tuple[int, float, float, float]] = field(default_factory=list)  # (step, seconds, identity, margin)

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.canon.parameters())


def shared_batches(images: torch.Tensor, labels: torch.Tensor, order: torch.Tensor, first: int, steps: int,
                   batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches ``first, ..., first + steps - 1`` of the epoch ``order`` (wrapping around): the same stream for both."""
    for step in range(first, first + steps):
        idx = order[(step * batch) % len(order):][:batch]
        if len(idx) < batch:  # wrap around the epoch
            idx = torch.cat([idx, order[: batch - len(idx)]])
        yield images[idx], labels[idx]


def train_block(run: Run, images: torch.Tensor, labels: torch.Tensor, order: torch.Tensor, steps: int,
                batch: int, prior_weight: float) -> None:
    """``steps`` optimisation steps (:func:`equicanon.training.fit`, run's own optimiser) on the shared stream, timed."""
    t0 = time.perf_counter()
    fit(run.model, shared_batches(images, labels, order, run.steps, steps, batch), steps, optimizer=run.opt,
        prior_weight=prior_weight, contrastive_weight=run.contrastive_weight, transform=None)
    run.steps += steps
    run.train_seconds += time.perf_counter() - t0


@torch.no_grad()
def evaluate(run: Run, images: torch.Tensor, chunk: int = 500) -> tuple[float, float]:
    """Identity rate and mean argmax margin on held-out upright images (not timed)."""
    run.model.eval()
    rates, margins = [], []
    for start in range(0, len(images), chunk):
        res = run.canon(images[start:start + chunk])
        rates.append(identity_rate(res, reduction="none"))
        margins.append(argmax_margin(res, reduction="none"))
    return float(torch.cat(rates).float().mean()), float(torch.cat(margins).mean())


@torch.no_grad()
def rotated_accuracy(run: Run, images: torch.Tensor, labels: torch.Tensor, group: ec.groups.FiniteGroup,
                     seed: int, chunk: int = 500) -> tuple[float, float, float]:
    """Accuracy on upright test images and on the same images rotated by random group elements, and the share
    of rotated images whose pose is the element applied."""
    run.model.eval()
    g = group.sample(len(images), generator=torch.Generator().manual_seed(seed))
    act = ec.actions.Image(group)
    hits_up = hits_rot = poses = 0
    for start in range(0, len(images), chunk):
        x, y, gb = images[start:start + chunk], labels[start:start + chunk], g[start:start + chunk]
        hits_up += int((run.model(x).argmax(-1) == y).sum())
        logits, res = run.model(act(gb, x), return_canonicalization=True)
        hits_rot += int((logits.argmax(-1) == y).sum())
        poses += int((res.pose == gb).sum())
    return hits_up / len(images), hits_rot / len(images), poses / len(images)


def time_to(curve: list[tuple[int, float, float, float]], threshold: float) -> tuple[float, int] | None:
    """Training seconds and steps at the first evaluation with identity rate >= threshold (``None``: never)."""
    for step, seconds, rate, _ in curve:
        if rate >= threshold:
            return seconds, step
    return None


def canonicalizer(s: Settings, group: ec.groups.FiniteGroup, method: str) -> Canonicalizer:
    """The canonicalizer of one method (the caller seeds the initial weights)."""
    if method == "group_conv":
        return ec.canonicalizers.create("group_conv", group=group, in_channels=1, hidden=s.gc_hidden, layers=3,
                                        kernel_size=5, pool=False)
    extra = {"learn_reference": {"learn_reference": True}, "artifact": {"artifact_weight": s.artifact_weight}}
    return ec.canonicalizers.create("contrastive", group=group,
                                    network=ec.models.ConvEncoder(1, out_dim=s.embed_dim, hidden=s.cnn_hidden),
                                    logit_scale=s.logit_scale, **extra.get(method, {}))


def build(s: Settings, group: ec.groups.FiniteGroup, seed: int) -> list[Run]:
    """Every method for one seed: one predictor initialisation copied into all; canonicalizers seeded alike."""
    torch.manual_seed(seed)
    shared = ec.models.LeNet(10, 1, 28)
    runs = []
    for method in s.methods:
        torch.manual_seed(seed + 1)
        canon = canonicalizer(s, group, method)
        model = ec.Canonicalized(copy.deepcopy(shared), canon)
        opt = torch.optim.Adam(model.parameters(), lr=s.lr)
        weight = 0.0 if method == "group_conv" else s.contrastive_weight
        runs.append(Run(METHODS[method], canon, model, opt, contrastive_weight=weight))
    return runs


def run_seed(s: Settings, group: ec.groups.FiniteGroup, seed: int, data: dict[str, torch.Tensor]
             ) -> tuple[list[Run], dict[str, tuple[float, float, float]]]:
    """Train both methods on one seed's batch stream, interleaved in blocks, until each has used the budget."""
    runs = build(s, group, seed)
    order = torch.randperm(len(data["train_x"]), generator=torch.Generator().manual_seed(seed))
    for run in runs:
        run.curve.append((0, 0.0, *evaluate(run, data["eval_x"])))
    while any(run.train_seconds < s.budget for run in runs):
        for run in runs:
            if run.train_seconds < s.budget:
                block = s.eval_every if run.steps < s.dense_steps else 4 * s.eval_every
                train_block(run, data["train_x"], data["train_y"], order, block, s.batch, s.prior_weight)
                run.curve.append((run.steps, run.train_seconds, *evaluate(run, data["eval_x"])))
    accuracies = {run.name: rotated_accuracy(run, data["test_x"], data["test_y"], group, seed) for run in runs}
    return runs, accuracies


def plot(results: list[list[Run]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    colours = ("tab:blue", "tab:orange", "tab:green", "tab:red")
    for i, runs in enumerate(results):
        for run, colour in zip(runs, colours, strict=False):
            seconds = [c[1] for c in run.curve]
            rates = [100 * c[2] for c in run.curve]
            ax.plot(seconds, rates, marker="o", markersize=2, linewidth=1.2, color=colour, alpha=0.85,
                    label=run.name if i == 0 else None)
    for t in THRESHOLDS:
        ax.axhline(100 * t, color="gray", linestyle="--", linewidth=0.8)
    ax.set_xlabel("training wall time (s)")
    ax.set_ylabel("identity metric (%)")
    ax.set_ylim(0, 101)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _median(values: list[float]) -> float:
    return float(torch.tensor(values).median()) if values else math.nan


def table(results: list[list[Run]], accuracies: list[dict[str, tuple[float, float, float]]], seeds: list[int]) -> str:
    """Markdown: per method the median (and per-seed) time to each threshold; then the ratios to Contrastive's."""
    def cell(hits: list[tuple[float, int] | None]) -> str:
        per = ", ".join("—" if h is None else f"{h[0]:.1f}" for h in hits)
        reached = [h[0] for h in hits if h is not None]
        if len(reached) < len(hits):
            return f"not reached in {len(hits) - len(reached)} of {len(hits)} ({per})"
        return f"**{_median(reached):.1f} s** ({per})" if len(hits) > 1 else f"**{reached[0]:.1f} s**"

    names = [run.name for run in results[0]]
    lines = ["| method | canonicalizer params | ms / step | time to 90% (median; per seed) | time to 95% (median; per seed) "
             "| final identity | test acc. upright / rotated | rotated: pose right |", "|---|---|---|---|---|---|---|---|"]
    for m, name in enumerate(names):
        runs = [r[m] for r in results]
        ms = 1000 * sum(r.train_seconds for r in runs) / max(sum(r.steps for r in runs), 1)
        up = sum(a[name][0] for a in accuracies) / len(accuracies)
        rot = sum(a[name][1] for a in accuracies) / len(accuracies)
        final = sum(r.curve[-1][2] for r in runs) / len(runs)
        pose = sum(a[name][2] for a in accuracies) / len(accuracies)
        lines.append(f"| {name} | {runs[0].params:,} | {ms:.1f} | {cell([time_to(r.curve, 0.90) for r in runs])} | "
                     f"{cell([time_to(r.curve, 0.95) for r in runs])} | {100 * final:.1f}% | "
                     f"{100 * up:.1f}% / {100 * rot:.1f}% | {100 * pose:.1f}% |")
    lines.append("")
    if METHODS["contrastive"] not in names:
        return "\n".join(lines)
    base = names.index(METHODS["contrastive"])
    for m, name in enumerate(names):
        if m == base:
            continue
        short = "GroupConv" if name == METHODS["group_conv"] else name
        for t in THRESHOLDS:
            ratios, steps = [], []
            for runs in results:
                a, b = time_to(runs[m].curve, t), time_to(runs[base].curve, t)
                ratios.append(None if a is None or b is None else a[0] / b[0])
                steps.append(None if a is None or b is None else a[1] / b[1])
            known = [r for r in ratios if r is not None]
            per = ", ".join("—" if r is None else f"{r:.2f}x" for r in ratios)
            per_steps = ", ".join("—" if r is None else f"{r:.2f}x" for r in steps)
            if known:
                lines.append(f"- time to {100 * t:.0f}% identity, {short} / Contrastive: **{_median(known):.2f}x** "
                             f"median (seeds {', '.join(map(str, seeds))}: {per}; in steps: {per_steps})")
            else:
                lines.append(f"- time to {100 * t:.0f}% identity, {short} / Contrastive: not reached by both in any seed")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """The command line: the settings (``--help``), ``--quick``, ``--output-dir``."""
    settings = parse_settings(Settings, argv, config=CONFIG, output_dir=ROOT / "docs", description=__doc__)
    s, out = settings.values, settings.output_dir
    torch.set_num_threads(s.threads)
    started = time.perf_counter()
    group = cast(ec.groups.FiniteGroup, ec.groups.as_group(s.group))

    train_x, train_y = load_fashion_mnist("train", s.data_dir)
    test_x, test_y = load_fashion_mnist("test", s.data_dir)
    test_x = test_x[:, None].float() / 255
    data = {
        "train_x": train_x[:, None].float() / 255, "train_y": train_y,
        "eval_x": test_x[: s.eval_images],  # identity metric: held out, upright
        "test_x": test_x[-s.test_images:], "test_y": test_y[-s.test_images:],  # accuracy: disjoint from eval_x
    }
    seeds = list(range(s.seeds))
    results, accuracies = [], []
    for seed in seeds:
        runs, acc = run_seed(s, group, seed, data)
        results.append(runs)
        accuracies.append(acc)
        print(f"seed {seed} done at {time.perf_counter() - started:.0f} s", flush=True)

    setup = (f"Fashion-MNIST: training on all {len(train_x)} upright training images; identity metric on "
             f"{s.eval_images} held-out upright test images, accuracy on {s.test_images} other test images, "
             f"rotated by random elements of {group}. Batch {s.batch}, Adam lr {s.lr}, prior weight "
             f"{s.prior_weight}, contrastive weight {s.contrastive_weight}, artifact weight {s.artifact_weight} "
             f"(its method only), τ {1 / s.logit_scale:g}; {s.budget:g} s "
             f"of training per method and seed, {len(seeds)} seeds; torch {torch.__version__}, "
             f"{torch.get_num_threads()} thread(s), {platform.machine()}.")
    title = f"Identity metric vs training time: Fashion-MNIST, {group}, {len(seeds)} seeds"
    text = table(results, accuracies, seeds)
    total = time.perf_counter() - started
    report = f"{setup}\n\n{text}\n\nTotal runtime of the script: {total:.0f} s."
    print(report)
    if out is not None:
        png, md = out / f"{s.output_name}.png", out / f"{s.output_name}.md"
        plot(results, png, title)
        md.write_text(report + "\n")
        print(f"\nwrote {png} and {md}")


if __name__ == "__main__":
    raise SystemExit(run_script(main))
