"""Learned canonicalization of 3-D point clouds and particle systems with vector neurons (Kaba et al., 2023)."""

from __future__ import annotations

import math
from functools import partial
from typing import cast

import torch
from torch import nn

from ..actions import Particles, Points
from ..errors import ConfigError, check_floating, check_mask, check_number, check_positive_int, check_shape
from ..groups import E3, O3, SE3, SO3, Group, RigidGroup, as_group
from ..nn.masking import masked_mean
from ..nn.vector_neurons import VNBatchNorm, VNEdgeConv, VNLeakyReLU, VNLinear, VNMeanPool, _mix
from .base import Canonicalization, RegistryCase, register
from .frames import VectorFrames
from .functional import gram_schmidt_with_margin, matrix_prior

__all__ = ["VectorNeurons", "ParticleVectorNeurons"]


#: default ``smoothing`` of :class:`ParticleVectorNeurons`' leaky-ReLU gates (:class:`~equicanon.nn.VNLeakyReLU`):
#: a ramp instead of a switch where a gate's direction passes through 0, which is where the gates of particles
#: carrying one vector each (at rest) switch
PARTICLE_SMOOTHING = 1.0


def _blocks(in_channels: int, hidden: int, layers: int, batch_norm: bool, smoothing: float, *, context: bool
            ) -> nn.ModuleList:
    blocks = nn.ModuleList()
    width = in_channels
    for _ in range(layers):
        parts: list[nn.Module] = [VNLinear(2 * width if context else width, hidden)]
        if batch_norm:
            parts.append(VNBatchNorm(hidden))
        parts.append(VNLeakyReLU(hidden, smoothing=smoothing))
        blocks.append(nn.Sequential(*parts))
        width = hidden
    return blocks


