"""Pose agreement of image canonicalizers at exact and interpolated angles.

For a canonicalizer ``h`` and a rotation ``g``, the pose agrees when
``h(g·x) == g h(x)``. Quarter turns are exact index operations, so agreement
there must be 100%; at other angles (45° for C(8), 22.5° for C(16)) the filters
and the input are interpolated and agreement is measured on real images:
Fashion-MNIST test images (zero-padded so that rotations cut nothing off), at random initialisation and after training the
canonicalizer with the prior alone on upright training images.

Run: python benchmarks/pose_agreement.py [--images 300] [--steps 100]   (about 10 minutes on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import math
import time

import torch

import equicanon as ec
from equicanon.canonicalizers import GroupConv
from equicanon.data import load_fashion_mnist


def agreement(canon: GroupConv, x: torch.Tensor, batch: int = 250) -> dict[int, float]:
    """Share of images with ``pose(g·x) == g pose(x)``, for each element ``g`` of the canonicalizer's group."""
    group = canon.group
    act = ec.actions.Image(group)
    hits = torch.zeros(group.order)
    with torch.no_grad():
        for start in range(0, len(x), batch):
            xb = x[start:start + batch]
            pose = canon(xb).pose
            for k in range(group.order):
                g = torch.full((len(xb),), k)
                hits[k] += (canon(act(g, xb)).pose == group.compose(g, pose)).sum()
    return {k: float(hits[k]) / len(x) for k in range(group.order)}


def angle_error(canon: GroupConv, x: torch.Tensor, generator: torch.Generator) -> float:
    """Mean |angle(h(g·x)) - angle(g h(x))| in degrees over random angles g (SO(2) canonicalizers)."""
    so2 = canon.group
    g = so2.sample(len(x), generator=generator)
    with torch.no_grad():
        lhs = canon(ec.actions.Image(so2)(g, x)).pose
        rhs = so2.compose(g, canon(x).pose)
    diff = so2.angle(so2.compose(so2.inverse(rhs), lhs))
    return float(diff.abs().mean()) * 180 / math.pi


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


def train_prior(canon: GroupConv, x: torch.Tensor, steps: int, generator: torch.Generator) -> None:
    """Adam on the prior loss alone, upright images (Mondal et al.'s prior), batch 64."""
    opt = torch.optim.Adam(canon.parameters(), lr=1e-3)
    canon.train()
    for _ in range(steps):
        idx = torch.randint(len(x), (64,), generator=generator)
        loss = canon.prior_loss(canon(x[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    canon.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300, help="test images to evaluate on")
    parser.add_argument("--steps", type=int, default=100, help="prior-training steps (0: random init only)")
    parser.add_argument("--pad", type=int, default=41,
                        help="zero-pad images to this size so rotations cut nothing off (28: no padding)")
    parser.add_argument("--hidden", type=int, default=8, help="channels per group element")
    parser.add_argument("--filters", default="auto", choices=["auto", "free", "steerable"],
                        help="filter kind of the canonicalizers (auto: steerable for C(8), C(16))")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    test_x, _ = load_fashion_mnist("test")
    train_x, _ = load_fashion_mnist("train")
    margin = (args.pad - 28) // 2
    pad = (margin, args.pad - 28 - margin) * 2
    test_x = torch.nn.functional.pad(test_x[: args.images, None].float() / 255, pad)
    train_x = torch.nn.functional.pad(train_x[:10000, None].float() / 255, pad)

    print(f"Fashion-MNIST, {len(test_x)} test images zero-padded to {args.pad}x{args.pad}, "
          f"hidden={args.hidden}, filters={args.filters}, torch {torch.__version__}, {torch.get_num_threads()} threads\n")
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
        canon = GroupConv(ec.C(n), in_channels=1, hidden=args.hidden, layers=3, kernel_size=5,
                          filters=args.filters).eval()
        for state in ("random init", f"prior, {args.steps} steps"):
            if state != "random init":
                if args.steps == 0:
                    continue
                t0 = time.perf_counter()
                train_prior(canon, train_x, args.steps, gen)
                state += f" ({time.perf_counter() - t0:.0f} s)"
            agree = agreement(canon, test_x)
            quarter = [v for k, v in agree.items() if (4 * k) % n == 0]
            other = {k: v for k, v in agree.items() if (4 * k) % n != 0}
            worst = min(other, key=other.get)
            print(f"| GroupConv(C({n})) | {state} | {100 * min(quarter):.1f}% (min) | "
                  f"{100 * sum(other.values()) / len(other):.1f}% (mean) | "
                  f"{360 * worst / n:g}°: {100 * other[worst]:.1f}% |")
    for n in (8, 16):
        canon = GroupConv(ec.SO2(), in_channels=1, hidden=args.hidden, layers=3, kernel_size=5, rotations=n,
                          filters=args.filters).eval()
        err = angle_error(canon, test_x, gen)
        print(f"| GroupConv(SO2(), rotations={n}) | random init | — | mean pose error {err:.2f}° at random angles | — |")


if __name__ == "__main__":
    main()
