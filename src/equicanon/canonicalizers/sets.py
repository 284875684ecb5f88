"""Canonicalization of sets under S(n): sort by learned permutation-equivariant scores."""

from __future__ import annotations

from functools import partial
from typing import cast

import torch

from ..actions import Set
from ..errors import ConfigError, ShapeError, check_floating, check_mask, check_positive_int
from ..groups import Group, S, as_group
from ..nn.sets import DeepSetsScorer
from .base import Canonicalization, Canonicalizer, RegistryCase, register
from .functional import sorted_gap, straight_through

__all__ = ["Sort", "soft_sort_matrix"]


def soft_sort_matrix(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """Relaxed permutation matrices ``(B, n, n)`` (SoftSort, Prillo & Eisenschlos 2020).

    Row ``j`` is ``softmax_i(-|sorted_j − s_i| / τ)``: as ``τ → 0`` it becomes the
    hard matrix that picks the ``j``-th smallest score.
    """
    ordered = scores.sort(dim=-1, stable=True).values
    return torch.softmax(-(ordered[:, :, None] - scores[:, None, :]).abs() / temperature, dim=-1)


class Sort(Canonicalizer):
    """Canonicalize sets ``(B, n, F)`` by stably sorting their elements by learned scores.

    A DeepSets network gives one score per element, permuting with the set; the
    pose is the stable argsort ``π`` and the canonical form is the sorted set
    ``x̄[j] = x[π(j)]``. Exact: ``pose(g·x) = g ∘ pose(x)`` whenever scores have no
    ties (stable sorting breaks ties by position, which is not equivariant; ties
    are measure-zero for real-valued features). Equal elements get equal scores, so a set
    with repeated elements still has an invariant canonical form. ``margin`` is the smallest
    gap between consecutive sorted scores (0 at a tie). Training uses straight-through
    gradients through a SoftSort relaxation with ``temperature``.

    Args:
        group: ``S(n)``, or its name (``"S5"``).
        in_features: ``F``, features per element.
        hidden, layers: width and depth of the DeepSets scorer.
        temperature: SoftSort temperature of the backward pass.
        check_inputs: refuse sets holding NaN or Inf (:class:`~equicanon.canonicalizers.Canonicalizer`).
    """

    def __init__(self, group: Group | str, in_features: int, *, hidden: int = 32, layers: int = 2,
                 temperature: float = 0.1, check_inputs: bool = True) -> None:
        super().__init__(check_inputs=check_inputs)
        group = as_group(group, where=lambda g: g.kind == "permutation", expected="S(n)", what="Sort: group")
        if isinstance(temperature, bool) or not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ConfigError(f"temperature must be a positive number, got {temperature!r}")
        self.group = group
        self.action = Set(group)
        self.in_features = check_positive_int(in_features, "in_features")
        self.temperature = float(temperature)
        self.scorer = DeepSetsScorer(in_features, hidden, layers)

    accepts_mask = True

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> Canonicalization:
        """Canonicalize sets ``x: (B, n, F)``. ``mask (B, n)`` bool (True: a real element) for sets of different
        sizes padded to ``n``: the scorer's set means are over the real elements and padded elements sort last,
        so the real elements' order (the first ``N_real`` entries of the pose) does not depend on the padding.
        The canonical form permutes the elements, so a predictor that takes the mask needs it permuted as well:
        ``Canonicalized(..., keyword_actions={"mask": ec.actions.Set(group)})`` (its real elements come first)."""
        n = cast(S, self.group).n
        if x.ndim != 3 or x.shape[1:] != (n, self.in_features):
            raise ShapeError(f"sets: expected (B, {n}, {self.in_features}), got shape {tuple(x.shape)}")
        check_floating(x, "sets")
        mask = check_mask(mask, x)
        scores = self.scorer(x, mask)  # (B, n)
        if mask is not None:  # padding sorts last: above every real score (detached: no gradient to padding)
            top = scores.detach().masked_fill(~mask, float("-inf")).amax(dim=1, keepdim=True)
            scores = torch.where(mask, scores, top + 1)
        pose = scores.argsort(dim=-1, stable=True)
        hard = x.gather(1, pose[..., None].expand_as(x))
        canonical = hard
        if torch.is_grad_enabled() and scores.requires_grad:
            soft = soft_sort_matrix(scores, self.temperature).to(x.dtype) @ x
            canonical = straight_through(hard, soft)
        extras = {"scores": scores} if mask is None else {"scores": scores, "mask": mask}
        return Canonicalization(canonical, pose, self.group, logits=None, extras=extras,
                                margin=sorted_gap(scores, mask))

    # --- sampled poses (Symmetrized): Gumbel-perturbed sorts, i.e. Plackett–Luce permutations -----------------

    @property
    def samples_poses(self) -> bool:
        """Always: sorts of the scores perturbed by Gumbel noise (:meth:`sampled_poses`)."""
        return True

    def sampled_poses(self, x: torch.Tensor, result: Canonicalization, samples: int, temperature: float = 1.0,
                      generator: torch.Generator | None = None, noise: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``samples`` permutations per set from the Plackett–Luce distribution of the scores: ``(poses (B, k, n),
        log p (B, k))``.

        ``π = argsort(s/τ − G)`` with ``G`` i.i.d. standard Gumbel noise per element (the Gumbel-max trick for
        sequential sampling without replacement): the element of smallest ``s/τ − G`` comes first, and
        ``p(π|x) = Π_j exp(−s_{π_j}/τ) / Σ_{i ≥ j} exp(−s_{π_i}/τ)``. The noise is exchangeable, so permuting the
        set permutes the draws: ``π(g·x) =_d g ∘ π(x)``, equivariant in distribution (exactly, when ``noise``
        ``(B, k, n)`` is permuted with the set). ``τ → 0`` gives the hard sort, ``τ = math.inf`` uniform
        permutations. The draws are discrete: ``log p`` (differentiable in the scores) is for the caller's
        score-function gradient.
        """
        if "mask" in result.extras:
            raise ConfigError("Sort: sampling poses of padded sets (a mask) is not supported; use Canonicalized, or "
                              "batch sets of one size")
        scores = result.extras.get("scores")
        if scores is None or scores.shape != (x.shape[0], cast(S, self.group).n):
            raise ShapeError(f"expected this Sort's result for {x.shape[0]} sets, with its scores "
                             f"({x.shape[0]}, {cast(S, self.group).n}) in result.extras['scores']")
        b, n = scores.shape
        if noise is None:
            device = generator.device if generator is not None else scores.device
            u = torch.rand(b, samples, n, generator=generator, dtype=torch.float64, device=device)
            noise = -torch.log(-torch.log(u.clamp(1e-300, 1.0 - 1e-16)))
        elif tuple(noise.shape) != (b, samples, n):
            raise ShapeError(f"noise: expected shape ({b}, {samples}, {n}), got {tuple(noise.shape)}")
        noise = noise.to(device=scores.device, dtype=torch.float64)
        keys = scores.detach().double()[:, None] / temperature - noise if temperature != float("inf") else -noise
        poses = keys.argsort(dim=-1, stable=True)  # (B, k, n)
        utility = (-scores / temperature if temperature != float("inf") else torch.zeros_like(scores))
        ordered = utility[:, None].expand(b, samples, n).gather(2, poses)  # u_{π_1}, ..., u_{π_n}
        tails = torch.logcumsumexp(ordered.flip(-1), dim=-1).flip(-1)  # log Σ_{i ≥ j} exp(u_{π_i})
        return poses, (ordered - tails).sum(dim=-1)

    def prior_loss(self, result: Canonicalization, target: torch.Tensor | None = None) -> torch.Tensor:
        """Sets have no prior: no permutation of a set is more "upright" than another."""
        raise ConfigError(
            "Sort has no prior loss: a set has no preferred order, so pulling poses towards the identity "
            "permutation would only teach the scorer the input order. Train with the task loss alone."
        )


def _cases() -> list[RegistryCase]:
    return [RegistryCase(f"S({n})", partial(Sort, S(n), 3, hidden=8), (2, n, 3)) for n in (1, 5, 7)]


register("sort", _cases)(Sort)
