"""Robustness of one pose against several: continuity at near ties, accuracy and cost on real data, margins.

Measures three things for ``docs/robustness.md`` (issue 17), every number from one run:

1. **Continuity at near-tie inputs.** At inputs where the hard pose is ambiguous, the largest change of the
   output, ``max ‖f(x₀ + δ) − f(x₀)‖₂`` over ``draws`` random perturbations ``δ`` of norm ``‖δ‖₂ = eps``
   (``1e-3``, each input's whole tensor), and that change divided by ``eps``. Wrappers of one canonicalizer
   and one predictor: hard (``ec.Canonicalized``), weighted (``ec.WeightedCanonicalized``, ``top_k``),
   sampled (``ec.Symmetrized``: its exact expectation ``.expected`` for finite groups; a fixed generator, the
   same draws at ``x₀`` and ``x₀ + δ``) and the averaging baselines (``ec.GroupAveraged``,
   ``ec.FrameAveraged``). Inputs: images with exact quarter-turn symmetry ``(x + r·x + r²·x + r³·x)/4``,
   blank and constant images, an image on the way from ``x`` to its quarter turn where the two best logits
   tie (found by bisection), and test images (no tie); for the trained C(8) classifier of part 2 and for a
   random C(4) canonicalizer in front of a random per-pixel network whose output is turned back by the pose
   (dense output). Point clouds with ``ec.canonicalizers.VectorNeurons`` (random, seeded) and a random
   ``PointEncoder``: the vertices of a regular tetrahedron, cube and octahedron, a regular hexagon in a
   plane, and a generic cloud (no tie); and the trained n-body model of part 2 on symmetric systems at rest.
   The models run in float64 here, so exact ties stay ties to rounding.
2. **Accuracy and cost on real data.** The demo's task (``equicanon demo``): a ``GroupConv(C(8))``
   canonicalizer trained with the prior on continuously turned images, then ``SmallCNN`` on its canonical
   forms (both by ``equicanon.training.fit``, the demo's recipe); and the charged n-body task
   (``experiments/nbody.py``): ``ParticleVectorNeurons(SE3(), vectors=…)`` and a transformer trained jointly
   by ``fit`` (MSE). The same trained canonicalizer and predictor are then wrapped every way and scored on
   transformed test data, with the wall time per test batch relative to ``Canonicalized`` (timed side by side,
   interleaved, ``repeats`` times, median).
3. **Margins on real data.** The share of inputs whose ``Canonicalization.margin`` is below
   ``margin_threshold`` (0.1): for ``C(n)`` the gap between the two largest logits, for vector neurons the
   smallest relative Gram–Schmidt residual of the output vectors that fix the pose; and the accuracy (MSE) of
   the hard and the weighted model on those inputs and on the rest.

    python experiments/robustness.py                  # about 12 min on one CPU thread
    python experiments/robustness.py --quick          # seconds (tiny sizes; writes nothing)
    python experiments/robustness.py --print_config   # configs/experiments/robustness.yaml

Writes ``docs/robustness/robustness.json`` and prints markdown tables.
"""

from __future__ import annotations

import copy
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import torch
import torch.nn.functional as F
from nbody import epochs  # experiments/: the shuffled epochs of the n-body comparison
from torch import nn

import equicanon as ec
from equicanon.actions.functional import rotate_image
from equicanon.canonicalizers import Canonicalizer
from equicanon.data.nbody import make_nbody
from equicanon.errors import ConfigError
from equicanon.groups import FiniteGroup, RigidGroup
from equicanon.settings import parse_settings, run_script
from equicanon.training import fit

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "experiments" / "robustness.yaml"

#: a model under test: ``f(x, generator)``; the generator feeds the draws of ``Symmetrized`` (others ignore it)
Model = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
M = TypeVar("M", bound=nn.Module)


@dataclass
class ImageSettings:
    """The demo's task: Fashion-MNIST, a ``GroupConv(C(rotations))`` canonicalizer and ``SmallCNN``.

    Args:
        data_dir: the IDX files (default: $EQUICANON_DATA, then the Debian package dataset-fashion-mnist).
        train_images: the first training images.
        test_images: the first test images, scored upright, at random quarter turns and at random angles.
        steps: optimiser steps in all (batch ``batch``, Adam, one-cycle ``lr``): the first
            ``canonicalizer_share`` train the canonicalizer with the prior on images turned by continuous
            angles, the rest the CNN on canonical forms of randomly turned images (the canonicalizer frozen).
        batch: images per training step.
        lr: peak learning rate.
        rotations: ``n`` of the ``C(n)`` canonicalizer.
        canonicalizer_share: the share of the steps that train the canonicalizer.
        resize: side of the canonicalizer's view (the demo's 16 pixels).
        eval_batch: images per evaluation call, and the batch that is timed.
        temperature: ``τ`` of the weighted and the sampled wrappers (the library's default 1).
        symmetric: test images made quarter-turn symmetric for the continuity check.
        near_ties: test images on whose way to their quarter turn a tie is found.
    """

    data_dir: str | None
    train_images: int
    test_images: int
    steps: int
    batch: int
    lr: float
    rotations: int
    canonicalizer_share: float
    resize: int
    eval_batch: int
    temperature: float
    symmetric: int
    near_ties: int


