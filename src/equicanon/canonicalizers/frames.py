"""Several poses per input from equivariant output vectors: weighted frames and noisy frames.

:class:`VectorFrames` is mixed into the canonicalizers whose pose is Gram–Schmidt of ``m`` equivariant
vectors (``VectorNeurons``, ``ParticleVectorNeurons``), so that :class:`~equicanon.WeightedCanonicalized`
and :class:`~equicanon.Symmetrized` take them:

- weighted frames (Dym, Lawrence & Siegel, ICML 2024): one frame per subset of ``d - 1`` (rotations) or
  ``d`` (with reflections) of the ``m`` vectors, weighted by how far it is from degenerate
  (:func:`~equicanon.canonicalizers.functional.weighted_frames`);
- noisy frames (Kim et al., NeurIPS 2023): Gram–Schmidt of the vectors plus isotropic Gaussian noise,
  reparameterized (:func:`~equicanon.canonicalizers.functional.noisy_frames`).
"""

from __future__ import annotations

import math
from math import comb
from typing import TYPE_CHECKING, cast

import torch

from ..errors import ConfigError, ShapeError, check_number
from ..groups import RigidGroup
from .base import Canonicalization, Canonicalizer
from .functional import gram_schmidt, noisy_frames, weighted_frames

if TYPE_CHECKING:
    from .points import _FrameHead

__all__ = ["VectorFrames"]


