"""Float32 conditioning of the 3-D canonicalizers on real molecules (QM9) and on point clouds.

Two measurements (issue 17, item 5):

1. **Canonical-form error in float32.** Each canonicalizer at random initialisation (eval mode, float32) canonicalizes
   every molecule ``x`` and ``g·x`` for a random rotation ``g`` (Haar; plus a translation for SE3/E3: standard
   normal, and of length ``translation`` Å in a random direction). ``g·x`` is computed in float64 and rounded to
   float32 once, as a user's data would be. The error of a molecule is ``max_i |x̄(g·x)_i − x̄(x)_i|`` over its
   atoms (positions only), divided by its RMS radius about the centroid. The table gives the median, 99th and
   99.9th percentiles, the maximum and the share above 1e-4, over all molecules and over those without a
   rotational symmetry; the same shares for the same weights in float64 given the same float32 inputs (a
   float64 canonicalizer for float32 data, ``canonicalizer.double()``); and the share above 1e-4 with float64
   inputs too (``g·x`` not rounded: the network's own conditioning). ``VectorNeurons(SO3()/O3())``
   see the positions ``(B, N, 3)`` (rotations about the origin, the files' coordinates), ``ParticleVectorNeurons
   (SE3()/E3())`` the particles ``(B, N, 7)``: positions, zero velocities, the atomic number.

2. **Noise stability of a trained canonicalizer.** ``ParticleVectorNeurons(SE3())`` behind a plain
   ``PointEncoder`` is trained by ``equicanon.training.fit`` (MSE on a standardised QM9 property, random SE(3)
   moves of every batch, ``steps`` Adam steps); then every molecule's pose is compared with the pose of the
   molecule with Gaussian noise of ``noise`` Å on every coordinate (float32, eval mode). The table gives the
   share of molecules whose pose turns by more than ``angle`` degrees, split by rotational symmetry; once per
   weight of the conditioning regularizer (``conditioning_weights``, ``ParticleVectorNeurons(conditioning_weight=
   ...)``, which pushes the frame's relative Gram–Schmidt residuals of the training molecules above
   ``conditioning_margin``).

A molecule *has a rotational symmetry* when a proper rotation other than the identity (C_n, n = 2..6, about its
charge-weighted principal axes, or C_2/C_3 about an axis through an atom) maps every atom within
``symmetry_tolerance`` Å of an atom of the same element. No canonicalization that is invariant to the order of the
atoms can give such a molecule an equivariant pose (``g·x`` is ``x`` with its atoms permuted), so its canonical form
moves by up to its radius however the arithmetic is done; the split shows how much of the tail that is.

Molecules: the ``atoms``-atom molecules of the first CSV file of the PyPI package ``qm9pack`` (6,092 of 18 atoms;
``pip install qm9pack``). Point clouds: ``equicanon.data.make_pointclouds`` (procedural shapes, centred).

    python experiments/qm9_float32.py                 # ~6 min on 1 CPU thread
    python experiments/qm9_float32.py --steps 300     # any setting (configs/experiments/qm9_float32.yaml)
    python experiments/qm9_float32.py --quick         # seconds
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

import equicanon as ec
from equicanon.data.molecules import load_qm9
from equicanon.data.pointclouds import make_pointclouds
from equicanon.settings import parse_settings, run_script
from equicanon.training import fit

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "experiments" / "qm9_float32.yaml"
_F64 = torch.float64


@dataclass
class Settings:
    """Settings of the float32 conditioning measurement.

    Args:
        atoms: keep the molecules with exactly this many atoms.
        limit: at most this many molecules (null: all of them).
        translation: length (Å) of the large translations of SE3/E3.
        clouds: procedural point clouds (seed 1) for the same measurement (0: none).
        points: points per cloud.
        hidden: vector channels of every canonicalizer.
        smoothing: ParticleVectorNeurons' gate smoothing (null: its default).
        layers: their VN blocks.
        k: neighbours of VectorNeurons' edge layer.
        batch: molecules per forward pass.
        target: the QM9 property the trained canonicalizer's predictor regresses (standardised).
        steps: Adam steps of the training (0: skip the noise measurement).
        train_batch: molecules per step.
        lr: Adam learning rate.
        width: width of the predictor (equicanon.models.PointEncoder).
        noise: standard deviation (Å) of the noise on every coordinate.
        angle: degrees; a pose that turns by more moved.
        symmetry_tolerance: Å; see the module's docstring.
        seed: seeds the weights, the moves and the noise.
        threads: torch threads.
        float32: run measurement 1 (the float32 conditioning); ``false``: the noise stability alone.
        conditioning_weights: measurement 2 trains one canonicalizer per weight of ParticleVectorNeurons'
            conditioning regularizer (``conditioning_weight``; 0: none), with ``conditioning_margin``.
        conditioning_margin: the regularizer's margin on the relative Gram–Schmidt residuals.
    """

    atoms: int
    limit: int | None
    translation: float
    clouds: int
    points: int
    hidden: int
    smoothing: float | None
    layers: int
    k: int
    batch: int
    target: str
    steps: int
    train_batch: int
    lr: float
    width: int
    noise: float
    angle: float
    symmetry_tolerance: float
    seed: int
    threads: int
    float32: bool = True
    conditioning_weights: list[float] = field(default_factory=lambda: [0.0, 1.0])
    conditioning_margin: float = 0.1


# --------------------------------------------------------------------------------------------- symmetry

def _axis_rotations(axes: torch.Tensor, n: int) -> torch.Tensor:
    """Rotations ``(M, 3, 3)`` by ``2π/n`` about the unit ``axes (M, 3)`` (Rodrigues)."""
    a = axes / axes.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    k = torch.zeros(*a.shape[:-1], 3, 3, dtype=a.dtype)
    k[..., 0, 1], k[..., 0, 2], k[..., 1, 2] = -a[..., 2], a[..., 1], -a[..., 0]
    k = k - k.transpose(-1, -2)
    theta = 2 * math.pi / n
    return torch.eye(3, dtype=a.dtype) + math.sin(theta) * k + (1 - math.cos(theta)) * (k @ k)


def symmetry_deviation(positions: torch.Tensor, numbers: torch.Tensor) -> torch.Tensor:
    """``(M,)`` Å: the smallest, over candidate proper rotations ``S ≠ I`` about the centroid, of the largest distance
    from an atom's image ``S r_i`` to the nearest atom of its element; small for molecules with a rotational
    symmetry. Candidates: ``C_n`` (n = 2..6) about the charge-weighted principal axes, ``C_2``/``C_3`` about each
    axis from the centroid through an atom (spherical tops, whose principal axes are not fixed)."""
    r = positions.to(_F64) - positions.to(_F64).mean(dim=1, keepdim=True)
    w = numbers.to(_F64)
    _, principal = torch.linalg.eigh(torch.einsum("mn,mni,mnj->mij", w, r, r))  # columns: axes
    same = numbers[:, :, None] == numbers[:, None, :]
    best = torch.full(r.shape[:1], math.inf, dtype=_F64)
    candidates = [(principal[:, :, j], n) for j in range(3) for n in range(2, 7)]
    candidates += [(r[:, i], n) for i in range(r.shape[1]) for n in (2, 3)]
    for axis, n in candidates:
        moved = r @ _axis_rotations(axis, n).transpose(1, 2)
        distance = torch.where(same, torch.cdist(moved, r), torch.full_like(same, math.inf, dtype=_F64))
        deviation = distance.amin(dim=2).amax(dim=1)
        best = torch.where(axis.norm(dim=-1) > 1e-6, torch.minimum(best, deviation), best)
    return best


# --------------------------------------------------------------------------------------------- measurements

def _canonical(canon: nn.Module, x: torch.Tensor, dtype: torch.dtype, batch: int) -> torch.Tensor:
    """Canonical positions ``(M, N, 3)`` (float64) of ``x`` cast to ``dtype``, ``batch`` at a time (in the network's
    own dtype, which may be more precise)."""
    with torch.no_grad():
        return torch.cat([canon(x[i:i + batch].to(dtype)).canonical[..., :3].to(_F64)
                          for i in range(0, len(x), batch)])


def _poses(canon: nn.Module, x: torch.Tensor, dtype: torch.dtype, batch: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([canon(x[i:i + batch].to(dtype)).pose.to(_F64) for i in range(0, len(x), batch)])


def summary(errors: torch.Tensor) -> dict[str, float]:
    """Median, 99th and 99.9th percentiles, maximum and the share (%) above 1e-4 of ``errors (M,)``."""
    if errors.numel() == 0:
        return {}
    q = torch.quantile(errors.to(_F64), torch.tensor([0.5, 0.99, 0.999], dtype=_F64))
    return {"median": float(q[0]), "p99": float(q[1]), "p99.9": float(q[2]), "max": float(errors.max()),
            "share_above_1e-4": 100 * float((errors > 1e-4).to(_F64).mean()), "count": int(errors.numel())}


def canonical_errors(canon: nn.Module, x: torch.Tensor, moved: torch.Tensor, radius: torch.Tensor, dtype: torch.dtype,
                     batch: int, network: torch.dtype | None = None) -> torch.Tensor:
    """``max_i |x̄(g·x)_i − x̄(x)_i| / radius`` per sample, both given in ``dtype`` to the canonicalizer in
    ``network`` (default: ``dtype``)."""
    canon = canon.to(dtype if network is None else network)
    error = (_canonical(canon, moved, dtype, batch) - _canonical(canon, x, dtype, batch)).norm(dim=-1).amax(dim=1)
    return error / radius


def _fmt(v: float) -> str:
    return f"{v:.1e}"


def _share(d: dict[str, float]) -> str:
    return f"{d.get('share_above_1e-4', math.nan):.2f}%"


def _row(name: str, case: str, all_: dict[str, float], asym: dict[str, float], f64: dict[str, float],
         mixed: dict[str, float], mixed_asym: dict[str, float]) -> str:
    keys = ("median", "p99", "p99.9", "max")
    return (f"| {name} | {case} | " + " | ".join(_fmt(all_[k]) for k in keys)
            + f" | {_share(all_)} | {_share(asym)} | {_share(mixed)} | {_share(mixed_asym)} | "
            + f"{_fmt(mixed.get('median', math.nan))} | {_share(f64)} |")


def _particles(s: Settings, group: ec.groups.Group, conditioning_weight: float = 0.0) -> nn.Module:
    """``ParticleVectorNeurons(group, 1)`` of the settings (``smoothing`` and the conditioning regularizer passed
    only when set, so the script also runs against versions without them)."""
    extra: dict[str, float] = {} if s.smoothing is None else {"smoothing": s.smoothing}
    if conditioning_weight > 0:
        extra.update(conditioning_weight=conditioning_weight, conditioning_margin=s.conditioning_margin)
    return ec.canonicalizers.ParticleVectorNeurons(group, 1, hidden=s.hidden, layers=s.layers, **extra)


def conditioning(s: Settings, data: dict[str, torch.Tensor], asymmetric: torch.Tensor, what: str,
                 results: dict[str, object]) -> None:
    """Table rows of measurement 1 for the four canonicalizers on ``data`` (positions, features, radius)."""
    pos, feature, radius = data["positions"], data["feature"], data["radius"]
    m = len(pos)
    gen = torch.Generator().manual_seed(s.seed + 1)
    rotations = ec.SO3().sample(m, generator=gen, dtype=_F64)
    normal = torch.randn(m, 3, generator=gen, dtype=_F64)
    far = torch.randn(m, 3, generator=gen, dtype=_F64)
    far = s.translation * far / far.norm(dim=-1, keepdim=True)
    makers: list[tuple[str, Callable[[], nn.Module]]] = [
        ("VectorNeurons(SO3)", lambda: ec.canonicalizers.VectorNeurons(ec.SO3(), hidden=s.hidden, layers=s.layers, k=s.k)),
        ("VectorNeurons(O3)", lambda: ec.canonicalizers.VectorNeurons(ec.O3(), hidden=s.hidden, layers=s.layers, k=s.k)),
        ("ParticleVectorNeurons(SE3)", lambda: _particles(s, ec.SE3())),
        ("ParticleVectorNeurons(E3)", lambda: _particles(s, ec.E3())),
        ("principal axes (not learned)", PrincipalAxes),
    ]
    for name, make in makers:
        torch.manual_seed(s.seed)
        canon = make().eval()
        if isinstance(getattr(canon, "action", None), ec.actions.Points):
            x = pos
            cases = [("rotation", x @ rotations.transpose(1, 2))]
        else:
            x = torch.cat([pos, torch.zeros_like(pos), feature[..., None]], dim=-1)
            particles, group = ec.actions.Particles(ec.SE3()), ec.SE3()
            cases = [("rotation + N(0,1) translation", particles(group.from_parts(rotations, normal), x)),
                     (f"rotation + {s.translation:g} Å translation", particles(group.from_parts(rotations, far), x))]
        for case, moved in cases:
            e32 = canonical_errors(canon, x, moved, radius, torch.float32, s.batch)
            e64 = canonical_errors(canon, x, moved, radius, _F64, s.batch)
            mixed = canonical_errors(canon, x, moved, radius, torch.float32, s.batch, network=_F64)
            all_, asym, f64 = summary(e32), summary(e32[asymmetric]), summary(e64)
            results[f"{what}: {name}: {case}"] = {
                "float32": all_, "float32_asymmetric": asym, "float64": f64,
                "float32_data_float64_network": summary(mixed),
                "float32_data_float64_network_asymmetric": summary(mixed[asymmetric])}
            print(_row(name, case, all_, asym, f64, summary(mixed), summary(mixed[asymmetric])), flush=True)


class PrincipalAxes(nn.Module):
    """A frame that is not learned, for comparison: the principal axes of the centred positions (float64), their
    signs from the third moments along them, the first axis completed by a cross product (a rotation). Takes
    particles ``(B, N, 7)``; returns an object with ``canonical`` (positions ``(B, N, 3)``) like a
    canonicalizer's result."""

    @dataclass
    class Result:
        canonical: torch.Tensor

    def forward(self, x: torch.Tensor) -> PrincipalAxes.Result:
        rel = x[..., :3].to(_F64) - x[..., :3].to(_F64).mean(dim=1, keepdim=True)
        _, axes = torch.linalg.eigh(rel.transpose(1, 2) @ rel)
        axes = axes * torch.sign(((rel @ axes) ** 3).sum(dim=1))[:, None, :]
        axes = torch.cat([torch.linalg.cross(axes[..., 1], axes[..., 2])[..., None], axes[..., 1:]], dim=-1)
        return PrincipalAxes.Result((rel @ axes).to(x.dtype))