@dataclass
class DenseSettings:
    """A random ``GroupConv(C(4))`` canonicalizer before a random two-layer per-pixel network, whose scores
    (``channels`` per pixel) are turned back by the pose (``actions.Image``): equivariant dense output.

    Args:
        hidden: channels per element of the canonicalizer's network.
        channels: output channels of the per-pixel network.
        width: its hidden channels.
    """

    hidden: int
    channels: int
    width: int


@dataclass
class PointSettings:
    """Random ``VectorNeurons(SO3())`` before a random ``PointEncoder`` classifier, on symmetric clouds.

    Args:
        hidden: vector channels of the canonicalizer.
        layers: its VN blocks.
        vectors: its output vectors (``>= 3`` for weighted frames: ``C(vectors, 2)`` frames).
        top_k: ``top_k`` of the weighted wrappers.
        classes: outputs of the classifier.
        width: width of its per-point MLP.
        samples: draws of ``Symmetrized`` (noisy frames; a fixed generator).
    """

    hidden: int
    layers: int
    vectors: int
    top_k: list[int]
    classes: int
    width: int
    samples: int


@dataclass
class NBodySettings:
    """The charged n-body task of ``experiments/nbody.py``, with a canonicalizer of ``vectors`` output vectors.

    Args:
        epochs: passes over the training systems (``fit``, Adam at ``lr``, MSE; canonicalizer and predictor
            trained together).
        train: training systems (simulated with seed 1, as in experiments/nbody.py).
        val: test systems (seed 2), scored as generated and moved by random SE(3) elements (seed 3).
        width: the transformer's width.
        depth: its layers.
        heads: its attention heads.
        hidden: channels of the canonicalizer (``ParticleVectorNeurons(SE3())``, 2 layers).
        vectors: its output vectors (``>= 3`` for weighted frames: ``C(vectors, 2)`` frames).
        top_k: ``top_k`` of the weighted wrappers.
        batch_size: systems per training step.
        lr: Adam learning rate (constant).
        eval_batch: systems per evaluation call, and the batch that is timed.
        temperature: ``τ`` of the weighted and sampled wrappers (noisy frames: the noise's standard deviation
            relative to the output vectors' RMS length).
        samples: draws of the sampled wrapper in the continuity check.
    """

    epochs: int
    train: int
    val: int
    width: int
    depth: int
    heads: int
    hidden: int
    vectors: int
    top_k: list[int]
    batch_size: int
    lr: float
    eval_batch: int
    temperature: float
    samples: int

    def __post_init__(self) -> None:
        if 2 not in self.top_k:
            raise ConfigError(f"nbody.top_k: the margin table compares k=2 with the hard pose; got {self.top_k}")


@dataclass
class Settings:
    """Settings of the robustness measurements.

    Args:
        seed: seeds the weights, the batches, the test transformations, the perturbations and the draws.
        threads: torch threads.
        eps: the norm ``‖δ‖₂`` of each perturbation (of an input's whole tensor).
        draws: perturbations per input.
        orbit: random rotations whose predictions give the orbit spread of continuous groups (finite: all elements).
        samples: ``samples`` of the sampled wrappers scored on real data.
        margin_threshold: the margin below which an input counts as a near tie.
        repeats: timed calls per wrapper (interleaved; the median is reported).
        images: the image task.
        dense: the dense-output continuity check.
        points: the point-cloud continuity check.
        nbody: the n-body task.
    """

    seed: int
    threads: int
    eps: float
    draws: int
    orbit: int
    samples: list[int]
    margin_threshold: float
    repeats: int
    images: ImageSettings
    dense: DenseSettings
    points: PointSettings
    nbody: NBodySettings


def seeded(seed: int) -> torch.Generator:
    """A CPU generator seeded by ``seed``."""
    return torch.Generator().manual_seed(seed)


# --- the wrappers -------------------------------------------------------------------------------------------

def wrappers(predictor: nn.Module, canon: Canonicalizer, output: ec.actions.Action | None, *, top_k: Sequence[int],
             samples: Sequence[int], temperature: float, averaged: tuple[str, nn.Module] | None) -> dict[str, Model]:
    """The same ``predictor`` and ``canon`` wrapped every way: hard, weighted (each ``top_k``), sampled (each
    ``samples``, and the exact expectation for finite groups), and the averaging baseline ``averaged``."""
    out: dict[str, Model] = {"Canonicalized": deterministic(ec.Canonicalized(predictor, canon, output))}
    for k in top_k:
        out[f"Weighted k={k}"] = deterministic(
            ec.WeightedCanonicalized(predictor, canon, output, top_k=k, temperature=temperature))
    sampled = None
    for k in samples:
        sampled = ec.Symmetrized(predictor, canon, output, samples=k, temperature=temperature).eval()
        out[f"Symmetrized k={k}"] = drawing(sampled)
    if sampled is not None and canon.group.is_finite:
        out["Symmetrized, expected"] = deterministic(sampled.eval(), sampled.expected)
    if averaged is not None:
        name, model = averaged
        out[name] = deterministic(model)
    return out