class VectorFrames(Canonicalizer):
    """Mixin for canonicalizers whose result carries ``extras["vectors"] (B, d, m)``, the equivariant vectors
    (columns) whose Gram–Schmidt is the rotation part of the pose, and optionally ``extras["scale"] (B,)``, the
    invariant reference magnitude of their degeneracy test.

    The class has a ``head`` with ``vectors`` (``m``), ``special`` (``det = +1`` frames) and ``eps``
    (Gram–Schmidt's relative threshold), as the vector-neuron frame head. Frames are orthonormalised in float64
    with the threshold of the vectors' dtype (its rounding noise counts as degenerate) and returned in the
    pose's dtype. For groups with translations (SE3, E3) every frame gets the translation of the hard pose.
    """

    head: _FrameHead
    #: weight of :meth:`conditioning_loss` in :meth:`add_regularizers` (0: not computed)
    conditioning_weight: float = 0.0
    #: the relative Gram–Schmidt residual below which :meth:`conditioning_loss` pushes
    conditioning_margin: float = 0.05

    def conditioning_loss(self, result: Canonicalization) -> torch.Tensor:
        """How close the pose's Gram–Schmidt is to degenerate: ``mean relu(log(m₀ / r_i))`` over the batch and the
        frame's vectors, ``r_i`` the residual of vector ``i`` after projecting out the ones before it, relative to
        ``extras["scale"]`` (the size it would have without cancellation; ``r_1 = |v_1| / scale``), and
        ``m₀`` = :attr:`conditioning_margin`; 0-dim. A frame whose vectors are short or nearly dependent turns a
        lot under a small change of the input; this pushes the residuals of training inputs above ``m₀``
        (inputs with a symmetry cannot move: their vectors vanish by equivariance). Differentiable in the vectors."""
        vectors, scale = result.extras.get("vectors"), result.extras.get("scale")
        if vectors is None or scale is None:
            raise ConfigError("conditioning_loss needs a result from a vector-frame canonicalizer (extras['vectors'] "
                              "and extras['scale'])")
        v = vectors[..., :self.frame_size].double()  # (B, d, s)
        size = scale.double().clamp_min(1e-300)[:, None]
        floor = 1e-3 * self.conditioning_margin  # below it (a symmetric input) no gradient: nothing to gain there
        residuals: list[torch.Tensor] = []
        basis: list[torch.Tensor] = []
        for i in range(v.shape[-1]):  # Gram–Schmidt, differentiably
            rest = v[..., i]
            for u in basis:
                rest = rest - (rest * u).sum(-1, keepdim=True) * u
            norm = rest.square().sum(-1).add(1e-300).sqrt()  # (B,)
            residuals.append((norm / size[:, 0]).clamp_min(floor))
            basis.append(rest / norm[:, None])
        residual = torch.stack(residuals, dim=-1)  # (B, s)
        return torch.relu(math.log(self.conditioning_margin) - residual.log()).mean().to(vectors.dtype)

    def _own_regularizers(self, result: Canonicalization) -> dict[str, tuple[float, torch.Tensor]]:
        """``"conditioning"``: :meth:`conditioning_loss` with ``conditioning_weight``, when the weight is positive
        and the result carries gradients (training)."""
        vectors = result.extras.get("vectors")
        if self.conditioning_weight > 0 and isinstance(vectors, torch.Tensor) and vectors.requires_grad:
            return {"conditioning": (self.conditioning_weight, self.conditioning_loss(result))}
        return {}

    def _set_conditioning(self, weight: float, margin: float) -> None:
        self.conditioning_weight = check_number(weight, "conditioning_weight", minimum=0.0)
        self.conditioning_margin = check_number(margin, "conditioning_margin", minimum=0.0, strict=True)

    @property
    def frame_vectors(self) -> int:
        """``m``, the equivariant vectors of the head."""
        return self.head.vectors

    @property
    def frame_special(self) -> bool:
        """Whether frames are rotations (``d - 1`` vectors and their completion) rather than any orthogonal map."""
        return self.head.special

    def _frame_eps(self, vectors: torch.Tensor) -> float:
        return self.head.threshold(vectors.dtype)

    @property
    def frame_size(self) -> int:
        """Vectors per frame: ``d - 1`` (rotations, completed by the cross product) or ``d`` (reflections too)."""
        return 2 if self.frame_special else 3

    @property
    def candidate_count(self) -> int | None:
        """``C(m, s)``: one frame per subset of ``s`` = :attr:`frame_size` of the ``m`` output vectors."""
        return comb(self.frame_vectors, self.frame_size)

    @property
    def samples_poses(self) -> bool:
        """Always: Gram–Schmidt of the output vectors plus isotropic Gaussian noise."""
        return True

    def weighted_poses(self, x: torch.Tensor, result: Canonicalization, top_k: int, temperature: float = 1.0
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``top_k`` best-conditioned frames ``(B, k, *pose)`` and their weights ``(B, k)`` (detached), by
        :func:`~equicanon.canonicalizers.functional.weighted_frames` of the output vectors. ``top_k = 1`` with
        ``m = s`` vectors is the hard pose."""
        vectors = self._frame_vectors(result, x)
        frames, weights = weighted_frames(vectors.double(), top_k, special=self.frame_special,
                                          temperature=temperature, eps=self._frame_eps(vectors),
                                          scale=_as_double(result.extras.get("scale")))
        return self._with_translation(frames.to(result.pose.dtype), result), weights.to(result.pose.dtype)

    def sampled_poses(self, x: torch.Tensor, result: Canonicalization, samples: int, temperature: float = 1.0,
                      generator: torch.Generator | None = None, noise: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``samples`` frames per input, Gram–Schmidt of the first :attr:`frame_size` output vectors plus
        isotropic Gaussian noise of standard deviation ``temperature`` times their RMS length
        (:func:`~equicanon.canonicalizers.functional.noisy_frames`): ``(poses (B, k, *pose), None)``, since the
        draws are reparameterized (the poses carry pathwise gradients to the network).

        ``noise``: the standard normal draws ``(B, k, d, s)`` to use instead of ``generator``'s (moving them by
        ``Q`` along with the input makes the frames move by ``Q`` exactly). ``math.inf`` temperature: frames of
        the noise alone, uniform (Haar) rotations.
        """
        vectors = self._frame_vectors(result, x)
        b, d = vectors.shape[:2]
        shape = (b, samples, d, self.frame_size)
        if noise is None:
            device = generator.device if generator is not None else vectors.device
            noise = torch.randn(shape, generator=generator, dtype=torch.float64, device=device)
        elif tuple(noise.shape) != shape:
            raise ShapeError(f"noise: expected shape {shape}, {samples} draws of {self.frame_size} vectors per input, "
                             f"got {tuple(noise.shape)}")
        eps = self._frame_eps(vectors)
        noise = noise.to(device=vectors.device, dtype=torch.float64)
        if temperature == float("inf"):  # the vectors drown: frames of the noise alone
            frames = _gram_schmidt_of_noise(noise, self.frame_special, eps)
        else:
            frames = noisy_frames(vectors.double(), noise, special=self.frame_special, temperature=temperature,
                                  eps=eps, scale=_as_double(result.extras.get("scale")))
        return self._with_translation(frames.to(result.pose.dtype), result), None

    def pose_distribution(self, x: torch.Tensor, result: Canonicalization, temperature: float = 1.0
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """A :class:`ConfigError`: noisy frames have a continuous distribution, with no finite support to sum."""
        raise ConfigError(f"{type(self).__name__} draws poses from a continuous distribution (noisy frames): there is "
                          "no finite set of poses to sum; average many draws instead")

    def _frame_vectors(self, result: Canonicalization, x: torch.Tensor) -> torch.Tensor:
        vectors = result.extras.get("vectors")
        if vectors is None or vectors.ndim != 3 or vectors.shape[0] != x.shape[0]:
            raise ShapeError(f"expected this {type(self).__name__}'s result for {x.shape[0]} inputs, with its output "
                             "vectors (B, d, m) in result.extras['vectors']")
        return vectors

    def _with_translation(self, frames: torch.Tensor, result: Canonicalization) -> torch.Tensor:
        """Rotation frames ``(B, k, d, d)`` as poses: with the hard pose's translation for SE3/E3."""
        if not self.group.has_translations:
            return frames
        b, k, d = frames.shape[:3]
        group = cast(RigidGroup, self.group)
        translation = result.pose[:, :d, d].repeat_interleave(k, dim=0)
        poses = group.from_parts(frames.reshape(b * k, d, d), translation)
        return poses.reshape(b, k, *poses.shape[1:])


def _as_double(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.double()


def _gram_schmidt_of_noise(noise: torch.Tensor, special: bool, eps: float) -> torch.Tensor:
    """Frames ``(B, k, d, d)`` of standard normal draws ``(B, k, d, s)`` alone: Haar-distributed."""
    b, k, d, s = noise.shape
    return gram_schmidt(noise.reshape(b * k, d, s), special=special, eps=eps).reshape(b, k, d, d)
