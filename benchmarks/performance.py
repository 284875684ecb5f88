"""Performance of canonicalization next to the predictor it wraps, measured side by side in one process.

Five measurements, each a ratio of medians over interleaved rounds (a, b / b, a, ...) after a warm-up:

1. inference: ``Canonicalized(p, canon)`` over the bare predictor ``p``, where ``canon`` is the documented call
   ``GroupConv(C(8), in_channels, crop=0.8, resize=96)`` with every other argument at its default, for a small
   CNN (28 px), a ResNet-20 (32 px) and ResNet-50 (224 px), batch 8 and 64; target: at most +10% at 224 px;
2. ``GroupAveraged(p, C(8))`` (8 passes of ``p``) over ``Canonicalized``; target: at least 6x;
3. one training step (``equicanon.training.step``: forward, prior on the batch moved by random elements of C(8),
   backward, SGD step) canonicalized over bare;
4. ``Contrastive`` (EquiOptAdapt: a small CNN scores all 8 copies) over ``GroupConv`` for C(8), per image,
   and Contrastive's peak memory with and without ``inputs_per_call``;
5. ``VectorNeurons(SO3())`` and ``ParticleVectorNeurons(SE3())`` throughput (points/s), speed-up over the
   previous implementation (kept in ``tests/_vn_reference.py``; target at least 5x) and peak memory, 1k to 16k points;

plus what makes the canonicalizer cheap (the downscaled centre crop, equivariant pooling fused into the
convolutions, narrow layers, channels_last, torch.compile); and, with ``--only pose``, 6. that the fast default
loses no pose accuracy: canonicalizers trained with the prior on C(8)-moved copies of real Fashion-MNIST, the
default against the network used before, pose accuracy on held-out images at 0°, 45° and 90°, over 3 seeds.

Run: ``python benchmarks/performance.py`` (a few minutes on 2 CPU cores; ``--device cuda`` on a GPU;
``--quick`` for a seconds-long smoke run; ``--only inference,training`` for some sections;
``--only pose`` for the pose check, 45 minutes on 2 busy CPU cores). Prints markdown tables and, unless ``--quick``,
rewrites the generated parts of ``docs/benchmarks.md`` whose sections all ran (the timing tables, or the
pose table), ``docs/benchmarks/{performance,pose}.json`` and the plot ``docs/benchmarks/performance.png``
(needs matplotlib; skipped without it).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests._vn_reference
from _perf import Timing, interleaved, machine, peak_memory_mib, rss_rise_mib, sync
from tests import _vn_reference

import equicanon as ec
from equicanon.canonicalizers import Contrastive, GroupConv, ParticleVectorNeurons, VectorNeurons
from equicanon.canonicalizers.functional import all_transforms
from equicanon.canonicalizers.image import center_crop_resize
from equicanon.data import load_fashion_mnist
from equicanon.models import ConvEncoder, SmallCNN
from equicanon.training import fit, step

GROUP = ec.C(8)
BEGIN, END = "<!-- BEGIN GENERATED: benchmarks/performance.py -->", "<!-- END GENERATED -->"
ROOT = Path(__file__).resolve().parent.parent


def canonicalizer(in_channels: int, **overrides: object) -> GroupConv:
    """The benchmarked canonicalizer, the documented call: ``GroupConv(C(8), in_channels, crop=0.8, resize=96)``,
    every other argument at its default (``overrides`` change one for the ablation)."""
    kwargs: dict[str, object] = {"crop": 0.8, "resize": 96, **overrides}
    return GroupConv(GROUP, in_channels=in_channels, **kwargs)  # type: ignore[arg-type]


def previous_pooled(in_channels: int, **kwargs: object) -> GroupConv:
    """The pooled network ``adapt_pretrained`` used before the defaults changed (hidden 8, kernel 5, 3 layers):
    :class:`~equicanon.nn.EquivariantAvgPool2d` after batch norm and ReLU, before each group convolution,
    rather than fused into the convolution before them. Rebuilt from the library's layers for comparison."""
    canon = GroupConv(GROUP, in_channels=in_channels, pool=False, **kwargs)  # type: ignore[arg-type]
    blocks: list[nn.Module] = []
    for module in canon.net:
        if isinstance(module, ec.nn.GroupConv2d):
            blocks.append(ec.nn.EquivariantAvgPool2d())
        blocks.append(module)
    canon.net = nn.Sequential(*blocks)
    return canon