def deterministic(model: nn.Module, call: Callable[[torch.Tensor], Any] | None = None) -> Model:
    """``model`` (in eval mode) as a :data:`Model` that ignores the generator; ``call``: a method to use instead."""
    model.eval()
    method = model if call is None else call
    return lambda x, g: method(x)


def drawing(model: ec.Symmetrized) -> Model:
    """A sampled wrapper as a :data:`Model` that draws from the generator it is given."""
    return lambda x, g: model(x, generator=g)


def haar(predictor: nn.Module, canon: Canonicalizer, output: ec.actions.Action | None, samples: int
         ) -> dict[str, Model]:
    """The reference of the continuity check for vector neurons: ``Symmetrized`` at ``τ = ∞``, frames of the
    noise alone (Haar-random rotations, the input's translation), which do not depend on the input's vectors."""
    uniform = ec.Symmetrized(predictor, canon, output, samples=samples, temperature=math.inf).eval()
    return {f"Symmetrized k={samples}, τ=∞": drawing(uniform)}


# --- 1. continuity ------------------------------------------------------------------------------------------

def perturbations(x: torch.Tensor, eps: float, draws: int, seed: int) -> torch.Tensor:
    """``draws`` Gaussian directions per input of ``x: (B, *)``, each scaled to norm ``eps``: ``(draws, B, *)``."""
    u = torch.randn((draws, *x.shape), generator=seeded(seed), dtype=x.dtype)
    norms = torch.linalg.vector_norm(u.flatten(2), dim=2).reshape(draws, x.shape[0], *([1] * (x.ndim - 1)))
    return eps * u / norms


@torch.no_grad()
def largest_change(model: Model, x0: torch.Tensor, deltas: torch.Tensor, seed: int) -> torch.Tensor:
    """``max_δ ‖f(x₀ + δ) − f(x₀)‖₂`` per input ``(B,)``; the sampled wrappers draw from the same seed each call."""
    base = model(x0, seeded(seed)).flatten(1)
    changes = [torch.linalg.vector_norm(model(x0 + d, seeded(seed)).flatten(1) - base, dim=1) for d in deltas]
    return torch.stack(changes).amax(dim=0)


@torch.no_grad()
def near_tie(canon: Canonicalizer, x: torch.Tensor, y: torch.Tensor, iterations: int = 60) -> torch.Tensor:
    """Inputs on the segments from ``x`` to ``y`` ``(B, *)`` (whose hard poses differ) where the pose switches:
    bisection on ``t`` of ``(1 − t) x + t y``; at the end the two best logits tie to rounding."""
    shape = (-1, *([1] * (x.ndim - 1)))
    lo, hi = torch.zeros(len(x), dtype=x.dtype), torch.ones(len(x), dtype=x.dtype)
    pose_lo = canon(x).pose
    for _ in range(iterations):
        mid = (lo + hi) / 2
        same = canon(x + mid.reshape(shape) * (y - x)).pose == pose_lo
        lo, hi = torch.where(same, mid, lo), torch.where(same, hi, mid)
    return x + lo.reshape(shape) * (y - x)


def quarter_symmetric(x: torch.Tensor) -> torch.Tensor:
    """``(x + r·x + r²·x + r³·x) / 4`` for images ``(B, C, H, W)``, ``r`` the quarter turn: exactly invariant
    under it (float64 sums of the same four values)."""
    x = x.double()
    return torch.stack([torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]).sum(dim=0) / 4