def _angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Degrees between rotations ``a, b (M, 3, 3)``."""
    cos = (((a.transpose(1, 2) @ b).diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)
    return torch.rad2deg(torch.arccos(cos))


def noise_stability(s: Settings, mols: dict[str, torch.Tensor], asymmetric: torch.Tensor,
                    results: dict[str, object]) -> None:
    """Measurement 2: train ParticleVectorNeurons(SE3) + PointEncoder (once per conditioning weight), then the share
    of poses moved by noise."""
    pos, feature, y = mols["positions"], mols["feature"], mols["target"]
    x = torch.cat([pos, torch.zeros_like(pos), feature[..., None]], dim=-1)
    n_test = max(1, len(x) // 5)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(s.seed))
    train, test = order[n_test:], order[:n_test]
    mean, std = y[train].mean(), y[train].std().clamp_min(1e-12)
    target = ((y - mean) / std).to(torch.float32)[:, None]
    noisy = x.clone()
    noisy[..., :3] += s.noise * torch.randn(pos.shape, generator=torch.Generator().manual_seed(s.seed + 2), dtype=_F64)
    split = {"all": torch.ones_like(asymmetric), "no rotational symmetry": asymmetric, "rotational symmetry": ~asymmetric}
    for weight in s.conditioning_weights:
        torch.manual_seed(s.seed)
        canon = _particles(s, ec.SE3(), conditioning_weight=weight)
        model = ec.Canonicalized(ec.models.PointEncoder(7, 1, s.width), canon)
        start = time.perf_counter()
        logs = fit(model, (x[train].float(), target[train]), s.steps, lr=s.lr, batch_size=s.train_batch, seed=s.seed,
                   task_loss="mse")
        seconds = time.perf_counter() - start
        model.eval()
        with torch.no_grad():
            mse = float(((model(x[test].float()) - target[test]) ** 2).mean())
        before = _poses(canon, x, torch.float32, s.batch)[:, :3, :3]
        after = _poses(canon, noisy, torch.float32, s.batch)[:, :3, :3]
        turned = _angle(before, after)
        moved = turned > s.angle
        record: dict[str, object] = {"steps": s.steps, "seconds": seconds, "test_mse_standardised": mse,
                                     "conditioning_weight": weight, "conditioning_margin": s.conditioning_margin,
                                     "final_train_loss": logs[-1]["loss"] if logs else math.nan}
        print(f"\nconditioning weight {weight:g}: trained {s.steps} steps in {seconds:.0f} s; test MSE of the "
              f"standardised {s.target}: {mse:.3f} (1.0 = predicting the mean)\n")
        print(f"| molecules | count | pose moved > {s.angle:g}° under {s.noise:g} Å noise | median turn |\n"
              "|---|---|---|---|")
        for name, keep in split.items():
            count = int(keep.sum())
            share = 100 * float(moved[keep].to(_F64).mean()) if count else math.nan
            median = float(turned[keep].median()) if count else math.nan
            record[name] = {"count": count, "share_moved": share, "median_degrees": median}
            print(f"| {name} | {count} | {share:.2f}% | {median:.2e}° |")
        key = "noise stability: ParticleVectorNeurons(SE3)" + ("" if weight == 0 else f", conditioning {weight:g}")
        results[key] = record


def _radius(pos: torch.Tensor) -> torch.Tensor:
    rel = pos - pos.mean(dim=1, keepdim=True)
    return rel.norm(dim=-1).pow(2).mean(dim=1).sqrt()


def main(argv: Sequence[str] | None = None) -> None:
    """The command line: the settings (``--help``), ``--quick``; prints the tables."""
    parsed = parse_settings(Settings, argv, config=CONFIG, description=__doc__)
    s = parsed.values
    torch.set_num_threads(s.threads)
    start = time.perf_counter()
    qm9 = load_qm9(s.atoms, properties=(s.target,), limit=s.limit)
    pos = qm9.positions
    deviation = symmetry_deviation(pos, qm9.numbers)
    asymmetric = deviation > s.symmetry_tolerance
    mols = {"positions": pos, "feature": qm9.numbers.to(_F64), "radius": _radius(pos),
            "target": qm9.properties[s.target]}
    print(f"QM9: {len(pos)} molecules of {s.atoms} atoms (qm9pack, part 1), read in {time.perf_counter() - start:.0f} s; "
          f"median RMS radius {float(mols['radius'].median()):.2f} Å; "
          f"{int((~asymmetric).sum())} with a rotational symmetry within {s.symmetry_tolerance:g} Å; "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    results: dict[str, object] = {"settings": asdict(s), "molecules": len(pos),
                                  "with_rotational_symmetry": int((~asymmetric).sum())}
    header = ("| canonicalizer | move | median | p99 | p99.9 | max | float32 > 1e-4 | same, no rot. symmetry | "
              "float64 network > 1e-4 | same, no rot. symmetry | its median | float64 data > 1e-4 |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|---|")
    if s.float32:
        print("\nfloat32 canonical-form error / RMS radius, QM9 molecules, random initialisation\n\n" + header)
        conditioning(s, mols, asymmetric, "qm9", results)
    if s.float32 and s.clouds > 0:
        clouds, _ = make_pointclouds(s.clouds, s.points, generator=torch.Generator().manual_seed(1), rotate=None)
        clouds = clouds.to(_F64)
        cloud_data = {"positions": clouds, "feature": torch.ones(clouds.shape[:2], dtype=_F64),
                      "radius": _radius(clouds)}
        everything = torch.ones(len(clouds), dtype=torch.bool)
        print(f"\nthe same on {s.clouds} procedural point clouds of {s.points} points (feature 1 for the particles)\n\n"
              + header)
        conditioning(s, cloud_data, everything, "clouds", results)
    if s.steps > 0:
        noise_stability(s, mols, asymmetric, results)
    print(f"\n{time.perf_counter() - start:.0f} s in all")
    if parsed.output_dir is not None:
        parsed.output_dir.mkdir(parents=True, exist_ok=True)
        (parsed.output_dir / "qm9_float32.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    raise SystemExit(run_script(main))