def predictors(quick: bool) -> list[tuple[str, Callable[[], nn.Module], tuple[int, int, int]]]:
    """(name, builder, input shape C x H x W); only the small CNN in ``--quick``."""
    ladder: list[tuple[str, Callable[[], nn.Module], tuple[int, int, int]]] = [
        ("small CNN", lambda: SmallCNN(10, 1, 32), (1, 28, 28)),
        ("ResNet-20", lambda: ec.models.resnet_small(10, 3), (3, 32, 32)),
        ("ResNet-50", lambda: ec.models.resnet50(), (3, 224, 224)),
    ]
    return ladder[:1] if quick else ladder


class Bench:
    """Settings shared by every measurement, and the collected rows."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.device = torch.device(args.device)
        self.quick = args.quick
        self.repeats = 3 if args.quick else args.repeats
        self.budget = 2.0 if args.quick else args.budget
        self.batches = (2,) if args.quick else (8, 64)
        self.subprocess = not args.quick  # peak memory in a fresh process (in this one for smoke runs)
        self.threads = torch.get_num_threads()
        self.results: dict[str, list[dict[str, object]]] = {}
        self.gen = torch.Generator().manual_seed(0)

    def inputs(self, batch: int, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.rand(batch, *shape, generator=self.gen).to(self.device)

    def time(self, fns: dict[str, Callable[[], object]]) -> Timing:
        return interleaved(fns, self.device, repeats=self.repeats, budget_s=self.budget)

    def add(self, table: str, row: dict[str, object]) -> None:
        self.results.setdefault(table, []).append(row)
        print(f"  {table}: " + ", ".join(f"{k}={v}" for k, v in row.items()), flush=True)


def ms(seconds: float) -> float:
    return round(1000 * seconds, 2)


# --- 1 and 2: inference, group averaging ---------------------------------------------------------------------


def inference(b: Bench) -> None:
    for name, build, shape in predictors(b.quick):
        pred = build().to(b.device).eval()
        canon = canonicalizer(shape[0]).to(b.device).eval()
        model = ec.Canonicalized(pred, canon).eval()
        averaged = ec.GroupAveraged(pred, GROUP).eval()
        for batch in b.batches:
            x = b.inputs(batch, shape)
            with torch.inference_mode():
                fns: dict[str, Callable[[], object]] = {"bare": partial(pred, x), "canonicalizer": partial(canon, x),
                                                        "canonicalized": partial(model, x)}
                t = b.time(fns)
                size = f"{shape[1]} px"
                b.add("inference", {"predictor": name, "input": size, "batch": batch, "bare_ms": ms(t.median("bare")),
                                    "canonicalizer_ms": ms(t.median("canonicalizer")),
                                    "canonicalized_ms": ms(t.median("canonicalized")),
                                    "ratio": round(t.ratio("canonicalized", "bare"), 3)})
                if batch == b.batches[0] or name != "ResNet-50":  # 8 ResNet-50 passes at batch 64: too slow on a CPU
                    t = b.time({"canonicalized": partial(model, x), "group_averaged": partial(averaged, x)})
                    b.add("group_averaged", {"predictor": name, "input": size, "batch": batch,
                                             "canonicalized_ms": ms(t.median("canonicalized")),
                                             "group_averaged_ms": ms(t.median("group_averaged")),
                                             "ratio": round(t.ratio("group_averaged", "canonicalized"), 2)})


# --- 3: training step ----------------------------------------------------------------------------------------


def _step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
          gen: torch.Generator) -> None:
    """One optimiser step of the library's training step: cross-entropy, plus for a canonicalized model the
    prior (weight 1) on the batch moved by random elements of C(8) (``transform="group"``, the default)."""
    opt.zero_grad(set_to_none=True)
    prior = 1.0 if isinstance(model, ec.Canonicalized) else 0.0
    step(model, (x, y), prior_weight=prior, generator=gen).loss.backward()
    opt.step()


def training(b: Bench) -> None:
    for name, build, shape in predictors(b.quick):
        batch = b.batches[0]
        bare = build().to(b.device).train()
        model = ec.Canonicalized(copy.deepcopy(bare), canonicalizer(shape[0])).to(b.device).train()
        opt_b = torch.optim.SGD(bare.parameters(), lr=1e-3)
        opt_c = torch.optim.SGD(model.parameters(), lr=1e-3)
        x = b.inputs(batch, shape)
        y = torch.randint(0, 10, (batch,), generator=b.gen).to(b.device)
        t = b.time({"bare": partial(_step, bare, opt_b, x, y, b.gen),
                    "canonicalized": partial(_step, model, opt_c, x, y, b.gen)})
        b.add("training", {"predictor": name, "canonicalizer": "GroupConv", "input": f"{shape[1]} px", "batch": batch,
                           "bare_ms": ms(t.median("bare")), "canonicalized_ms": ms(t.median("canonicalized")),
                           "ratio": round(t.ratio("canonicalized", "bare"), 3)})
        if name == "ResNet-50" or b.quick:  # Contrastive with its default network, in front of the large predictor
            model = ec.Canonicalized(copy.deepcopy(bare), _contrastive(channels=shape[0])).to(b.device).train()
            opt_c = torch.optim.SGD(model.parameters(), lr=1e-3)
            t = b.time({"bare": partial(_step, bare, opt_b, x, y, b.gen),
                        "canonicalized": partial(_step, model, opt_c, x, y, b.gen)})
            b.add("training", {"predictor": name, "canonicalizer": "Contrastive", "input": f"{shape[1]} px",
                               "batch": batch, "bare_ms": ms(t.median("bare")),
                               "canonicalized_ms": ms(t.median("canonicalized")),
                               "ratio": round(t.ratio("canonicalized", "bare"), 3)})


# --- 4: Contrastive against GroupConv ------------------------------------------------------------------------


def _contrastive(chunk: int | None = None, channels: int = 3) -> Contrastive:
    return Contrastive(GROUP, ConvEncoder(channels), crop=0.8, resize=96, inputs_per_call=chunk)


def contrastive(b: Bench, script: Path) -> None:
    size = 32 if b.quick else 224
    batch = b.batches[0]
    x = b.inputs(batch, (3, size, size))
    lc = canonicalizer(3).to(b.device).eval()
    opt = _contrastive().to(b.device).eval()
    with torch.inference_mode():
        t = b.time({"group_conv": lambda: lc(x), "contrastive": lambda: opt(x)})
    b.add("contrastive", {"input": f"{size} px", "batch": batch, "group_conv_ms_per_image": ms(t.median("group_conv") / batch),
                          "contrastive_ms_per_image": ms(t.median("contrastive") / batch),
                          "ratio": round(t.ratio("contrastive", "group_conv"), 2)})
    _contrastive_training(b, x)
    for chunk in (None, 1):
        spec = {"kind": "contrastive", "chunk": chunk, "batch": batch, "size": size, "device": str(b.device)}
        model = _contrastive(chunk).to(b.device).eval()
        peak = peak_memory_mib(partial(_no_grad, model, x), b.device, spec, script, b.threads, subprocess_=b.subprocess)
        b.add("contrastive_memory", {"inputs_per_call": str(chunk), "batch": batch, "input": f"{size} px",
                                     "peak_mib": round(peak, 1)})


def _canonicalizer_step(canon: Contrastive, opt: torch.optim.Optimizer, x: torch.Tensor) -> None:
    """Contrastive's own training step: forward in training mode, its prior plus a loss on the canonical form
    (so the straight-through gradient to the logits runs, as under a predictor's loss), backward, SGD step."""
    opt.zero_grad(set_to_none=True)
    result = canon(x)
    (canon.prior_loss(result) + result.canonical.square().mean()).backward()
    opt.step()


def _network_step(network: nn.Module, opt: torch.optim.Optimizer, views: torch.Tensor) -> None:
    """The scoring network alone: forward and backward on the |G| views of the batch, SGD step."""
    opt.zero_grad(set_to_none=True)
    network(views).square().mean().backward()
    opt.step()


def _contrastive_training(b: Bench, x: torch.Tensor) -> None:
    canon = _contrastive().to(b.device).train()
    opt = torch.optim.SGD(canon.parameters(), lr=1e-3)
    views = all_transforms(GROUP, canon.action, center_crop_resize(x, canon.crop, canon.resize)).flatten(0, 1)
    network = copy.deepcopy(canon.network).train()
    opt_n = torch.optim.SGD(network.parameters(), lr=1e-3)
    t = b.time({"contrastive": partial(_canonicalizer_step, canon, opt, x),
                "network": partial(_network_step, network, opt_n, views)})
    b.add("contrastive_training", {"input": f"{x.shape[-1]} px", "batch": len(x), "views": f"{len(views)} x "
                                   f"{views.shape[-1]} px", "network_ms": ms(t.median("network")),
                                   "contrastive_ms": ms(t.median("contrastive")),
                                   "ratio": round(t.ratio("contrastive", "network"), 3)})


def _no_grad(model: nn.Module, x: torch.Tensor) -> object:
    with torch.inference_mode():
        return model(x)


# --- 5: point clouds -----------------------------------------------------------------------------------------


def _point_models() -> dict[str, tuple[nn.Module, int]]:
    """The benchmarked point canonicalizers at their defaults, and the columns of their inputs."""
    torch.manual_seed(0)
    return {"VectorNeurons(SO3())": (VectorNeurons(ec.SO3()).eval(), 3),
            "ParticleVectorNeurons(SE3(), features=1)": (ParticleVectorNeurons(ec.SE3(), features=1).eval(), 7)}


def _point_input(batch: int, n: int, columns: int, device: torch.device) -> torch.Tensor:
    return torch.randn(batch, n, columns, generator=torch.Generator().manual_seed(n)).to(device)


def points(b: Bench, script: Path) -> None:
    """Each point canonicalizer against the plain implementation it replaced (``tests/_vn_reference.py``: edge
    features built as vectors, einsums over ``(..., C, 3)``, the 64 MiB k-NN blocks), same weights, interleaved."""
    sizes = (128, 256) if b.quick else (1024, 4096, 16384)
    batch = 2
    for name, (model, columns) in _point_models().items():
        model = model.to(b.device)
        plain = _vn_reference.vector_neurons if isinstance(model, VectorNeurons) else _vn_reference.particle_vector_neurons
        for n in sizes:
            x = _point_input(batch, n, columns, b.device)
            with torch.inference_mode():
                t = b.time({"fused": partial(model, x), "reference": partial(plain, model, x)})
            spec = {"kind": "points", "model": name, "n": n, "batch": batch, "device": str(b.device)}
            peak = peak_memory_mib(partial(_no_grad, model, x), b.device, spec, script, b.threads,
                                   subprocess_=b.subprocess)
            sec = t.median("fused")
            b.add("points", {"model": name, "points": n, "batch": batch, "ms": ms(sec),
                             "reference_ms": ms(t.median("reference")), "points_per_s": round(batch * n / sec),
                             "speedup": round(t.ratio("reference", "fused"), 2), "peak_mib": round(peak, 1)})


def peak_child(spec: dict[str, object]) -> None:
    """Child process of :func:`peak_memory_mib` on the CPU: build the workload, then report the peak-RSS rise of one call."""
    torch.manual_seed(0)
    device = torch.device(str(spec["device"]))
    if spec["kind"] == "points":
        model, columns = _point_models()[str(spec["model"])]
        x = _point_input(int(spec["batch"]), int(spec["n"]), columns, device)
    else:
        chunk = spec["chunk"]
        model = _contrastive(None if chunk is None else int(chunk)).eval()
        size = int(spec["size"])
        x = torch.rand(int(spec["batch"]), 3, size, size)
    print(json.dumps({"peak_mib": rss_rise_mib(lambda: _no_grad(model, x))}))


# --- making it fast: what each choice costs ----------------------------------------------------------------


def ablation(b: Bench, compile_: bool) -> None:
    """Canonicalizer variants and predictor memory formats against the bare ResNet-50 (batch 8, 224 px)."""
    size = 224
    batch = b.batches[0]
    x = b.inputs(batch, (3, size, size))
    x_cl = x.contiguous(memory_format=torch.channels_last)
    pred = ec.models.resnet50().to(b.device).eval()
    pred_cl = copy.deepcopy(pred).to(memory_format=torch.channels_last)
    variants: dict[str, nn.Module] = {
        "previous defaults (hidden 16, no pooling), whole 224 px input": canonicalizer(3, hidden=16, pool=False,
                                                                                        crop=None, resize=None),
        "previous defaults, crop 0.8 + resize 96 (the documented call before)": canonicalizer(3, hidden=16, pool=False),
        "hidden 8, crop 0.8 + resize 96, no pooling": canonicalizer(3, pool=False),
        "previous adapt_pretrained network (hidden 8, pooled before each group conv)": previous_pooled(3, crop=0.8,
                                                                                                       resize=96),
        "default, crop 0.8 + resize 96 (benchmarked: 96 -> 48 -> 24 px)": canonicalizer(3),
        "default, hidden 16": canonicalizer(3, hidden=16),
        "default, kernel_size 3": canonicalizer(3, kernel_size=3),
        "default, whole 224 px input (224 -> 112 -> 56 px)": canonicalizer(3, crop=None, resize=None),
    }
    fns: dict[str, Callable[[], object]] = {"ResNet-50 (bare, NCHW)": lambda: pred(x),
                                            "ResNet-50 (bare, channels_last)": lambda: pred_cl(x_cl)}
    for name, mod in variants.items():
        m = mod.to(b.device).eval()
        fns[name] = lambda m=m: m(x)
    poses = GROUP.sample(batch, generator=b.gen).to(b.device)
    image = ec.actions.Image(GROUP)
    fns["the canonical form alone (one C(8) move of the 224 px input)"] = lambda: image(poses, x)
    bench = canonicalizer(3).to(b.device).eval()
    fns["benchmarked canonicalizer, channels_last input"] = lambda: bench(x_cl)
    model_cl = ec.Canonicalized(pred_cl, bench).eval()
    fns["Canonicalized ResNet-50 (channels_last predictor)"] = lambda: model_cl(x_cl)
    notes: dict[str, str] = {}
    if compile_:
        compiled, seconds, error = _try_compile(bench, x)
        if compiled is not None:
            fns["benchmarked canonicalizer, torch.compile"] = lambda: compiled(x)
            notes["benchmarked canonicalizer, torch.compile"] = f"compile + first call {seconds:.0f} s"
        else:
            notes["torch.compile"] = f"failed after {seconds:.0f} s: {error}"
    with torch.inference_mode():
        t = b.time(fns)
    base = t.median("ResNet-50 (bare, NCHW)")
    for name in fns:
        b.add("ablation", {"variant": name, "batch": batch, "input": f"{size} px", "ms": ms(t.median(name)),
                           "vs_resnet50": round(t.median(name) / base, 3), "note": notes.get(name, "")})
    if "torch.compile" in notes:
        b.add("ablation", {"variant": "torch.compile", "batch": batch, "input": f"{size} px", "ms": float("nan"),
                           "vs_resnet50": float("nan"), "note": notes["torch.compile"]})


def _try_compile(module: nn.Module, x: torch.Tensor) -> tuple[Callable[[torch.Tensor], object] | None, float, str]:
    start = time.perf_counter()
    try:
        compiled = torch.compile(module)
        with torch.inference_mode():
            compiled(x)
        return compiled, time.perf_counter() - start, ""
    except Exception as e:  # any compiler failure is reported, not fatal
        return None, time.perf_counter() - start, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"


# --- 6: pose accuracy: the fast default against the network it replaces ------------------------------------


TIMING = ("inference", "training", "contrastive", "points", "ablation")
SECTIONS = (*TIMING, "pose")
#: generated blocks of docs/benchmarks.md: (sections, begin marker, json file); a run rewrites a block when it ran
#: all of its sections (``--quick`` skips the ablation)
BLOCKS = ((TIMING, BEGIN, "performance.json"),
          (("pose",), "<!-- BEGIN GENERATED: benchmarks/performance.py --only pose -->", "pose.json"))
POSE_ANGLES = {"0°": (0,), "45° (odd multiples)": (1, 3, 5, 7), "90° (90°, 180°, 270°)": (2, 4, 6)}


def _pose_accuracy(canon: GroupConv, x: torch.Tensor) -> dict[int, float]:
    """Share of upright images ``x`` moved by ``g`` whose pose is ``g``, for every element ``g`` of C(8)."""
    action = canon.action
    with torch.inference_mode():
        return {k: float((canon(action(torch.full((len(x),), k), x)).pose == k).float().mean())
                for k in range(GROUP.order)}


def pose(b: Bench) -> None:
    """Canonicalizers trained with the prior on C(8)-moved copies of upright Fashion-MNIST training images
    (``fit(canon, x, steps, prior_weight=1, transform="group")``), scored on held-out test images.

    Three views, each where the default network differs from the one used before: the 28-px images
    themselves (the default pools once, 28 → 14 → 14 px; before: the same layers unpooled, the demo's network),
    and Fashion-MNIST upscaled to 60 and 120 px with the 0.8 centre crop, so that the canonicalizer sees 48 px
    (the photo experiment's view; 48 → 24 → 12) or 96 px (the paper's view, the benchmarked one; 96 → 48 → 24);
    before: ``adapt_pretrained``'s pooled network (:func:`previous_pooled`). Views of at most 16 px (the demo's
    and experiment 1's) are not pooled: there the default is the network used before, layer for layer.
    """
    try:
        train_x, _ = load_fashion_mnist("train")
        test_x, _ = load_fashion_mnist("test")
    except ec.errors.DataNotFoundError as e:
        print(f"  pose accuracy skipped: {e}")
        return
    n_train, n_test, steps, seeds = (64, 16, 2, (0,)) if b.quick else (10000, 1000, 300, (0, 1, 2))
    batch_size = 4 if b.quick else 32
    unpooled = ("hidden 8, no pooling (the demo's network)", lambda crop: GroupConv(GROUP, 1, crop=crop, pool=False))
    pooled = ("previous pooled network (adapt_pretrained's: pool before each group conv)",
              lambda crop: previous_pooled(1, crop=crop))
    views = [(28, None, 28, unpooled), (60, 0.8, 48, pooled), (120, 0.8, 96, pooled)]
    for size, crop, view, (before, build_before) in views[1:2] if b.quick else views:
        def upscale(x: torch.Tensor, size: int = size) -> torch.Tensor:
            x = x[:, None].float() / 255
            return x if size == 28 else F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        xtr, xte = upscale(train_x[:n_train]), upscale(test_x[:n_test]).to(b.device)
        configs: dict[str, Callable[[], GroupConv]] = {
            before: partial(build_before, crop),
            "default": partial(GroupConv, GROUP, 1, crop=crop),
        }
        for name, build in configs.items():
            start = time.perf_counter()
            runs = []
            for seed in seeds:
                torch.manual_seed(seed)
                canon = build().to(b.device)
                fit(canon, xtr, steps, prior_weight=1.0, transform="group", batch_size=batch_size, seed=seed, lr=1e-3)
                runs.append(_pose_accuracy(canon, xte))
            where = f"Fashion-MNIST at {size} px" + (f", crop {crop}" if crop else "")
            row: dict[str, object] = {"view": f"{view} px ({where})", "canonicalizer": name, "steps": steps,
                                      "batch": batch_size, "seeds": len(seeds)}
            for label, ks in POSE_ANGLES.items():
                per_seed = [100 * sum(r[k] for k in ks) / len(ks) for r in runs]
                row[label] = f"{sum(per_seed) / len(per_seed):.1f} ({min(per_seed):.1f}-{max(per_seed):.1f})"
            row["train_s"] = round((time.perf_counter() - start) / len(seeds), 1)
            b.add("pose", row)


# --- report ----------------------------------------------------------------------------------------------------

COLUMNS: dict[str, list[tuple[str, str]]] = {
    "inference": [("predictor", "predictor"), ("input", "input"), ("batch", "batch"), ("bare_ms", "bare ms"),
                  ("canonicalizer_ms", "canonicalizer alone ms"), ("canonicalized_ms", "canonicalized ms"),
                  ("ratio", "canonicalized / bare")],
    "group_averaged": [("predictor", "predictor"), ("input", "input"), ("batch", "batch"),
                       ("canonicalized_ms", "canonicalized ms"), ("group_averaged_ms", "GroupAveraged ms"),
                       ("ratio", "GroupAveraged / canonicalized")],
    "training": [("predictor", "predictor"), ("canonicalizer", "canonicalizer"), ("input", "input"), ("batch", "batch"),
                 ("bare_ms", "bare step ms"),
                 ("canonicalized_ms", "canonicalized step ms"), ("ratio", "canonicalized / bare")],
    "contrastive": [("input", "input"), ("batch", "batch"), ("group_conv_ms_per_image", "GroupConv ms/image"),
                    ("contrastive_ms_per_image", "Contrastive ms/image"), ("ratio", "Contrastive / GroupConv")],
    "contrastive_training": [("input", "input"), ("batch", "batch"), ("views", "scored views"),
                             ("network_ms", "network fwd+bwd on the views ms"),
                             ("contrastive_ms", "Contrastive train step ms"), ("ratio", "Contrastive / network")],
    "contrastive_memory": [("inputs_per_call", "Contrastive inputs_per_call"), ("input", "input"), ("batch", "batch"),
                           ("peak_mib", "peak memory MiB")],
    "points": [("model", "canonicalizer"), ("points", "points per cloud"), ("batch", "batch"), ("ms", "ms per batch"),
               ("reference_ms", "previous implementation ms"), ("speedup", "speed-up"), ("points_per_s", "points/s"),
               ("peak_mib", "peak memory MiB")],
    "ablation": [("variant", "module"), ("input", "input"), ("batch", "batch"), ("ms", "ms"),
                 ("vs_resnet50", "/ bare ResNet-50 NCHW"), ("note", "note")],
    "pose": [("view", "canonicalizer's view"), ("canonicalizer", "canonicalizer"), ("steps", "steps"),
             ("batch", "batch"), ("seeds", "seeds")]
    + [(k, f"pose accuracy {k}, %") for k in POSE_ANGLES] + [("train_s", "training s per seed")],
}
TITLES = {
    "inference": "1. Inference: canonicalized over bare predictor (target at 224 px: at most 1.10)",
    "group_averaged": "2. GroupAveraged (|G| = 8) over canonicalized (target: at least 6)",
    "training": ("3. Training step (`equicanon.training.step`: forward, prior on the batch moved by random elements, "
                 "backward, SGD step): canonicalized over bare"),
    "contrastive": "4. Contrastive (EquiOptAdapt, ConvEncoder scorer) over GroupConv canonicalizer, C(8), per image",
    "contrastive_training": ("4a. Contrastive training step (forward, prior, a loss on the canonical form, backward, "
                             "SGD step) over its scoring network's forward + backward on the |G| views (target: at most 1.2)"),
    "contrastive_memory": "4b. Contrastive peak memory, inference, all copies at once vs one input's copies at a time",
    "points": "5. Point canonicalizers: throughput against the previous implementation, and peak memory",
    "ablation": "Making it fast: canonicalizer variants, channels_last and torch.compile (inference)",
    "pose": ("6. Pose accuracy, C(8): the canonicalizer trained with the prior on moved copies of Fashion-MNIST, "
             "scored on held-out images (mean over seeds, min-max in brackets)"),
}


def markdown(results: dict[str, list[dict[str, object]]]) -> str:
    out = []
    for key, cols in COLUMNS.items():
        rows = results.get(key)
        if not rows:
            continue
        out += [f"#### {TITLES[key]}", "", "| " + " | ".join(h for _, h in cols) + " |",
                "|" + "|".join("---" for _ in cols) + "|"]
        out += ["| " + " | ".join(str(r.get(k, "")) for k, _ in cols) + " |" for r in rows]
        out.append("")
    return "\n".join(out)


def header(info: dict[str, object], args: argparse.Namespace, wall: float, sections: tuple[str, ...]) -> str:
    where = info.get("gpu") if args.device.startswith("cuda") else info["cpu"]
    options = (" --device " + args.device if args.device != "cpu" else "") + (
        "" if sections == TIMING else " --only " + ",".join(sections))
    timing = " Times are medians over interleaved rounds after one warm-up; ratios are medians of per-round ratios."
    return (f"Measured on **{args.device}** ({where}), torch {info['torch']}, {info['threads']} threads "
            f"({info['cpu_count']} CPUs, load average before the run {info['load_average']}), "
            f"by `python benchmarks/performance.py{options}` in {wall:.0f} s."
            f"{timing if set(sections) & set(TIMING) else ''}\n")


def summary(results: dict[str, list[dict[str, object]]]) -> list[str]:
    lines = []
    big = [r for r in results.get("inference", []) if r["predictor"] == "ResNet-50"]
    if big:
        worst = max(float(r["ratio"]) for r in big)  # type: ignore[arg-type]
        lines.append(f"target 1 (inference, canonicalized / bare at {big[0]['input']} <= 1.05): worst {worst:.3f} "
                     f"-> {'met' if worst <= 1.05 else 'NOT met'}")
    train = [r for r in results.get("training", []) if r["predictor"] == "ResNet-50"]
    ga = [r for r in results.get("group_averaged", []) if r["predictor"] == "ResNet-50"]
    if ga:
        low = min(float(r["ratio"]) for r in ga)  # type: ignore[arg-type]
        lines.append(f"target 2 (GroupAveraged / canonicalized >= 6, ResNet-50): {low:.2f} -> {'met' if low >= 6 else 'NOT met'}")
    for r in train:  # the prior on moved copies included
        ratio = float(r["ratio"])  # type: ignore[arg-type]
        lines.append(f"target 1 (training step, {r['canonicalizer']} in front of ResNet-50 at {r['input']}, batch "
                     f"{r['batch']} <= 1.10): {ratio:.3f} -> {'met' if ratio <= 1.10 else 'NOT met'}")
    for r in results.get("contrastive_training", []):
        ratio = float(r["ratio"])  # type: ignore[arg-type]
        lines.append(f"target 2 (Contrastive training step / its network on the views <= 1.2): {ratio:.3f} "
                     f"-> {'met' if ratio <= 1.2 else 'NOT met'}")
    pts = results.get("points", [])
    for name in sorted({str(r["model"]) for r in pts}):
        low = min(float(r["speedup"]) for r in pts if r["model"] == name)  # type: ignore[arg-type]
        lines.append(f"target 5 ({name} >= 5x the previous implementation): lowest {low:.2f}x "
                     f"-> {'met' if low >= 5 else 'NOT met'}")
    return lines


def write(out_dir: Path, text: str, results: dict[str, object], begin: str, json_name: str) -> None:
    """Rewrite the block that starts with ``begin`` in ``out_dir/benchmarks.md`` (appended if absent) and
    ``out_dir/benchmarks/json_name``; the timing block also redraws the plot."""
    (out_dir / "benchmarks").mkdir(parents=True, exist_ok=True)
    (out_dir / "benchmarks" / json_name).write_text(json.dumps(results, indent=1) + "\n")
    doc = out_dir / "benchmarks.md"
    block = f"{begin}\n{text}\n{END}"
    old = doc.read_text() if doc.exists() else "# Performance benchmarks\n"
    if begin in old:
        at = old.index(begin)
        doc.write_text(old[:at] + block + old[old.index(END, at) + len(END):])
    else:
        doc.write_text(old.rstrip("\n") + f"\n\n{block}\n")
    if begin == BEGIN:
        plot(results, out_dir / "benchmarks" / "performance.png")


def plot(results: dict[str, object], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: no plot written to {path}")
        return
    tables = results["tables"]
    assert isinstance(tables, dict)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    bars = ((tables.get("inference", []), lambda r: 100 * (r["ratio"] - 1), "tab:blue", 10, "target +10%",
             "canonicalization overhead (%)", "1. inference overhead"),
            (tables.get("group_averaged", []), lambda r: r["ratio"], "tab:green", 6, "target 6x",
             "GroupAveraged time / canonicalized time", "2. |G| = 8 averaging vs canonicalization"))
    for ax, (rows, value, color, target, target_label, ylabel, title) in zip(axes[:2], bars, strict=True):
        ax.bar([f"{r['predictor']}\n{r['input']}, b{r['batch']}" for r in rows], [value(r) for r in rows], color=color)
        ax.axhline(target, color="tab:red", ls="--", label=target_label)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend()
        ax.tick_params(axis="x", labelsize=7)
    pts = tables.get("points", [])
    ax = axes[2]
    for name, color in zip(sorted({str(r["model"]) for r in pts}), ("tab:purple", "tab:orange"), strict=False):
        rows = [r for r in pts if r["model"] == name]
        ax.plot([r["points"] for r in rows], [r["speedup"] for r in rows], "o-", color=color, label=name)
    ax.axhline(5, color="tab:red", ls="--", label="target 5x")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("points per cloud")
    ax.set_ylabel("speed-up over the previous implementation")
    ax.legend(fontsize=7)
    ax.set_title("5. point canonicalizers")
    info = results["machine"]
    assert isinstance(info, dict)
    fig.suptitle(f"equicanon performance on {results['device']} ({info.get('gpu') or info['cpu']}, "
                 f"{info['threads']} threads)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes and few rounds: a smoke test of the script")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds per measurement (at least 3)")
    p.add_argument("--budget", type=float, default=25.0, help="seconds a measurement may take before rounds drop to 3")
    p.add_argument("--output-dir", type=Path, default=None,
                   help="write benchmarks.md, benchmarks/performance.{json,png} here (default: docs/, none with --quick)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurement")
    p.add_argument("--only", default=None, metavar="SECTIONS",
                   help=f"comma-separated sections to run, of {','.join(SECTIONS)} (default: the timing sections "
                        f"{','.join(TIMING)}; 'pose' trains canonicalizers, 45 minutes on 2 busy CPU cores). The "
                        "timing tables and the pose table are rewritten only by a run of all their sections")
    p.add_argument("--peak-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    only = TIMING if args.only is None else tuple(x.strip() for x in args.only.split(",") if x.strip())
    if unknown := [x for x in only if x not in SECTIONS]:
        p.error(f"--only: unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.peak_child is not None:
        peak_child(json.loads(args.peak_child))
        return 0
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here")
    info = machine()
    print(f"# equicanon performance  device={args.device}  " + "  ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    start = time.perf_counter()
    b = Bench(args)
    torch.manual_seed(0)
    script = Path(__file__).resolve()
    sections: dict[str, Callable[[Bench], None]] = {
        "inference": inference, "training": training, "contrastive": lambda b: contrastive(b, script),
        "points": lambda b: points(b, script), "ablation": lambda b: ablation(b, not args.no_compile), "pose": pose}
    for name in only:
        if name == "ablation" and args.quick:  # ResNet-50 variants: too slow for a smoke run
            continue
        sections[name](b)
        sync(b.device)
    wall = time.perf_counter() - start
    print("\n" + header(info, args, wall, only) + "\n" + markdown(b.results))
    for line in summary(b.results):
        print(line)
    out_dir = args.output_dir if args.output_dir is not None else (None if args.quick else ROOT / "docs")
    ran = set(only) | ({"ablation"} if args.quick else set())
    for sections_, begin, json_name in BLOCKS:
        if out_dir is None or not set(sections_) <= ran:
            continue
        results = {k: v for k, v in b.results.items() if (k == "pose") == (sections_ == ("pose",))}  # its tables
        text = header(info, args, wall, sections_) + "\n" + markdown(results)
        write(out_dir, text + "\n" + "".join(f"- {s}\n" for s in summary(results)), {
            "device": args.device, "machine": info, "wall_s": round(wall, 1), "quick": args.quick, "tables": results},
            begin, json_name)
        print(f"wrote {out_dir / 'benchmarks.md'} and {out_dir / 'benchmarks' / json_name}")
    print(f"total {wall:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