def image_inputs(canon: Canonicalizer, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The continuity inputs of images ``x (B, 1, H, W)`` (float64): quarter-turn symmetric, blank, constant,
    a tie of ``canon``'s two best logits on the way to the quarter turn, and the images themselves."""
    x = x.double()
    one = x[:1]
    return {"quarter-turn symmetric images": quarter_symmetric(x),
            "blank image (all 0)": torch.zeros_like(one),
            "constant image (all 0.5)": torch.full_like(one, 0.5),
            "tie on the way to the quarter turn": near_tie(canon, x, torch.rot90(x, 1, dims=(-2, -1))),
            "test images (no tie)": x}


def regular_clouds(seed: int) -> dict[str, torch.Tensor]:
    """Point clouds ``(1, N, 3)`` of unit radius (float64): regular tetrahedron, cube, octahedron, a regular
    hexagon in a plane (each turned by one random rotation), and a generic cloud of 8 points."""
    signs = torch.tensor([[a, b, c] for a in (1, -1) for b in (1, -1) for c in (1, -1)], dtype=torch.float64)
    hexagon = torch.tensor([[math.cos(k * math.pi / 3), math.sin(k * math.pi / 3), 0.0] for k in range(6)],
                           dtype=torch.float64)
    clouds = {"regular tetrahedron": signs[signs.prod(dim=1) > 0] / math.sqrt(3),
              "cube": signs / math.sqrt(3),
              "octahedron": torch.cat([torch.eye(3), -torch.eye(3)]).double(),
              "regular hexagon (planar)": hexagon}
    gen = seeded(seed)
    turn = ec.SO3().sample(1, generator=gen, dtype=torch.float64)[0]
    out = {name: (c @ turn.T)[None] for name, c in clouds.items()}
    generic = torch.randn(8, 3, generator=gen, dtype=torch.float64)
    out["generic cloud (no tie)"] = (generic / torch.linalg.vector_norm(generic, dim=1).amax())[None]
    return out


def particle_systems(val: torch.Tensor) -> dict[str, torch.Tensor]:
    """Charged systems ``(B, 5, 7)`` (float64) at rest: a regular tetrahedron of +1 charges around a −1 charge,
    and a triangular bipyramid (+1 on the equator, −1 at the poles), of the data's radius 2; and test systems."""
    tetra = torch.tensor([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1], [0, 0, 0]], dtype=torch.float64)
    tetra = tetra * (2 / math.sqrt(3))
    angles = torch.arange(3, dtype=torch.float64) * (2 * math.pi / 3)
    equator = torch.stack([2 * angles.cos(), 2 * angles.sin(), torch.zeros(3, dtype=torch.float64)], dim=1)
    bipyramid = torch.cat([equator, torch.tensor([[0.0, 0, 2], [0, 0, -2]], dtype=torch.float64)])

    def system(positions: torch.Tensor, charges: list[float]) -> torch.Tensor:
        q = torch.tensor(charges, dtype=torch.float64)[:, None]
        return torch.cat([positions, torch.zeros_like(positions), q], dim=1)[None]

    return {"tetrahedron around a centre, at rest": system(tetra, [1, 1, 1, 1, -1]),
            "triangular bipyramid, at rest": system(bipyramid, [1, 1, 1, -1, -1]),
            "test systems (no tie)": val.double()}


