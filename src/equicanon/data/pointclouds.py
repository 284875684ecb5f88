"""Procedural 3-D point clouds for rotation-invariant classification; generated, nothing is read or downloaded.

Ten shape classes (:data:`POINTCLOUD_CLASSES`), each drawn with random size and aspect
parameters, so a class has to be told from its shape, not its scale:

    >>> gen = torch.Generator().manual_seed(0)
    >>> x, y = make_pointclouds(64, 128, generator=gen)          # (64, 128, 3) float32, (64,) int64
    >>> upright, _ = make_pointclouds(64, 128, generator=torch.Generator().manual_seed(0), rotate=None)

With the same seed, ``x`` is ``upright`` moved by one uniformly random rotation per cloud:
the rotations are drawn after the shapes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from ..actions import Points
from ..errors import ConfigError, check_choice, check_number, check_positive_int
from ..groups import O3, SO2, Group
from .rotate import rotation_group

__all__ = ["POINTCLOUD_CLASSES", "POINTCLOUD_ROTATIONS", "make_pointclouds", "random_rotations", "rotate_clouds",
           "cloud_rotations", "check_classes"]

#: the ``rotate`` values of point clouds, besides ``None`` (upright): group names
POINTCLOUD_ROTATIONS = ("SO3", "O3", "SO2", "Octahedral")
_ROTATIONS_TEXT = ("'SO3' (uniform rotations), 'O3' (rotations and reflections), 'SO2' (rotations about the z axis), "
                   "'Octahedral' (the cube's 24 rotations) or null (upright)")

_Sampler = Callable[[torch.Generator, int, int], torch.Tensor]
_F64 = torch.float64


# random numbers ---------------------------------------------------------------------------------------

def _uniform(gen: torch.Generator, *shape: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    return low + (high - low) * torch.rand(*shape, generator=gen, dtype=_F64)


def _param(gen: torch.Generator, m: int, low: float, high: float) -> torch.Tensor:
    """One shape parameter per cloud, ``(m, 1)``, uniform in ``[low, high)``."""
    return _uniform(gen, m, 1, low=low, high=high)


def _directions(gen: torch.Generator, m: int, p: int) -> torch.Tensor:
    """Uniform unit vectors ``(m, p, 3)``."""
    v = torch.randn(m, p, 3, generator=gen, dtype=_F64)
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _mixture(gen: torch.Generator, parts: Sequence[torch.Tensor], weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """Each point from one of ``parts`` (all ``(m, p, 3)``), chosen with per-cloud ``weights`` (each ``(m, 1)``, e.g. areas)."""
    m, p, _ = parts[0].shape
    w = torch.cat([wk.expand(m, 1) for wk in weights], dim=1)
    pick = torch.multinomial(w, p, replacement=True, generator=gen)  # (m, p)
    stacked = torch.stack(list(parts), dim=2)  # (m, p, K, 3)
    return stacked.gather(2, pick[:, :, None, None].expand(m, p, 1, 3)).squeeze(2)


def _ring(radius: torch.Tensor, theta: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Points ``(radius cos θ, radius sin θ, z)``, broadcast to ``(m, p, 3)``."""
    radius, theta, z = torch.broadcast_tensors(radius, theta, z)
    return torch.stack([radius * torch.cos(theta), radius * torch.sin(theta), z], dim=-1)


def _angles(gen: torch.Generator, m: int, p: int) -> torch.Tensor:
    return _uniform(gen, m, p, high=2 * math.pi)


