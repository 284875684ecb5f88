"""Learned canonicalization of 3-D point clouds and particle systems with vector neurons (Kaba et al., 2023)."""

from __future__ import annotations

from functools import partial
from typing import cast

import torch
from torch import nn

from ..actions import Particles, Points
from ..errors import ConfigError, check_floating, check_positive_int, check_shape
from ..groups import E3, O3, SE3, SO3, Group, RigidGroup, as_group
from ..nn.vector_neurons import VNBatchNorm, VNEdgeConv, VNLeakyReLU, VNLinear, VNMeanPool
from .base import Canonicalization, Canonicalizer, RegistryCase, register
from .functional import gram_schmidt_with_margin, matrix_prior

__all__ = ["VectorNeurons", "ParticleVectorNeurons"]


def _vn_trunk(in_channels: int, hidden: int, layers: int, batch_norm: bool) -> nn.Sequential:
    blocks: list[nn.Module] = []
    width = in_channels
    for _ in range(layers):
        blocks.append(VNLinear(width, hidden))
        if batch_norm:
            blocks.append(VNBatchNorm(hidden))
        blocks.append(VNLeakyReLU(hidden))
        width = hidden
    return nn.Sequential(*blocks)


class _FrameHead(nn.Module):
    """Per-point vector channels ``(B, N, C, 3)``, mean-pooled → orthogonal pose ``(B, 3, 3)`` by Gram–Schmidt."""

    def __init__(self, channels: int, special: bool, eps: float) -> None:
        super().__init__()
        self.special = special
        self.eps = eps
        self.out = VNLinear(channels, 2 if special else 3)

    def forward(self, features: torch.Tensor, pool: nn.Module
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(pose (B, 3, 3), vectors (B, 3, k), margin (B,))``."""
        vectors = self.out(pool(features)).transpose(1, 2)  # (B, 3, k): vectors as columns
        # Degeneracy is judged against the size the output vectors would have without cancellation in the
        # pooling, Σ_c |W_oc| mean_i |v_ic|: vectors that vanish by the input's symmetry (a centred line,
        # coincident points) are rounding noise of that size, not directions.
        with torch.no_grad():
            sizes = pool(torch.linalg.vector_norm(features, dim=-1)[..., None])[..., 0]  # (B, C)
            scale = (sizes @ self.out.weight.abs().t().to(sizes)).amax(dim=-1)
        pose, margin = gram_schmidt_with_margin(vectors, special=self.special, eps=self.eps, scale=scale)
        return pose, vectors, margin


class VectorNeurons(Canonicalizer):
    """Canonicalize point clouds ``(B, N, 3)`` under SO3() or O3().

    A vector-neuron network (k-NN edge layer, ``layers`` VN blocks, mean pooling)
    outputs 2 vectors (SO(3): Gram–Schmidt, then the cross product completes a
    rotation) or 3 vectors (O(3): Gram–Schmidt keeps the sign, so reflections are
    poses too) that rotate with the input. The pose ``R`` is equivariant,
    ``R(x Qᵀ) = Q R(x)``, and invariant to the order of the points; the canonical
    form is ``Rᵀ x_i`` for every point, in the input's order.

    Args:
        group: ``SO3()`` or ``O3()``, or its name (``"SO3"``, ``"O3"``).
        hidden: vector channels.
        layers: VN blocks after the edge layer.
        k: neighbours of the edge layer (capped at ``N``).
        batch_norm: normalise channel norms between layers.
        eps: Gram–Schmidt's relative degeneracy threshold (:func:`~equicanon.canonicalizers.functional.gram_schmidt`):
            an output vector (nearly) dependent on the ones before it, relative to the size it would have
            without cancellation, is completed deterministically, so coincident, collinear, planar or
            all-zero clouds get rotations (``margin`` 0) and finite gradients.
        check_inputs: refuse point clouds holding NaN or Inf (:class:`~equicanon.canonicalizers.Canonicalizer`).
    """

    def __init__(self, group: Group | str, *, hidden: int = 32, layers: int = 2, k: int = 16, batch_norm: bool = True,
                 eps: float = 1e-6, check_inputs: bool = True) -> None:
        super().__init__(check_inputs=check_inputs)
        self.group = group = as_group(group, where=lambda g: g.kind == "spatial" and not g.is_finite,
                                      expected="SO3() or O3()", what="VectorNeurons: group")
        self.action = Points(group)
        check_positive_int(hidden, "hidden")
        check_positive_int(layers, "layers", minimum=0)
        special = not group.has_reflections
        self.edge = VNEdgeConv(hidden, k=k, cross=special)
        self.trunk = _vn_trunk(hidden, hidden, layers, batch_norm)
        self.pool = VNMeanPool()
        self.head = _FrameHead(hidden, special, eps)

    def forward(self, x: torch.Tensor) -> Canonicalization:
        """Canonicalize ``x: (B, N, 3)``."""
        check_shape(x, "B N 3", name="points")
        check_floating(x, "points")
        pose, vectors, margin = self.head(self.trunk(self.edge(x)), self.pool)
        canonical = x @ pose.to(x.dtype)  # row i: (R^T x_i)^T
        return Canonicalization(canonical, pose, self.group, extras={"vectors": vectors}, margin=margin)

    def prior_loss(self, result: Canonicalization, target: torch.Tensor | None = None) -> torch.Tensor:
        """``‖R − I‖²_F`` averaged over the batch (``‖R − T‖²_F`` for ``target`` matrices ``(B, 3, 3)``)."""
        return matrix_prior(result.pose, target)


class ParticleVectorNeurons(Canonicalizer):
    """Canonicalize particle systems ``(B, N, 6 + k)`` under SE3() or E3().

    Input columns: positions (0:3), velocities (3:6), ``k`` invariant features
    (charges). The pose translation is the centroid of the positions; the rotation
    comes from a vector-neuron DeepSets network on each particle's position
    relative to the centroid and its velocity, each also scaled by every invariant
    feature (so charges steer the frame without breaking equivariance). The
    canonical form has positions ``Rᵀ(p − t)``, velocities ``Rᵀ v`` and the
    features unchanged.

    Args:
        group: ``SE3()`` (rotations + translations) or ``E3()`` (also reflections), or its name.
        features: number ``k`` of invariant feature columns after the velocities.
        hidden, layers, batch_norm, eps, check_inputs: as in :class:`VectorNeurons`.
    """

    def __init__(self, group: Group | str, features: int = 1, *, hidden: int = 32, layers: int = 2,
                 batch_norm: bool = True, eps: float = 1e-6, check_inputs: bool = True) -> None:
        super().__init__(check_inputs=check_inputs)
        rigid = as_group(group, where=lambda g: g.kind == "rigid", expected="SE3() or E3()",
                         what="ParticleVectorNeurons: group")
        if isinstance(features, bool) or not isinstance(features, int) or features < 0:
            raise ConfigError(f"features must be an integer >= 0, got {features!r}")
        self.group: RigidGroup = cast(RigidGroup, rigid)  # kind "rigid": homogeneous elements, from_parts
        self.action = Particles(rigid)
        self.features = features
        self.trunk = _vn_trunk(2 * (1 + features), hidden, layers, batch_norm)
        self.pool = VNMeanPool()
        self.head = _FrameHead(hidden, not rigid.has_reflections, eps)

    def forward(self, x: torch.Tensor) -> Canonicalization:
        """Canonicalize particles ``x: (B, N, 6 + features)``."""
        check_shape(x, "B N F", F=6 + self.features, name="particles")
        check_floating(x, "particles")
        pos, vel, feat = x[..., 0:3], x[..., 3:6], x[..., 6:]
        centroid = pos.mean(dim=1)  # (B, 3)
        rel = pos - centroid[:, None, :]
        base = torch.stack([rel, vel], dim=-2)  # (B, N, 2, 3)
        scaled = [base * feat[..., i, None, None] for i in range(self.features)]
        vectors_in = torch.cat([base, *scaled], dim=-2)  # (B, N, 2(1 + k), 3)
        rotation, vectors, margin = self.head(self.trunk(vectors_in), self.pool)
        rot = rotation.to(x.dtype)
        canonical = torch.cat([rel @ rot, vel @ rot, feat], dim=-1)
        pose = self.group.from_parts(rotation, centroid.to(rotation.dtype))
        return Canonicalization(canonical, pose, self.group, extras={"vectors": vectors}, margin=margin)

    def prior_loss(self, result: Canonicalization, target: torch.Tensor | None = None) -> torch.Tensor:
        """``‖R − I‖²_F`` of the rotation part, averaged over the batch (the translation has no prior).

        ``target``: poses ``(B, 4, 4)``; their rotation parts replace ``I``.
        """
        return matrix_prior(result.pose[:, :3, :3], None if target is None else target[..., :3, :3])


def _point_cases() -> list[RegistryCase]:
    return [
        RegistryCase(f"{g}", partial(VectorNeurons, g, hidden=8, layers=1, k=4), (2, 12, 3), exact=False)
        for g in (SO3(), O3())
    ]


def _particle_cases() -> list[RegistryCase]:
    return [
        RegistryCase(f"{g}", partial(ParticleVectorNeurons, g, features=1, hidden=8, layers=2), (2, 5, 7),
                     exact=False)
        for g in (SE3(), E3())
    ]


register("vector_neurons", _point_cases)(VectorNeurons)
register("particle_vector_neurons", _particle_cases)(ParticleVectorNeurons)