def poses_to_compare(group: ec.groups.Group, x: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """Poses for the orbit spread of one input ``x (1, *)``: every element of a finite group, else ``count``
    Haar-random rotations (with the centroid of the positions as translation, for SE3/E3)."""
    if group.is_finite:
        return torch.arange(cast(FiniteGroup, group).order)
    if group.has_translations:
        rotations = ec.SO3().sample(count, generator=seeded(seed), dtype=x.dtype)
        centre = x[0, :, :3].mean(dim=0).expand(count, 3)
        return cast(RigidGroup, group).from_parts(rotations, centre)
    return group.sample(count, generator=seeded(seed), dtype=x.dtype)


@torch.no_grad()
def orbit_spread(predictor: nn.Module, canon: Canonicalizer, output: ec.actions.Action | None, x0: torch.Tensor,
                 count: int, seed: int) -> torch.Tensor:
    """The largest jump a switch of pose can cause, per input of ``x0 (B, *)``: the diameter of the predictions
    ``{h ⋆ p(h⁻¹·x₀)}`` over the poses of :func:`poses_to_compare` ``(B,)``."""
    group, out = canon.group, ec.actions.Trivial() if output is None else output
    spreads = []
    for x in x0.split(1):
        poses = poses_to_compare(group, x, count, seed)
        copies = x.expand(len(poses), *x.shape[1:])
        y = out(poses, predictor(canon.action(group.inverse(poses), copies))).flatten(1)
        spreads.append(torch.cdist(y, y).max())
    return torch.stack(spreads)


def continuity(name: str, models: dict[str, Model], predictor: nn.Module, canon: Canonicalizer,
               output: ec.actions.Action | None, inputs: dict[str, torch.Tensor], s: Settings,
               log: Callable[[str], None]) -> dict[str, Any]:
    """For every input case: the median margin of ``canon``, the largest orbit spread (:func:`orbit_spread`)
    and, per model, the largest change over ``s.draws`` perturbations of norm ``s.eps`` (the maximum over the
    case's inputs)."""
    out: dict[str, Any] = {}
    for i, (case, x0) in enumerate(inputs.items()):
        deltas = perturbations(x0, s.eps, s.draws, s.seed + 1000 + i)
        with torch.no_grad():
            margin = canon(x0).margin
        assert margin is not None  # every registered canonicalizer sets it
        changes = {m: float(largest_change(f, x0, deltas, s.seed + 2000 + i).max()) for m, f in models.items()}
        spread = float(orbit_spread(predictor, canon, output, x0, s.orbit, s.seed + 3000 + i).max())
        out[case] = {"inputs": len(x0), "margin": float(margin.median()), "orbit_spread": spread, "change": changes,
                     "ratio": {m: c / s.eps for m, c in changes.items()}}
    log(f"continuity, {name}: {len(inputs)} input cases")
    return out


def doubled(module: M) -> M:
    """A float64 copy of ``module`` in eval mode."""
    return copy.deepcopy(module).double().eval()


@torch.no_grad()
def margins_of(canon: Canonicalizer, x: torch.Tensor, batch: int) -> torch.Tensor:
    """``canon``'s margins ``(N,)`` of inputs ``x (N, *)``, in batches of ``batch``."""
    parts = []
    for i in range(0, len(x), batch):
        margin = canon(x[i:i + batch]).margin
        assert margin is not None  # every registered canonicalizer sets it
        parts.append(margin)
    return torch.cat(parts)


# --- 2. real data -------------------------------------------------------------------------------------------

@torch.no_grad()
def run_batches(model: Model, x: torch.Tensor, batch: int, seed: int) -> torch.Tensor:
    """``model`` on ``x`` in batches of ``batch``, the sampled wrappers drawing from one generator seeded ``seed``."""
    gen = seeded(seed)
    return torch.cat([model(x[i:i + batch], gen) for i in range(0, len(x), batch)])


@torch.no_grad()
def timings(models: dict[str, Model], x: torch.Tensor, repeats: int, seed: int) -> dict[str, float]:
    """Median wall time (s) of one call per model on ``x``: one warm-up call each, then ``repeats`` rounds
    with every model once per round (interleaved, so drifts of the machine hit all alike)."""
    times: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():
        model(x, seeded(seed))
    for r in range(repeats):
        for name, model in models.items():
            gen = seeded(seed + r)
            start = time.perf_counter()
            model(x, gen)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def rotate(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The demo's augmentation: uniform random angles in [-180°, 180°)."""
    degrees = (torch.rand(x.shape[0], generator=generator) - 0.5) * 360
    return rotate_image(x, ec.SO2().from_angle(degrees, degrees=True))


def train_images(s: Settings, log: Callable[[str], None]) -> tuple[nn.Module, Canonicalizer, torch.Tensor,
                                                                     torch.Tensor]:
    """The demo's recipe with ``equicanon.training.fit``: the canonicalizer with the prior (continuous turns,
    aimed at the nearest element), then ``SmallCNN`` on canonical forms of randomly turned images."""
    from equicanon.data import load_fashion_mnist

    f = s.images
    x_train, y_train = load_fashion_mnist("train", f.data_dir)
    x_test, y_test = load_fashion_mnist("test", f.data_dir)
    x_train, y_train = x_train[: f.train_images, None].float() / 255, y_train[: f.train_images]
    x_test, y_test = x_test[: f.test_images, None].float() / 255, y_test[: f.test_images]
    torch.manual_seed(s.seed)
    gen = seeded(s.seed)
    start = time.perf_counter()
    canon = ec.canonicalizers.create("group_conv", group=ec.C(f.rotations), in_channels=1, resize=f.resize)
    canon_steps = round(f.steps * f.canonicalizer_share)
    fit(canon, x_train, canon_steps, lr=f.lr, lr_schedule="onecycle", batch_size=f.batch, generator=gen,
        prior_weight=1.0, transform="angle")
    canon.requires_grad_(False)
    predictor = ec.models.SmallCNN()
    fit(ec.Canonicalized(predictor, canon), (x_train, y_train), f.steps - canon_steps, lr=f.lr,
        lr_schedule="onecycle", batch_size=f.batch, generator=gen, augment=rotate, transform=None)
    log(f"images: trained the C({f.rotations}) canonicalizer ({canon_steps} steps) and SmallCNN "
        f"({f.steps - canon_steps} steps) on {len(x_train)} images in {time.perf_counter() - start:.0f} s")
    return predictor.eval(), canon.eval(), x_test, y_test


def image_conditions(x: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """The test images upright, turned by random quarter turns (exact) and by uniform random angles."""
    gen = seeded(seed)
    quarter = ec.actions.Image(ec.C(4))(ec.C(4).sample(len(x), generator=gen), x)
    degrees = torch.rand(len(x), generator=gen) * 360
    return {"upright": x, "quarter turns": quarter,
            "random angles": rotate_image(x, ec.SO2().from_angle(degrees, degrees=True))}


def images(s: Settings, log: Callable[[str], None]) -> tuple[dict[str, Any], torch.Tensor]:
    """Part 2 and 3 for images, and the continuity of the trained model (part 1); also the test images the
    continuity inputs are made of."""
    f = s.images
    predictor, canon, x, y = train_images(s, log)
    group = ec.C(f.rotations)
    models = {"predictor alone": deterministic(predictor),
              **wrappers(predictor, canon, None, top_k=(2, 4), samples=s.samples, temperature=f.temperature,
                         averaged=("GroupAveraged", ec.GroupAveraged(predictor, group)))}
    conditions = image_conditions(x, s.seed + 1)
    accuracy: dict[str, dict[str, float]] = {name: {} for name in models}
    correct: dict[str, dict[str, torch.Tensor]] = {c: {} for c in conditions}
    margins: dict[str, torch.Tensor] = {}
    for c, xc in conditions.items():
        for j, (name, model) in enumerate(models.items()):
            ok = run_batches(model, xc, f.eval_batch, s.seed + 100 + j).argmax(dim=1) == y
            correct[c][name] = ok
            accuracy[name][c] = 100 * float(ok.double().mean())
        margins[c] = margins_of(canon, xc, f.eval_batch)
    log("images: scored " + ", ".join(f"{n} {a['random angles']:.1f}%" for n, a in accuracy.items()))
    seconds = timings(models, conditions["random angles"][: f.eval_batch], s.repeats, s.seed + 200)
    low = {c: m < s.margin_threshold for c, m in margins.items()}
    margin_table = {c: {"share_below": 100 * float(low[c].double().mean()), "median": float(margins[c].median()),
                        "below": int(low[c].sum()),
                        "accuracy_below": {n: _share(correct[c][n][low[c]]) for n in models},
                        "accuracy_above": {n: _share(correct[c][n][~low[c]]) for n in models}}
                    for c in conditions}
    # continuity of the same trained model, in float64
    p64, c64 = doubled(predictor), doubled(canon)
    models64 = wrappers(p64, c64, None, top_k=(2, 4), samples=(4,), temperature=f.temperature,
                        averaged=("GroupAveraged", ec.GroupAveraged(p64, group)))
    probe = x[: max(f.symmetric, f.near_ties)]
    return {"accuracy": accuracy, "seconds": seconds, "margins": margin_table, "test_images": len(x),
            "continuity": continuity(f"trained C({f.rotations}) classifier", models64, p64, c64, None,
                                     image_inputs(c64, probe), s, log)}, probe


def _share(ok: torch.Tensor) -> float | None:
    """Percent of ``True`` in ``ok``; ``None`` if empty."""
    return 100 * float(ok.double().mean()) if len(ok) else None


def dense(s: Settings, probe: torch.Tensor, log: Callable[[str], None]) -> dict[str, Any]:
    """Continuity of a random C(4) canonicalizer before a random per-pixel network (float64), output turned back."""
    d = s.dense
    group = ec.C(4)
    torch.manual_seed(s.seed + 3)
    canon = ec.canonicalizers.GroupConv(group, in_channels=1, hidden=d.hidden).double().eval()
    net = nn.Sequential(nn.Conv2d(1, d.width, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(d.width, d.channels, 3, padding=1)).double().eval()
    output = ec.actions.Image(group)
    models = wrappers(net, canon, output, top_k=(2, 4), samples=(4,), temperature=1.0,
                      averaged=("GroupAveraged", ec.GroupAveraged(net, group, output=output)))
    return continuity("random C(4), dense output", models, net, canon, output, image_inputs(canon, probe), s, log)


def points(s: Settings, log: Callable[[str], None]) -> dict[str, Any]:
    """Continuity of a random VectorNeurons(SO3()) before a random PointEncoder classifier (float64)."""
    p = s.points
    torch.manual_seed(s.seed + 4)
    canon = ec.canonicalizers.VectorNeurons(ec.SO3(), hidden=p.hidden, layers=p.layers, vectors=p.vectors).double()
    net = ec.models.PointEncoder(3, p.classes, hidden=p.width).double()
    models = wrappers(net, canon.eval(), None, top_k=p.top_k, samples=(p.samples,), temperature=1.0,
                      averaged=("FrameAveraged", ec.FrameAveraged(net, ec.SO3())))
    models.update(haar(net, canon, None, p.samples))
    return continuity("random VectorNeurons(SO3), invariant output", models, net, canon, None,
                      regular_clouds(s.seed + 5), s, log)


def nbody(s: Settings, log: Callable[[str], None]) -> dict[str, Any]:
    """Part 2 and 3 for the n-body task, and the continuity of the trained model on symmetric systems (part 1)."""
    n = s.nbody
    start = time.perf_counter()
    xt, yt = make_nbody(n.train, generator=seeded(1))  # as experiments/nbody.py
    xv, yv = make_nbody(n.val, generator=seeded(2))
    group = ec.SE3()
    moves = group.sample(n.val, generator=seeded(3))
    conditions = {"as generated": (xv, yv),
                  "moved by SE(3)": (ec.actions.Particles(group)(moves, xv), ec.actions.Points(group)(moves, yv))}
    torch.manual_seed(s.seed)
    predictor = ec.models.NBodyTransformer(1, width=n.width, depth=n.depth, heads=n.heads)
    canon = ec.canonicalizers.create("particle_vector_neurons", group=group, features=1, hidden=n.hidden, layers=2,
                                     vectors=n.vectors)
    output = ec.actions.Points(group)
    steps = n.epochs * -(-n.train // n.batch_size)
    torch.manual_seed(s.seed)
    fit(ec.Canonicalized(predictor, canon, output), epochs(xt, yt, n.epochs, n.batch_size, seed=1), steps, lr=n.lr,
        task_loss="mse", transform=None)
    predictor.eval(), canon.eval()
    log(f"n-body: simulated {n.train} + {n.val} systems and trained {steps} steps in {time.perf_counter() - start:.0f} s")
    averaged = ec.FrameAveraged(predictor, group, input=ec.actions.Particles(group), output=output)
    models = {"predictor alone": deterministic(predictor),
              **wrappers(predictor, canon, output, top_k=n.top_k, samples=s.samples, temperature=n.temperature,
                         averaged=("FrameAveraged", averaged))}
    mse: dict[str, dict[str, float]] = {name: {} for name in models}
    errors: dict[str, dict[str, torch.Tensor]] = {c: {} for c in conditions}
    margins: dict[str, torch.Tensor] = {}
    sines: dict[str, torch.Tensor] = {}
    for c, (xc, yc) in conditions.items():
        for j, (name, model) in enumerate(models.items()):
            per_system = (run_batches(model, xc, n.eval_batch, s.seed + 300 + j) - yc).pow(2).mean(dim=(1, 2))
            errors[c][name] = per_system
            mse[name][c] = float(per_system.mean())
        margins[c] = margins_of(canon, xc, n.eval_batch)
        sines[c] = frame_sines(canon, xc, n.eval_batch)
    log("n-body: scored " + ", ".join(f"{name} {m['moved by SE(3)']:.4f}" for name, m in mse.items()))
    seconds = timings(models, conditions["moved by SE(3)"][0][: n.eval_batch], s.repeats, s.seed + 400)
    margin_table = {c: {"margin": below(margins[c], errors[c], s.margin_threshold),
                        "sine": below(sines[c], errors[c], s.margin_threshold)} for c in conditions}
    p64, c64 = doubled(predictor), doubled(canon)
    models64 = wrappers(p64, c64, output, top_k=n.top_k, samples=(n.samples,), temperature=n.temperature,
                        averaged=("FrameAveraged", ec.FrameAveraged(p64, group, input=ec.actions.Particles(group),
                                                                    output=output)))
    models64.update(haar(p64, c64, output, n.samples))
    return {"mse": mse, "seconds": seconds, "margins": margin_table, "val": n.val,
            "baseline_mse": {"constant positions": float(F.mse_loss(xv[..., :3], yv))},
            "continuity": continuity("trained n-body model", models64, p64, c64, output, particle_systems(xv[:4]),
                                     s, log)}


def below(measure: torch.Tensor, errors: dict[str, torch.Tensor], threshold: float) -> dict[str, Any]:
    """The share (%) and number of systems whose ``measure (N,)`` is below ``threshold``, its median, and each
    model's MSE on those systems and on the rest (``errors``: per-system squared errors ``(N,)`` per model)."""
    low = measure < threshold
    return {"share_below": 100 * float(low.double().mean()), "median": float(measure.median()), "below": int(low.sum()),
            "mse_below": {m: _mean(e[low]) for m, e in errors.items()},
            "mse_above": {m: _mean(e[~low]) for m, e in errors.items()}}


@torch.no_grad()
def frame_sines(canon: Canonicalizer, x: torch.Tensor, batch: int) -> torch.Tensor:
    """A scale-free check of the margin of vector neurons: ``|sin ∠(v₁, v₂)|`` of the two output vectors that fix
    the pose, ``(N,)`` for inputs ``x (N, *)`` (0: parallel, the pose undetermined; 1: orthogonal)."""
    parts = []
    for i in range(0, len(x), batch):
        v = canon(x[i:i + batch]).extras["vectors"].double()
        a, b = v[:, :, 0], v[:, :, 1]
        parts.append(torch.linalg.vector_norm(torch.cross(a, b, dim=1), dim=1)
                     / (torch.linalg.vector_norm(a, dim=1) * torch.linalg.vector_norm(b, dim=1)))
    return torch.cat(parts)


def _mean(values: torch.Tensor) -> float | None:
    return float(values.mean()) if len(values) else None


# --- report -------------------------------------------------------------------------------------------------

def continuity_table(title: str, result: dict[str, Any], eps: float) -> list[str]:
    """One markdown table: a row per input case, the largest change per model and its ratio to ``eps``."""
    names = list(next(iter(result.values()))["change"])
    lines = [f"{title}: largest ‖f(x₀+δ) − f(x₀)‖₂ over the perturbations, ‖δ‖₂ = {eps:g} (that change ÷ ‖δ‖₂ in "
             "brackets); margin: the hard canonicalizer's at x₀ (median over the inputs); orbit spread: the largest "
             "‖h ⋆ p(h⁻¹·x₀) − h' ⋆ p(h'⁻¹·x₀)‖₂ over poses h, h' (the size of a jump between poses)", "",
             "| input | inputs | margin | orbit spread | " + " | ".join(names) + " |", "|---" * (len(names) + 4) + "|"]
    for case, r in result.items():
        cells = [f"{r['change'][m]:.1e} ({r['ratio'][m]:.3g})" for m in names]
        lines.append(f"| {case} | {r['inputs']} | {r['margin']:.1e} | {r['orbit_spread']:.1e} | "
                     + " | ".join(cells) + " |")
    return lines


def cost_cells(seconds: dict[str, float], name: str) -> str:
    base = seconds["Canonicalized"]
    return f"{1000 * seconds[name]:.1f} ms | {seconds[name] / base:.2f}"


def tables(result: dict[str, Any], s: Settings) -> str:
    """Every table, as printed and as appended to docs/robustness.md."""
    im, nb = result["images"], result["nbody"]
    lines = [f"Fashion-MNIST, C({s.images.rotations}) canonicalizer + SmallCNN (the demo's recipe): accuracy (%) on "
             f"{im['test_images']} test images; time per batch of {s.images.eval_batch} at random angles "
             f"(median of {s.repeats}, interleaved) and its ratio to Canonicalized", "",
             "| model | upright | random quarter turns | random angles | time per batch | cost ratio |",
             "|---|---|---|---|---|---|"]
    for name, a in im["accuracy"].items():
        lines.append(f"| {name} | {a['upright']:.1f} | {a['quarter turns']:.1f} | {a['random angles']:.1f} | "
                     f"{cost_cells(im['seconds'], name)} |")
    lines += ["", f"Charged n-body, ParticleVectorNeurons(SE3(), vectors={s.nbody.vectors}) + transformer: MSE on "
              f"{nb['val']} test systems (constant-position baseline "
              f"{nb['baseline_mse']['constant positions']:.4f}); time per batch of {s.nbody.eval_batch} moved systems "
              f"(median of {s.repeats}, interleaved) and its ratio to Canonicalized", "",
              "| model | MSE, as generated | MSE, moved by SE(3) | time per batch | cost ratio |", "|---|---|---|---|---|"]
    for name, m in nb["mse"].items():
        lines.append(f"| {name} | {m['as generated']:.4f} | {m['moved by SE(3)']:.4f} | "
                     f"{cost_cells(nb['seconds'], name)} |")
    t = s.margin_threshold
    lines += ["", f"Margins on real data: the share of inputs with margin < {t:g}, and the score of the hard and the "
              "weighted (k=2) model on those inputs / on the rest", "",
              f"| canonicalizer | margin | data | share < {t:g} | median margin | hard on < {t:g} / rest | "
              f"weighted k=2 on < {t:g} / rest |", "|---|---|---|---|---|---|---|"]

    def pair(below: float | None, above: float | None, fmt: str) -> str:
        return " / ".join("–" if v is None else format(v, fmt) for v in (below, above))

    for c, m in im["margins"].items():
        lines.append(f"| C({s.images.rotations}) GroupConv (accuracy %) | gap of the two largest logits | {c} | "
                     f"{m['share_below']:.1f}% | {m['median']:.3g} | "
                     f"{pair(m['accuracy_below']['Canonicalized'], m['accuracy_above']['Canonicalized'], '.1f')} | "
                     f"{pair(m['accuracy_below']['Weighted k=2'], m['accuracy_above']['Weighted k=2'], '.1f')} |")
    for measure, what in (("margin", "smallest relative Gram–Schmidt residual"),
                          ("sine", "not the margin: \\|sin∠(v₁, v₂)\\| of the two vectors that fix the pose")):
        for c, both in nb["margins"].items():
            m = both[measure]
            lines.append(f"| ParticleVectorNeurons (MSE) | {what} | {c} | {m['share_below']:.1f}% | {m['median']:.3g} | "
                         f"{pair(m['mse_below']['Canonicalized'], m['mse_above']['Canonicalized'], '.4f')} | "
                         f"{pair(m['mse_below']['Weighted k=2'], m['mse_above']['Weighted k=2'], '.4f')} |")
    for title, key in ((f"Trained C({s.images.rotations}) classifier (logits)", ("images", "continuity")),
                       ("Random C(4) canonicalizer + random per-pixel network, scores turned back (dense output)",
                        ("dense",)),
                       (f"Random VectorNeurons(SO3(), vectors={s.points.vectors}) + random PointEncoder (logits); "
                        f"Symmetrized: {s.points.samples} draws from one seed", ("points",)),
                       (f"Trained n-body model (positions); Symmetrized: {s.nbody.samples} draws from one seed",
                        ("nbody", "continuity"))):
        part = result
        for k in key:
            part = part[k]
        lines += ["", *continuity_table(title, part, s.eps)]
    return "\n".join(lines)


def run(s: Settings, out: Path | None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """All three measurements; writes ``robustness.json`` to ``out``."""
    torch.set_num_threads(s.threads)
    start = time.perf_counter()
    result: dict[str, Any] = {}
    result["images"], probe = images(s, log)
    result["dense"] = dense(s, probe, log)
    result["points"] = points(s, log)
    result["nbody"] = nbody(s, log)
    table = tables(result, s)
    payload = {"config": asdict(s), **result, "table": table, "seconds": time.perf_counter() - start,
               "torch": torch.__version__, "threads": torch.get_num_threads()}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "robustness.json").write_text(json.dumps(payload, indent=1) + "\n")
    return payload


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The command line: the settings (``--help``), ``--quick``, ``--output-dir``; prints the tables."""
    settings = parse_settings(Settings, argv, config=CONFIG, output_dir=ROOT / "docs" / "robustness",
                              description=__doc__)
    result = run(settings.values, settings.output_dir)
    print()
    print(result["table"])
    print(f"\ntotal {result['seconds']:.0f} s" + ("" if settings.output_dir is None else
                                                 f"; wrote {settings.output_dir}/robustness.json"))
    return result


if __name__ == "__main__":
    raise SystemExit(run_script(main))