class _Trunk(nn.Module):
    """VN blocks on per-point channels ``(B, N, C, 3) → (B, N, hidden, 3)``; with ``context`` every block also sees
    the mean over the points of its input channels (the global feature of VN-PointNet), so a point's channels are
    not all parallel to its own position when it carries one vector only."""

    def __init__(self, in_channels: int, hidden: int, layers: int, batch_norm: bool, smoothing: float, *,
                 context: bool) -> None:
        super().__init__()
        self.context = context
        self.blocks = _blocks(in_channels, hidden, layers, batch_norm, smoothing, context=context)

    def forward(self, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask (B, N)`` (True: a real point): the context means and batch statistics are over real points."""
        for block in self.blocks:
            layers = list(cast(nn.Sequential, block))
            if self.context:
                # W [v, mean v] = W_own v + W_mean (mean v): the mean's product once per sample, no concatenation
                weight, channels = cast(VNLinear, layers.pop(0)).weight, v.shape[-2]
                v = _mix(v, weight[:, :channels]) + _mix(masked_mean(v, mask, keepdim=True), weight[:, channels:])
            for layer in layers:
                v = layer(v, mask) if isinstance(layer, VNBatchNorm) else layer(v)
        return v


def _rms_norm(v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``sqrt(mean_i |v_i|²)`` of vectors ``v: (B, N, 3)``, ``(B, 1, 1)``, without under- or overflow (divided by a
    power of two near the largest entry first); 1 where it is 0, so that an all-zero sample stays zero. With
    ``mask (B, N)`` the mean is over the real points (padded rows of ``v`` must be 0)."""
    big = v.detach().abs().amax(dim=(1, 2), keepdim=True)
    power = torch.ldexp(torch.ones_like(big), torch.frexp(big).exponent)
    power = torch.where(torch.isfinite(power) & (power > 0), power, torch.ones_like(power))
    scaled = v / power
    square = masked_mean((scaled * scaled).sum(-1), mask)[:, None, None]
    positive = square > 0
    # the square root of 1 where the sample is zero: finite gradients (zero) there, not 0 * inf
    rms = torch.sqrt(torch.where(positive, square, torch.ones_like(square))) * power
    return torch.where(positive, rms, torch.ones_like(rms))


def _network_dtype(x: torch.Tensor, network: nn.Module) -> torch.dtype:
    """The dtype the network computes ``x`` in: its parameters' dtype where that is more precise than ``x``'s
    (float32 points into a float64 canonicalizer, for conditioning), else ``x``'s own (a less precise network
    then fails with a ``DTypeError``, as every module does)."""
    dtype = next(network.parameters()).dtype
    return dtype if torch.finfo(x.dtype).eps > torch.finfo(dtype).eps else x.dtype


def _minimum_vectors(special: bool) -> int:
    return 2 if special else 3


def _check_vectors(vectors: int | None, special: bool) -> int:
    least = _minimum_vectors(special)
    if vectors is None:
        return least
    if isinstance(vectors, bool) or not isinstance(vectors, int) or vectors < least:
        group = "SO(3)/SE(3)" if special else "O(3)/E(3)"
        raise ConfigError(f"vectors: expected an integer >= {least} for {group} poses (Gram–Schmidt of the first "
                          f"{least} fixes the pose), got {vectors!r}")
    return vectors


class _FrameHead(nn.Module):
    """Per-point vector channels ``(B, N, C, 3)``, mean-pooled → ``vectors`` equivariant vectors → orthogonal pose
    ``(B, 3, 3)`` by Gram–Schmidt of the first 2 (``special``) or 3, in float64."""

    def __init__(self, channels: int, special: bool, eps: float, vectors: int | None = None) -> None:
        super().__init__()
        self.special = special
        self.eps = eps
        self.vectors = _check_vectors(vectors, special)
        self.out = VNLinear(channels, self.vectors)

    def threshold(self, dtype: torch.dtype) -> float:
        """Gram–Schmidt's relative degeneracy threshold for vectors computed in ``dtype``: ``eps``, at least the
        square root of ``dtype``'s machine epsilon (the frames themselves are orthonormalised in float64)."""
        return max(self.eps, math.sqrt(torch.finfo(dtype).eps))

    def forward(self, features: torch.Tensor, pool: nn.Module, mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(pose (B, 3, 3) float64, vectors (B, 3, m), margin (B,) float64, scale (B,))``, ``m = self.vectors``;
        ``scale`` (detached) is the reference size of the degeneracy test (``extras["scale"]``, which weighted
        frames use too)."""
        vectors = self.out(pool(features, mask)).transpose(1, 2)  # (B, 3, m): vectors as columns
        # Degeneracy is judged against the size the output vectors would have without cancellation in the
        # pooling, Σ_c |W_oc| mean_i |v_ic|: vectors that vanish by the input's symmetry (a centred line,
        # coincident points) are rounding noise of that size, not directions.
        with torch.no_grad():
            # sqrt of vecdot: 40x faster than vector_norm on (B, N, C, 3) on a CPU (the features are of order 1)
            sizes = pool(torch.linalg.vecdot(features, features).sqrt()[..., None], mask)[..., 0]  # (B, C)
            scale = (sizes @ self.out.weight.abs().t().to(sizes)).amax(dim=-1)
        # Orthonormalised in float64 (B x 3 x 3: cheap), with the threshold of the network's dtype: its rounding
        # noise still counts as degenerate, but Gram–Schmidt adds no rounding error of its own.
        eps = self.threshold(vectors.dtype)
        pose, margin = gram_schmidt_with_margin(vectors[..., :_minimum_vectors(self.special)].double(),
                                                special=self.special, eps=eps, scale=scale.double())
        return pose, vectors, margin, scale


class VectorNeurons(VectorFrames):
    """Canonicalize point clouds ``(B, N, 3)`` under SO3() or O3().

    A vector-neuron network (k-NN edge layer, ``layers`` VN blocks, mean pooling) outputs 2 vectors (SO(3):
    Gram–Schmidt, then the cross product completes a rotation) or 3 vectors (O(3): Gram–Schmidt keeps the
    sign, so reflections are poses too) that rotate with the input. The pose ``R`` is equivariant,
    ``R(x Qᵀ) = Q R(x)``, and invariant to the order of the points; the canonical form is ``Rᵀ x_i`` for every
    point, in the input's order. Gram–Schmidt and the canonical form are computed in float64 and returned in
    the input's dtype, so a float32 network adds only its own rounding error. The network computes in its
    parameters' dtype where that is more precise than the input's: ``VectorNeurons(SO3()).double()`` takes
    float32 points and returns float32 results computed in float64, for float32 data whose poses must be
    well-conditioned (docs/points.md: half as many QM9 molecules off by 1e-4 of their radius, at about 1.8x the
    canonicalizer's cost on a CPU); an input more precise than the network is a ``DTypeError``. The cloud is
    not centred: SO(3) turns it about the origin, and where the cloud sits relative to the origin is part of
    its pose.

    Args:
        group: ``SO3()`` or ``O3()``, or its name (``"SO3"``, ``"O3"``).
        hidden: vector channels.
        layers: VN blocks after the edge layer.
        k: neighbours of the edge layer (capped at ``N``).
        batch_norm: normalise channel norms between layers.
        eps: Gram–Schmidt's relative degeneracy threshold (:func:`~equicanon.canonicalizers.functional.gram_schmidt`):
            an output vector (nearly) dependent on the ones before it, relative to the size it would have
            without cancellation, is completed deterministically, so coincident, collinear, planar or
            all-zero clouds get rotations (``margin`` 0) and finite gradients. The threshold is at least
            ``sqrt`` of the machine epsilon of the network's dtype (float32: 3.5e-4), although Gram–Schmidt
            runs in float64: the network's rounding noise is not a direction.
        vectors: equivariant vectors the head outputs (``extras["vectors"]``, ``(B, 3, vectors)``, as columns);
            ``None``: 2 for SO(3), 3 for O(3), the fewest that fix a pose, and ``ConfigError`` below that. The
            pose is Gram–Schmidt of the first 2 (3); more vectors are for weighted frames built from all of them.
        smoothing: the leaky-ReLU gates' ramp (:class:`~equicanon.nn.VNLeakyReLU`): where a gate's direction
            passes through 0 the output changes over ``|k| ≲ smoothing · |v|`` instead of jumping. 0 (the gates
            of Deng et al.) by default here: the edge layer's vectors are not parallel, so the gates switch
            continuously already (see :class:`ParticleVectorNeurons` for where they do not).
        conditioning_weight, conditioning_margin: a training regularizer, added by :meth:`add_regularizers` (the
            training step) when the weight is positive: :meth:`~equicanon.canonicalizers.frames.VectorFrames.conditioning_loss`,
            which pushes the frame's relative Gram–Schmidt residuals above the margin, so that small changes of
            the input turn the pose less (default 0: off).
        check_inputs: refuse point clouds holding NaN or Inf (:class:`~equicanon.canonicalizers.Canonicalizer`).
    """

    def __init__(self, group: Group | str, *, hidden: int = 32, layers: int = 2, k: int = 16, batch_norm: bool = True,
                 eps: float = 1e-6, vectors: int | None = None, smoothing: float = 0.0,
                 conditioning_weight: float = 0.0, conditioning_margin: float = 0.05, check_inputs: bool = True) -> None:
        super().__init__(check_inputs=check_inputs)
        self._set_conditioning(conditioning_weight, conditioning_margin)
        self.group = group = as_group(group, where=lambda g: g.kind == "spatial" and not g.is_finite,
                                      expected="SO3() or O3()", what="VectorNeurons: group")
        self.action = Points(group)
        check_positive_int(hidden, "hidden")
        check_positive_int(layers, "layers", minimum=0)
        smoothing = check_number(smoothing, "smoothing", minimum=0.0)
        special = not group.has_reflections
        self.edge = VNEdgeConv(hidden, k=k, cross=special, smoothing=smoothing)
        self.trunk = _Trunk(hidden, hidden, layers, batch_norm, smoothing, context=False)
        self.pool = VNMeanPool()
        self.head = _FrameHead(hidden, special, eps, vectors)

    accepts_mask = True

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> Canonicalization:
        """Canonicalize ``x: (B, N, 3)``: ``canonical (B, N, 3)``, ``pose (B, 3, 3)``, ``margin (B,)`` and
        ``extras["vectors"] (B, 3, vectors)``. ``mask (B, N)`` bool (True: a real point) for padded batches
        (:func:`equicanon.data.pad_sets`): padded points are never neighbours nor pooled, so the pose and the
        real points' canonical form do not depend on the padding; the padded rows of the canonical form are those
        of ``x``, as they are (as :class:`~equicanon.actions.Points` with ``mask=`` leaves them)."""
        check_shape(x, "B N 3", name="points")
        check_floating(x, "points")
        mask = check_mask(mask, x)
        net = x.to(_network_dtype(x, self.head))
        pose, vectors, margin, scale = self.head(self.trunk(self.edge(net, mask), mask), self.pool, mask)
        canonical = (x.double() @ pose).to(x.dtype)  # row i: (R^T x_i)^T
        if mask is not None:
            canonical = torch.where(mask[..., None], canonical, x)
        return Canonicalization(canonical, pose.to(x.dtype), self.group, extras={"vectors": vectors, "scale": scale},
                                margin=margin.to(x.dtype))

    def prior_loss(self, result: Canonicalization, target: torch.Tensor | None = None) -> torch.Tensor:
        """``‖R − I‖²_F`` averaged over the batch (``‖R − T‖²_F`` for ``target`` matrices ``(B, 3, 3)``)."""
        return matrix_prior(result.pose, target)


class ParticleVectorNeurons(VectorFrames):
    """Canonicalize particle systems ``(B, N, 6 + k)`` under SE3() or E3().

    Input columns: positions (0:3), velocities (3:6), ``k`` invariant features (charges, atomic numbers). The
    pose translation is the centroid of the positions; the rotation comes from a vector-neuron network on
    each particle's position relative to the centroid, divided by the system's RMS radius (in float64), the
    same times its squared norm, and its velocity divided by the RMS speed, each also scaled by every
    invariant feature (so charges steer the frame without breaking equivariance). Every VN block also sees
    the mean of its input over the particles (the global feature of VN-PointNet), so the channels of a
    particle at rest are not all parallel to its position. The canonical form (computed in float64, returned
    in the input's dtype) has positions ``Rᵀ(p − t)``, velocities ``Rᵀ v`` and the features unchanged. As in
    :class:`VectorNeurons`, a float64 canonicalizer (``.double()``) takes float32 particles.

    Args:
        group: ``SE3()`` (rotations + translations) or ``E3()`` (also reflections), or its name.
        features: number ``k`` of invariant feature columns after the velocities.
        hidden, layers, batch_norm, eps, vectors, conditioning_weight, conditioning_margin, check_inputs: as in
            :class:`VectorNeurons` (``vectors``: ``None`` is 2 for SE(3), 3 for E(3)).
        smoothing: as in :class:`VectorNeurons`, default :data:`PARTICLE_SMOOTHING` (1.0). Without it, a particle
            at rest (zero velocity) has all its channels parallel to its position, so each leaky-ReLU gate can
            only switch by its direction passing through 0, where the output jumps: a move of 1e-3 of the
            radius could then turn the pose of a trained canonicalizer by tens of degrees.
    """

    def __init__(self, group: Group | str, features: int = 1, *, hidden: int = 32, layers: int = 2,
                 batch_norm: bool = True, eps: float = 1e-6, vectors: int | None = None,
                 smoothing: float = PARTICLE_SMOOTHING, conditioning_weight: float = 0.0,
                 conditioning_margin: float = 0.05, check_inputs: bool = True) -> None:
        super().__init__(check_inputs=check_inputs)
        self._set_conditioning(conditioning_weight, conditioning_margin)
        rigid = as_group(group, where=lambda g: g.kind == "rigid", expected="SE3() or E3()",
                         what="ParticleVectorNeurons: group")
        if isinstance(features, bool) or not isinstance(features, int) or features < 0:
            raise ConfigError(f"features must be an integer >= 0, got {features!r}")
        check_positive_int(hidden, "hidden")
        check_positive_int(layers, "layers", minimum=0)
        smoothing = check_number(smoothing, "smoothing", minimum=0.0)
        self.group: RigidGroup = cast(RigidGroup, rigid)  # kind "rigid": homogeneous elements, from_parts
        self.action = Particles(rigid)
        self.features = features
        special = not rigid.has_reflections
        self.trunk = _Trunk(3 * (1 + features), hidden, layers, batch_norm, smoothing, context=True)
        self.pool = VNMeanPool()
        width = hidden if layers > 0 else 3 * (1 + features)
        self.head = _FrameHead(width, special, eps, vectors)

    accepts_mask = True

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> Canonicalization:
        """Canonicalize particles ``x: (B, N, 6 + features)``. ``mask (B, N)`` bool (True: a real particle) for
        padded batches (:func:`equicanon.data.pad_sets`): the centroid, the scales, the context means, the batch
        statistics and the pooling are over the real particles, so the pose and their canonical form do not
        depend on the padding; the padded rows of the canonical form are those of ``x``, as they are."""
        check_shape(x, "B N F", F=6 + self.features, name="particles")
        check_floating(x, "particles")
        mask = check_mask(mask, x)
        vectors_in, centroid, rel, vel = self._network_input(x, mask)
        rotation, vectors, margin, scale = self.head(self.trunk(vectors_in, mask), self.pool, mask)
        canonical = torch.cat([(rel @ rotation).to(x.dtype), (vel @ rotation).to(x.dtype), x[..., 6:]], dim=-1)
        if mask is not None:
            canonical = torch.where(mask[..., None], canonical, x)
        pose = self.group.from_parts(rotation, centroid).to(x.dtype)
        return Canonicalization(canonical, pose, self.group, extras={"vectors": vectors, "scale": scale},
                                margin=margin.to(x.dtype))

    def _network_input(self, x: torch.Tensor, mask: torch.Tensor | None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The network's vector channels ``(B, N, 3(1 + k), 3)`` (in its dtype), the centroid ``(B, 3)``, and the
        positions relative to it and the velocities ``(B, N, 3)`` of every row (float64)."""
        pos, vel, feat = x[..., 0:3].double(), x[..., 3:6].double(), x[..., 6:]
        centroid = masked_mean(pos, mask)  # (B, 3)
        rel = pos - centroid[:, None, :]
        # the padded rows set to 0 for the scales and the network (the canonical form keeps them moved)
        rel_real, vel_real = (rel, vel) if mask is None else (rel * mask[..., None], vel * mask[..., None])
        r = rel_real / _rms_norm(rel_real, mask)
        v = vel_real / _rms_norm(vel_real, mask)
        dtype = _network_dtype(x, self.head)
        base = torch.stack([r, r * (r * r).sum(-1, keepdim=True), v], dim=-2).to(dtype)  # (B, N, 3, 3)
        scaled = [base * feat[..., i, None, None].to(dtype) for i in range(self.features)]
        return torch.cat([base, *scaled], dim=-2), centroid, rel, vel

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