def _disk(gen: torch.Generator, m: int, p: int, radius: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Uniform points on the disks of ``radius`` at height ``z`` (both ``(m, 1)`` or ``(m, p)``)."""
    return _ring(radius * _uniform(gen, m, p).sqrt(), _angles(gen, m, p), z)


def _triangles(gen: torch.Generator, p: int, corners: torch.Tensor) -> torch.Tensor:
    """Uniform points ``(m, p, 3)`` on the surface made of triangles ``corners: (m, T, 3, 3)`` (area-weighted)."""
    m = corners.shape[0]
    a, b, c = corners.unbind(dim=2)  # (m, T, 3) each
    areas = torch.linalg.cross(b - a, c - a).norm(dim=-1)  # (m, T)
    pick = torch.multinomial(areas, p, replacement=True, generator=gen)  # (m, p)
    tri = corners.gather(1, pick[:, :, None, None].expand(m, p, 3, 3))  # (m, p, 3, 3)
    r1, r2 = _uniform(gen, m, p, 1).sqrt(), _uniform(gen, m, p, 1)
    return (1 - r1) * tri[:, :, 0] + r1 * (1 - r2) * tri[:, :, 1] + r1 * r2 * tri[:, :, 2]


# shapes: (generator, clouds m, points p) -> (m, p, 3) float64, roughly unit size -------------------------

def _sphere(gen: torch.Generator, m: int, p: int) -> torch.Tensor:
    return _directions(gen, m, p)


_CUBE_FACES = torch.tensor([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                            [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
_CUBE_CORNERS = torch.tensor([[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)], dtype=_F64)


def _cube(gen: torch.Generator, m: int, p: int) -> torch.Tensor:
    half = _uniform(gen, m, 1, 3, low=0.6, high=0.8)  # nearly equal sides
    corners = (_CUBE_CORNERS[None] * half)[:, _CUBE_FACES]  # (m, 12, 3, 3)
    return _triangles(gen, p, corners)


def _pyramid(gen: torch.Generator, m: int, p: int) -> torch.Tensor:
    a, h = _param(gen, m, 0.6, 0.9), _param(gen, m, 0.9, 1.4)
    zero = torch.zeros_like(a)
    base = [torch.cat([sx * a, sy * a, zero], dim=1) for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    apex = torch.cat([zero, zero, h], dim=1)
    faces = [(base[0], base[1], base[2]), (base[0], base[2], base[3])]
    faces += [(base[i], base[(i + 1) % 4], apex) for i in range(4)]
    corners = torch.stack([torch.stack(face, dim=1) for face in faces], dim=1)  # (m, 6, 3, 3)
    return _triangles(gen, p, corners)


def _cylinder(gen: torch.Generator, m: int, p: int) -> torch.Tensor:
    r, h = _param(gen, m, 0.45, 0.75), _param(gen, m, 0.6, 1.0)
    side = _ring(r, _angles(gen, m, p), _uniform(gen, m, p, low=-1.0) * h)
    caps = _disk(gen, m, p, r, torch.where(_uniform(gen, m, p) < 0.5, -h, h))
    return _mixture(gen, [side, caps], [4 * math.pi * r * h, 2 * math.pi * r**2])


def _cone(gen: torch.Generator, m: int, p: int) -> torch.Tensor:
    r, h = _param(gen, m, 0.5, 0.8), _param(gen, m, 1.2, 1.8)
    t = _uniform(gen, m, p).sqrt()  # distance from the apex, area-uniform on the lateral surface
    side = _ring(t * r, _angles(gen, m, p), (1 - t) * h)
    base = _disk(gen, m, p, r, torch.zeros_like(r))
    return _mixture(gen, [side, base], [math.pi * r * (r**2 + h**2).sqrt(), math.pi * r**2])


def _torus(gen: torch.Generator, m: int, p: int) -> torch.Tensor:
    tube = _param(gen, m, 0.2, 0.45)
    phi = _angles(gen, m, p)
    return _ring(1 + tube * torch.cos(phi), _angles(gen, m, p), tube * torch.sin(phi))


def _ellipsoid(gen: torch.Generator, m: int, p: int) -> torch.Tensor:
    axes = torch.cat([torch.ones(m, 1, dtype=_F64), _param(gen, m, 0.45, 0.7), _param(gen, m, 0.2, 0.4)], dim=1)
    return _directions(gen, m, p) * axes[:, None, :]


def _capsule(gen: torch.Generator, m: int, p: int) -> torch.Tensor:
    r, h = _param(gen, m, 0.35, 0.5), _param(gen, m, 0.4, 0.8)
    side = _ring(r, _angles(gen, m, p), _uniform(gen, m, p, low=-1.0) * h)
    d = _directions(gen, m, p) * r[:, :, None]
    top = torch.where(d[..., 2:] >= 0, h[:, :, None], -h[:, :, None])  # hemisphere ends: +h above, -h below
    ends = d + torch.cat([torch.zeros_like(d[..., :2]), top], dim=-1)
    return _mixture(gen, [side, ends], [4 * math.pi * r * h, 4 * math.pi * r**2])


def _dumbbell(gen: torch.Generator, m: int, p: int) -> torch.Tensor:
    r, h = _param(gen, m, 0.5, 0.8), _param(gen, m, 0.6, 1.0)
    disks = _disk(gen, m, p, r, torch.where(_uniform(gen, m, p) < 0.5, -h, h))
    axle = _ring(torch.zeros(m, p, dtype=_F64), torch.zeros(m, p, dtype=_F64), _uniform(gen, m, p, low=-1.0) * h)
    return _mixture(gen, [disks, axle], [torch.full((m, 1), 0.85, dtype=_F64), torch.full((m, 1), 0.15, dtype=_F64)])


def _helix(gen: torch.Generator, m: int, p: int) -> torch.Tensor:
    r, h, turns = _param(gen, m, 0.4, 0.6), _param(gen, m, 0.8, 1.2), _param(gen, m, 2.0, 3.0)
    t = _uniform(gen, m, p)
    curve = _ring(r, 2 * math.pi * turns * t, h * (2 * t - 1))
    return curve + 0.04 * _directions(gen, m, p)  # a thin tube around the curve


_SHAPES: dict[str, _Sampler] = {
    "sphere": _sphere, "cube": _cube, "cylinder": _cylinder, "cone": _cone, "torus": _torus,
    "ellipsoid": _ellipsoid, "pyramid": _pyramid, "capsule": _capsule, "dumbbell": _dumbbell, "helix": _helix,
}
POINTCLOUD_CLASSES: tuple[str, ...] = tuple(_SHAPES)
"""Names of the shape classes, in label order: label ``i`` is ``POINTCLOUD_CLASSES[i]``."""


# public API -------------------------------------------------------------------------------------------

def check_classes(classes: Sequence[str] | None) -> tuple[str, ...]:
    """``classes`` as a tuple of distinct names of :data:`POINTCLOUD_CLASSES` (``None``: all of them).

    Raises:
        ConfigError: an unknown or repeated name, or an empty list.
    """
    if classes is None:
        return POINTCLOUD_CLASSES
    if isinstance(classes, str) or not isinstance(classes, Sequence):
        raise ConfigError(f"classes: expected a list of names from {POINTCLOUD_CLASSES}, got {classes!r}")
    names = tuple(check_choice(c, POINTCLOUD_CLASSES, "classes") for c in classes)
    if not names:
        raise ConfigError("classes: expected at least one class name, got an empty list")
    if len(set(names)) != len(names):
        raise ConfigError(f"classes: expected distinct names, got {list(names)}")
    return names


def cloud_rotations(rotate: Group | str | None) -> Group | None:
    """The group of the ``rotate`` setting of point clouds (see :data:`POINTCLOUD_ROTATIONS`), ``None`` for upright.

    Raises:
        ConfigError: an old spelling (``"so3"`` and ``"o3"`` still read as ``"SO3"`` / ``"O3"``; ``"z"``
            is now ``"SO2"``, ``"none"`` is ``None``) or a group that does not rotate 3-D points.
    """
    return rotation_group(rotate, where=lambda g: g.kind == "spatial" or g == SO2(), expected=_ROTATIONS_TEXT,
                          retired={"z": "'SO2' (rotations about the z axis)", "none": "null (None: upright clouds)"})


def random_rotations(n: int, rotate: Group | str | None, *,
                     generator: torch.Generator | None = None) -> torch.Tensor | None:
    """``n`` random orthogonal matrices ``(n, 3, 3)`` float64 for ``rotate`` (``None`` for upright clouds).

    ``"SO3"``: Haar-uniform rotations (:meth:`SO3.sample <equicanon.groups.SO3.sample>`);
    ``"O3"``: rotations times a random sign (reflections half the time); ``"SO2"``: uniform
    rotations about the z axis; ``"Octahedral"``: the 24 rotations of the cube.
    """
    group = cloud_rotations(rotate)
    if group is None:
        return None
    g = group.sample(n, generator=generator, dtype=_F64)
    if group.dim == 3:
        return group.matrix(g, dtype=_F64)
    rot = torch.eye(3, dtype=_F64).repeat(n, 1, 1)  # SO2: the plane z = 0 turns about the z axis
    rot[:, :2, :2] = group.matrix(g, dtype=_F64)
    return rot


def rotate_clouds(x: torch.Tensor, rotate: Group | str | None, *,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """``x: (B, N, 3)`` with each cloud moved by one element of :func:`random_rotations` (a new tensor;
    ``x`` itself for ``rotate=None``)."""
    g = random_rotations(x.shape[0], rotate, generator=generator)
    if g is None:
        return x
    return Points(O3())(g.to(device=x.device, dtype=x.dtype), x)  # O3 holds every orthogonal matrix drawn


def make_pointclouds(n: int, points: int = 128, *, generator: torch.Generator, noise: float = 0.01,
                     rotate: Group | str | None = "SO3",
                     classes: Sequence[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` labelled point clouds: ``x (n, points, 3)`` float32 and labels ``y (n,)`` int64.

    Each cloud is a shape of ``classes`` (default :data:`POINTCLOUD_CLASSES`; label ``i`` is
    ``classes[i]``, as many clouds of each class as ``n`` allows, in random order) with random
    size and aspect parameters, ``points`` points sampled on its surface, centred, scaled by a
    random factor in ``[0.75, 1.25)``, jittered by Gaussian noise of standard deviation ``noise``,
    then moved by a random element of ``rotate``: ``"SO3"`` (uniform rotations), ``"O3"``
    (rotations and reflections), ``"SO2"`` (rotations about the z axis) or ``None`` (upright).

    The same generator state gives the same clouds; the rotations are drawn last, so a run
    with ``rotate=None`` and the same seed gives the upright clouds.

    Raises:
        ConfigError: ``n`` or ``points`` is not a positive integer, ``noise`` is negative,
            ``rotate`` or a class name is unknown, or ``generator`` is not a torch.Generator.
    """
    n = check_positive_int(n, "n")
    points = check_positive_int(points, "points")
    noise = check_number(noise, "noise", minimum=0.0)
    cloud_rotations(rotate)
    names = check_classes(classes)
    if not isinstance(generator, torch.Generator):
        raise ConfigError(f"generator: expected a torch.Generator (seeded, for reproducible data), got {generator!r}")
    labels = (torch.arange(n) % len(names))[torch.randperm(n, generator=generator)]
    x = torch.zeros(n, points, 3, dtype=_F64)
    for label, name in enumerate(names):
        rows = (labels == label).nonzero().squeeze(1)
        if len(rows):
            x[rows] = _SHAPES[name](generator, len(rows), points)
    x = x - x.mean(dim=1, keepdim=True)
    x = x * _uniform(generator, n, 1, 1, low=0.75, high=1.25)
    x = x + noise * torch.randn(x.shape, generator=generator, dtype=_F64)
    x = rotate_clouds(x, rotate, generator=generator)
    return x.float(), labels.to(torch.int64)
