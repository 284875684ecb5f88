"""Functional core of canonicalization: poses from network outputs, canonical forms, losses.

Discrete groups (C(n), D(n)): logits ``ℓ (B, |G|)`` that permute under the
regular action give the pose ``h = argmax ℓ``; the canonical form is
``h⁻¹·x``. Training uses straight-through gradients: the forward value is the
hard canonical form, the backward pass that of the softmax(ℓ/τ)-weighted
mixture of all ``|G|`` transformed inputs.

Continuous groups: the regular logits are turned into the matrix
``M = Σ_h ℓ_h ρ(h)``, which moves as ``M(g·x) = ρ(g) M(x)``; Gram–Schmidt on its
columns gives an orthogonal pose that moves the same way.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ..actions import Action
from ..errors import EquicanonError, ShapeError
from ..groups import FiniteGroup, Group

__all__ = [
    "straight_through",
    "all_transforms",
    "explained",
    "discrete_canonicalize",
    "gram_schmidt",
    "gram_schmidt_with_margin",
    "regular_to_matrix",
    "top_gap",
    "sorted_gap",
    "identity_cross_entropy",
    "matrix_prior",
    "nearest_element",
    "top_k_weights",
    "sample_categorical",
    "weighted_frames",
    "noisy_frames",
]


class _StraightThrough(torch.autograd.Function):
    """Value of ``hard``; gradient to both ``hard`` and ``soft``."""

    @staticmethod
    def forward(ctx: object, hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
        return hard.clone()

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return grad, grad


def _exact_factors(group: FiniteGroup, elements: torch.Tensor) -> list[tuple[int, torch.Tensor | None]]:
    """Each element ``h`` of ``elements`` ``(K,)`` as ``q ρ``: ``ρ`` one of few *residual* elements and ``q`` an
    element that moves images exactly (a quarter turn or flip: an index move, no interpolation).

    Returns ``[(r, q)]`` per element: ``r`` the position in ``elements`` of its residual ``ρ`` and ``q`` the
    element ``h ρ⁻¹`` (``None`` when ``h`` is its own residual). For ``C(8)`` the residuals are the identity and
    the 45° turn, so the eight copies ``h·x = q·(ρ·x)`` need two interpolations instead of four. Groups whose
    elements all move exactly, and non-planar groups, are their own residuals (no saving, nothing changes).
    """
    count = len(elements)
    if group.kind != "planar" or group.all_quarter_turns:
        return [(k, None) for k in range(count)]
    matrices = group.matrix(elements, dtype=torch.float64)
    exact = (matrices == matrices.round()).flatten(1).all(1).tolist()
    factors: list[tuple[int, torch.Tensor | None]] = []
    residuals: list[int] = []
    for k in range(count):
        h = elements[k:k + 1]
        if exact[k]:
            factors.append((-1, h))  # ρ = identity: q·x
            continue
        for r in residuals:
            q = group.compose(h, group.inverse(elements[r:r + 1]))
            m = group.matrix(q, dtype=torch.float64)
            if bool((m == m.round()).all()):
                factors.append((r, q))
                break
        else:
            residuals.append(k)
            factors.append((k, None))
    return factors


class _MixtureStraightThrough(torch.autograd.Function):
    """Value of ``hard``; gradient to ``hard``, and to the mixture weights as if the value were
    ``Σ_k w_k (g_k⁻¹·x)``, without ever holding the ``|G|`` transformed copies of ``x``.

    The weights' gradient is ``∂L/∂w_k = ⟨∂L/∂c, g_k⁻¹·x⟩`` (``c`` the canonical form, the inner product over
    each sample's entries), exactly what the mixture's backward computes. Here each copy is rebuilt in
    backward, one group element at a time, and reduced against the incoming gradient at once; an element that
    interpolates is built from a residual copy by an exact index move (:func:`_exact_factors`), so ``C(8)``
    interpolates once (the 45° copy) instead of four times. The result equals the mixture's gradient to
    rounding (``tests/test_canonicalizers_functional.py``). ``x`` gets no gradient (this path is taken only when
    it needs none).
    """

    @staticmethod
    def forward(ctx: Any, hard: torch.Tensor, weights: torch.Tensor, x: torch.Tensor, group: FiniteGroup,
                action: Action) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.group, ctx.action, ctx.weights_dtype = group, action, weights.dtype
        return hard.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_weights = None
        if ctx.needs_input_grad[1]:
            (x,) = ctx.saved_tensors
            group, action, b = ctx.group, ctx.action, x.shape[0]
            inverses = group.inverse(group.elements(device=x.device))  # copy k is g_k⁻¹·x
            flat_grad = grad.reshape(b, -1)
            residual: dict[int, torch.Tensor] = {-1: x}
            columns = []
            for r, q in _exact_factors(group, inverses):
                if r not in residual:
                    residual[r] = action(inverses[r:r + 1].expand(b), x)
                copy = residual[r] if q is None else action(q.expand(b), residual[r])
                columns.append(torch.linalg.vecdot(copy.reshape(b, -1).to(grad.dtype), flat_grad))
            grad_weights = torch.stack(columns, dim=1).to(ctx.weights_dtype)
        return grad, grad_weights, None, None, None


def straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """Return exactly ``hard`` in the forward pass; in backward, pass the gradient to ``hard`` and ``soft``.

    Unlike ``hard + soft - soft.detach()`` the value is bit-exact, so exact
    invariance of canonical forms also holds in training mode.
    """
    return _StraightThrough.apply(hard, soft)


def all_transforms(group: FiniteGroup, action: Action, x: torch.Tensor, *, inverse: bool = True) -> torch.Tensor:
    """All ``|G|`` transformed copies of a batch, computed as one batch.

    Args:
        x: ``(B, *)`` inputs.
        inverse: give ``g_k⁻¹·x`` (default) rather than ``g_k·x``.

    Returns:
        ``(B, |G|, *)`` with entry ``[:, k]`` equal to ``g_k⁻¹·x`` (or ``g_k·x``).
    """
    n, b = group.order, x.shape[0]
    elements = group.elements(device=x.device)
    if inverse:
        elements = group.inverse(elements)
    copies = explained(action, group, elements.repeat_interleave(b), x.repeat(n, *([1] * (x.ndim - 1))), x)
    return copies.reshape(n, b, *x.shape[1:]).transpose(0, 1)


def explained(action: Action, group: Group, g: torch.Tensor, copies: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``action(g, copies)`` for ``copies`` of ``x`` stacked along the batch; if the action rejects them,
    its error is raised for ``x`` itself (the identity on ``x``), so the message shows the caller's shape."""
    try:
        return action(g, copies)
    except EquicanonError:
        if isinstance(x, torch.Tensor) and x.ndim >= 1:
            action(group.identity(x.shape[0], device=x.device), x)  # raises the same check, naming x's shape
        raise


def discrete_canonicalize(
    x: torch.Tensor,
    logits: torch.Tensor,
    group: FiniteGroup,
    action: Action,
    *,
    temperature: float = 1.0,
    noise: torch.Tensor | None = None,
    copies: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pose ``h = argmax ℓ`` and canonical form ``h⁻¹·x``, with straight-through gradients.

    Args:
        x: ``(B, *)`` inputs that ``action`` transforms.
        logits: ``(B, |G|)`` regular logits.
        temperature: ``τ`` of the softmax used in the backward pass.
        noise: optional ``(B, |G|)`` noise added to the logits for both the pose and the
            softmax (Gumbel-softmax straight-through); ``None`` for exact equivariance.
        copies: ``all_transforms(group, action, x)`` ``(B, |G|, *)`` when the caller has it
            already (e.g. it scored every copy); the canonical form is then picked from it.

    Returns:
        ``(canonical, pose)``: ``(B, *)`` and ``(B,)`` int64. Without ``copies``, each input is transformed
        once, by its pose; when gradients flow to ``logits`` and ``x`` needs none (the usual case: data), the
        mixture's gradient is computed in backward one group element at a time, never holding the ``|G|``
        copies (:class:`_MixtureStraightThrough`); when ``x`` needs a gradient too, the mixture of all ``|G|``
        transforms is built.
    """
    if logits.ndim != 2 or logits.shape != (x.shape[0], group.order):
        raise ShapeError(f"logits: expected shape ({x.shape[0]}, {group.order}), got {tuple(logits.shape)}")
    if copies is not None and copies.shape != (x.shape[0], group.order, *x.shape[1:]):
        raise ShapeError(f"copies: expected shape {(x.shape[0], group.order, *x.shape[1:])}, got {tuple(copies.shape)}")
    scores = logits if noise is None else logits + noise
    pose = scores.argmax(dim=-1)
    if not (torch.is_grad_enabled() and logits.requires_grad):
        if copies is not None:
            return copies[torch.arange(x.shape[0], device=x.device), pose], pose
        return action(group.inverse(pose), x), pose
    if copies is None and not x.requires_grad:
        # the mixture's gradient without its |G| full-size copies: one copy at a time, rebuilt in backward
        weights = torch.softmax(scores / temperature, dim=-1)
        hard = action(group.inverse(pose), x)
        return _MixtureStraightThrough.apply(hard, weights, x, group, action), pose
    if copies is None:
        copies = all_transforms(group, action, x)  # (B, |G|, *)
    weights = torch.softmax(scores / temperature, dim=-1).to(copies.dtype)
    soft = torch.einsum("bk,bk...->b...", weights, copies)
    hard = copies[torch.arange(x.shape[0], device=x.device), pose]
    return straight_through(hard, soft), pose


def _relative_floor(dtype: torch.dtype) -> float:
    """The smallest relative residual that :func:`gram_schmidt` ever counts as independent in ``dtype``:
    ``sqrt(machine epsilon)`` (float64 1.5e-8, float32 3.5e-4), above the rounding noise of a network's
    exactly degenerate outputs."""
    return math.sqrt(torch.finfo(dtype).eps)


def gram_schmidt(vectors: torch.Tensor, *, special: bool, eps: float = 1e-6,
                 scale: torch.Tensor | None = None) -> torch.Tensor:
    """Orthonormalise ``k`` vectors in ``d`` dimensions into ``(B, d, d)`` orthogonal matrices, for any finite input.

    Args:
        vectors: ``(B, d, k)``, the ``k`` vectors as columns (``k = d``, or ``k = d - 1``
            when ``special``; the last column is then completed).
        special: if True the result has ``det = +1`` (SO(d)): with ``k = d`` the last
            column's sign is chosen; with ``k = d - 1`` it is the completing column. If
            False (O(d)) the sign that Gram–Schmidt gives is kept, so reflections survive.
        eps: relative degeneracy threshold. Column ``i`` is *degenerate* when its part orthogonal to the
            columns before it is at most ``max(eps, sqrt(machine epsilon of the dtype))`` times the sample's
            reference magnitude (the longest input column, or ``scale`` if larger); the threshold scales with
            the input, so ``c · vectors`` gives the same pose for every ``c > 0`` (bit for bit when ``c`` is a
            power of two; values are normalised by one first, so no square under- or overflows).
        scale: optional ``(B,)`` reference magnitude per sample, e.g. the norm the vectors would have without
            cancellation in the network that made them (a network's outputs that vanish by symmetry are
            rounding noise, which relative to itself looks independent). ``None``: the longest column.

    Degenerate columns are completed deterministically, so every sample gets an orthogonal matrix in the
    input's dtype (an all-zero sample gives the identity): the last column by the (generalised) cross
    product of the others (``det = +1``), any earlier one by the standard basis vector least aligned with
    the columns so far (the first of those on a tie), projected and normalised. Columns in the span of the
    independent ones are therefore moved consistently, and values and gradients stay finite (no division by
    a vanishing norm). See :func:`gram_schmidt_with_margin` for how close a sample came to a degeneracy.

    Equivariant: ``gram_schmidt(Q @ V) = Q @ gram_schmidt(V)`` for orthogonal ``Q`` (with
    ``det Q = 1`` when ``special``: a ``det = +1`` result cannot follow a reflection) wherever no column
    is degenerate.
    """
    return gram_schmidt_with_margin(vectors, special=special, eps=eps, scale=scale)[0]


def gram_schmidt_with_margin(vectors: torch.Tensor, *, special: bool, eps: float = 1e-6,
                             scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`gram_schmidt` and its margin: ``(pose (B, d, d), margin (B,))``.

    ``margin`` (detached, the input's dtype) is the smallest relative residual of the ``k`` columns, each
    column's part orthogonal to the columns before it divided by the sample's reference magnitude (in
    ``[0, 1]``), and 0 where a column is degenerate (completed).
    """
    if vectors.ndim != 3 or vectors.shape[-1] not in (vectors.shape[-2], vectors.shape[-2] - 1):
        raise ShapeError(f"vectors: expected shape (B, d, d) or (B, d, d-1), got {tuple(vectors.shape)}")
    d, k = vectors.shape[-2], vectors.shape[-1]
    if k == d - 1 and not special:
        raise ShapeError("gram_schmidt: O(d) poses need d vectors; d-1 vectors only fix an SO(d) pose")
    if scale is not None and scale.shape != vectors.shape[:1]:
        raise ShapeError(f"scale: expected shape ({vectors.shape[0]},), got {tuple(scale.shape)}")
    tol = max(float(eps), _relative_floor(vectors.dtype))
    # a column that keeps less than this fraction of its length is projected twice: the single pass loses
    # orthogonality as (machine epsilon) / fraction, at most eps^(3/4) (float64 2e-12, float32 6e-6) this way
    reorthogonalise = torch.finfo(vectors.dtype).eps ** 0.25
    # Divide by a power of two near the sample's magnitude: exact (the same bits after normalisation), and no
    # square under- or overflows whatever the input's scale.
    magnitude = vectors.detach().abs().amax(dim=(1, 2))
    if scale is not None:
        magnitude = torch.maximum(magnitude, scale.detach().to(magnitude))
    power = torch.ldexp(torch.ones_like(magnitude), torch.frexp(magnitude).exponent)
    power = torch.where(torch.isfinite(power) & (power > 0), power, torch.ones_like(power))
    vectors = vectors / power[:, None, None]
    reference = torch.linalg.vector_norm(vectors.detach(), dim=1).amax(dim=1, keepdim=True)  # (B, 1)
    if scale is not None:
        reference = torch.maximum(reference, (scale.detach().to(reference) / power)[:, None])
    floor = tol * reference
    safe_reference = torch.where(reference > 0, reference, torch.ones_like(reference))
    columns: list[torch.Tensor] = []
    margin = torch.full_like(reference, math.inf)
    for i in range(k):
        w = vectors[:, :, i]
        v = _project_out(w, columns)
        sq = (v * v).sum(-1, keepdim=True)
        if columns:
            # "twice is enough" (Kahan, Parlett): where cancellation removed most of w, project once more, so
            # the column stays orthogonal to rounding error however close to dependent it was
            again = _project_out(v, columns)
            heavy = sq.detach() < (w.detach() * w.detach()).sum(-1, keepdim=True) * reorthogonalise**2
            v = torch.where(heavy, again, v)
            sq = torch.where(heavy, (again * again).sum(-1, keepdim=True), sq)
        residual = torch.sqrt(sq.detach())
        independent = residual > floor
        unit = v / torch.sqrt(torch.where(independent, sq, torch.ones_like(sq)))
        completion = _complete(columns) if i == d - 1 else _least_aligned(columns, w)
        columns.append(torch.where(independent, unit, completion))
        margin = torch.minimum(margin, torch.where(independent, residual / safe_reference, torch.zeros_like(residual)))
    if k == d - 1:
        columns.append(_complete(columns))
    q = torch.stack(columns, dim=-1)
    if special and k == d:
        sign = torch.sign(torch.linalg.det(q.detach().double())).to(q.dtype)
        sign = torch.where(sign == 0, torch.ones_like(sign), sign)
        q = torch.cat([q[..., :-1], q[..., -1:] * sign[:, None, None]], dim=-1)
    return q, margin[:, 0]


def _project_out(v: torch.Tensor, columns: list[torch.Tensor]) -> torch.Tensor:
    """``v`` minus its components along the orthonormal ``columns``, one after the other (modified Gram–Schmidt)."""
    for u in columns:
        v = v - (u * v).sum(-1, keepdim=True) * u
    return v


def _least_aligned(columns: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """The unit column orthogonal to ``columns`` made from the standard basis vector least aligned with them
    (smallest ``Σ_u u_j²``; the first on a tie): ``e_0`` for no columns. Its residual has norm at least
    ``sqrt(1 − m/d)`` for ``m < d`` columns, so it is well-conditioned."""
    b, d = like.shape
    alignment = torch.zeros(b, d, dtype=like.dtype, device=like.device)
    for u in columns:
        alignment = alignment + u.detach() * u.detach()
    # a comparison, not F.one_hot, which reads the indices on the host to check them
    e = (torch.arange(d, device=like.device) == alignment.argmin(dim=1, keepdim=True)).to(like.dtype)
    e = _project_out(e, columns)
    return e / torch.sqrt((e * e).sum(-1, keepdim=True))


def _complete(columns: list[torch.Tensor]) -> torch.Tensor:
    """The unit column that completes ``d - 1`` orthonormal columns to a rotation (``det = +1``)."""
    d = columns[0].shape[-1]
    if d == 2:
        a = columns[0]
        return torch.stack([-a[:, 1], a[:, 0]], dim=-1)
    if d == 3:
        return torch.linalg.cross(columns[0], columns[1], dim=-1)
    # generalised cross product: cofactors of the (d-1) x d matrix of the columns
    m = torch.stack(columns, dim=-2)  # (B, d-1, d)
    out = []
    for j in range(d):
        minor = torch.cat([m[..., :j], m[..., j + 1:]], dim=-1)
        out.append(((-1) ** (d - 1 + j)) * torch.linalg.det(minor))
    return torch.stack(out, dim=-1)


def top_gap(scores: torch.Tensor) -> torch.Tensor:
    """Margin of an argmax: largest minus second-largest of ``scores (B, K)``, ``(B,)``, detached; 0 at a tie,
    ``inf`` for ``K = 1`` (no runner-up). Pure tensor ops: no host synchronisation."""
    scores = scores.detach()
    if scores.shape[-1] < 2:
        return torch.full(scores.shape[:-1], math.inf, dtype=scores.dtype, device=scores.device)
    top = scores.topk(2, dim=-1).values
    return top[..., 0] - top[..., 1]


def sorted_gap(scores: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Margin of an argsort: the smallest gap between consecutive sorted ``scores (B, n)``, ``(B,)``, detached;
    0 at a tie, ``inf`` for ``n = 1``. With ``mask (B, n)`` (True: a real element; padded elements must score
    above every real one, so they sort last) only the gaps between real elements count (``inf`` for one)."""
    scores = scores.detach()
    if scores.shape[-1] < 2:
        return torch.full(scores.shape[:-1], math.inf, dtype=scores.dtype, device=scores.device)
    gaps = scores.sort(dim=-1).values.diff(dim=-1)  # (B, n - 1)
    if mask is not None:
        real_pair = torch.arange(gaps.shape[-1], device=gaps.device) < mask.sum(dim=-1, keepdim=True) - 1
        gaps = torch.where(real_pair, gaps, torch.full_like(gaps, math.inf))
    return gaps.amin(dim=-1)


def regular_to_matrix(group: FiniteGroup, logits: torch.Tensor) -> torch.Tensor:
    """``M = Σ_h ℓ_h ρ(h)``: ``(B, |G|)`` regular logits to ``(B, d, d)`` matrices with ``M(g·x) = ρ(g) M(x)``."""
    mats = group.matrix(group.elements(device=logits.device), dtype=logits.dtype)
    return torch.einsum("bk,kij->bij", logits, mats)


def identity_cross_entropy(logits: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Prior for discrete poses: cross-entropy of ``(B, |G|)`` logits against the identity (index 0).

    With ``target`` (``(B,)`` element indices), against those elements instead: the prior for
    upright inputs moved by ``target`` (``pose(g·x) = g`` when ``pose(x) = e``). A floating ``target``
    ``(B, |G|)`` is a distribution over the elements per input (the model-driven prior: a teacher's pose
    distribution); the cross-entropy to it is its KL divergence up to the target's entropy, a constant.
    """
    if target is None:
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    elif target.is_floating_point():
        if target.shape != logits.shape:
            raise ShapeError(f"prior target: expected a distribution over the {logits.shape[1]} elements per input, "
                             f"shape {tuple(logits.shape)}, got shape {tuple(target.shape)}")
        return F.cross_entropy(logits, target.detach().to(logits))
    elif target.shape != logits.shape[:1] or target.dtype != torch.long:
        raise ShapeError(f"prior target: expected {logits.shape[0]} element indices, shape ({logits.shape[0]},) "
                         f"int64, got shape {tuple(target.shape)} {target.dtype}")
    return F.cross_entropy(logits, target.to(logits.device))


def matrix_prior(pose: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Prior for continuous poses: mean over the batch of ``‖R − I‖²_F`` (``‖R − T‖²_F`` for a ``target`` ``T``)."""
    if target is None:
        target = torch.eye(pose.shape[-1], dtype=pose.dtype, device=pose.device)
    elif target.shape != pose.shape:
        raise ShapeError(f"prior target: expected matrices of the poses' shape {tuple(pose.shape)}, "
                         f"got shape {tuple(target.shape)}")
    return ((pose - target.to(pose)) ** 2).sum(dim=(-2, -1)).mean()



def nearest_element(group: FiniteGroup, m: torch.Tensor) -> torch.Tensor:
    """Indices ``(B,)`` of the elements of the finite planar ``group`` whose matrices are nearest (Frobenius)
    to ``m: (B, 2, 2)``: e.g. the C(8) element nearest a rotation by any angle."""
    mats = group.matrix(group.elements(device=m.device), dtype=m.dtype)
    distance = (m[:, None] - mats[None]).flatten(2).square().sum(-1)
    return distance.argmin(dim=1)


def top_k_weights(logits: torch.Tensor, top_k: int, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``top_k`` elements of largest logit and their weights, continuous in the logits.

    With ``ℓ_(1) ≥ ℓ_(2) ≥ …`` a sample's logits sorted and ``t = ℓ_(k+1)`` the largest logit left out,
    element ``h`` weighs

        ``w_h = exp(ℓ_h/τ) · (ℓ_h − t)₊ / Σ_h' exp(ℓ_h'/τ) · (ℓ_h' − t)₊``

    (the softmax over the top ``k`` times the gap to the first excluded logit, normalised; the softmax's own
    normaliser cancels). Elements outside the top ``k`` have ``ℓ_h ≤ t``, so the formula gives them 0 as it
    stands: the top-``k`` cut is no extra switch. ``t`` (an order statistic) and ``(·)₊`` are continuous, so
    every ``w_h`` is a continuous function of the logits wherever the denominator is positive, i.e. unless
    ``k + 1`` logits tie for the largest (then no choice of ``k`` elements is continuous; the weights are
    ``1/k`` on the first ``k`` by index). An element that is about to leave the top ``k`` has ``ℓ_h → t``:
    its weight goes to 0 linearly. ``k = |G|`` has no excluded element: ``w = softmax(ℓ/τ)``, smooth.
    ``τ = inf``: ``w_h ∝ (ℓ_h − t)₊`` (uniform for ``k = |G|``). ``k = 1``: weight 1 on the argmax.
    The weights move with the logits, so regular logits (``ℓ(g·x)[g h] = ℓ(x)[h]``) give equivariant weights,
    ``w_{gh}(g·x) = w_h(x)``.

    Args:
        logits: ``(B, n)`` scores, one per element.
        top_k: ``k``, ``1 ≤ k ≤ n``.
        temperature: ``τ > 0`` of the softmax; ``math.inf`` for none.

    Returns:
        ``(elements, weights)``: ``(B, k)`` int64 indices, best first (ties: lower index first, as
        ``argmax``), and ``(B, k)`` weights ``≥ 0`` summing to 1, differentiable in ``logits``.

    Example:
        >>> elements, weights = top_k_weights(torch.tensor([[2.0, 0.0, 1.0, 1.0]]), 2)
        >>> elements.tolist(), weights.tolist()  # ℓ_(3) = 1: the second-best element ties with it, weight 0
        ([[0, 2]], [[1.0, 0.0]])
    """
    n = logits.shape[-1]
    values, order = torch.sort(logits, dim=-1, descending=True, stable=True)
    top, elements = values[:, :top_k], order[:, :top_k]
    soft = torch.exp((top - top[:, :1].detach()) / temperature)  # exp(ℓ/τ) up to a factor; 1 for the best
    if top_k == n:
        return elements, soft / soft.sum(dim=-1, keepdim=True)
    raw = soft * (top - values[:, top_k:top_k + 1])  # the gaps are >= 0: the values are sorted
    total = raw.sum(dim=-1, keepdim=True)
    tied = total <= 0  # ℓ_(1) = ℓ_(k+1): k + 1 elements tie for the largest logit
    weights = torch.where(tied, torch.full_like(raw, 1.0 / top_k), raw / torch.where(tied, torch.ones_like(total), total))
    return elements, weights


def sample_categorical(logits: torch.Tensor, samples: int, temperature: float = 1.0,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """``samples`` i.i.d. draws per row from ``softmax(ℓ/τ)``: ``(B, k)`` int64 indices for logits ``(B, n)``.

    Inverse-CDF sampling of uniforms drawn from ``generator`` (``None``: torch's global one) on the generator's
    device, so a seeded CPU generator draws the same indices for logits on any device. Indices of probability 0
    (logit ``-inf``) are never drawn; ``τ = math.inf`` draws uniformly.
    """
    work = torch.float32 if logits.device.type == "mps" else torch.float64  # MPS has no float64
    cdf = torch.softmax(logits.detach().to(work) / temperature, dim=-1).cumsum(dim=-1)
    u = torch.rand(logits.shape[0], samples, generator=generator, dtype=torch.float64,
                   device=generator.device if generator is not None else logits.device).to(device=logits.device,
                                                                                           dtype=work)
    drawn = torch.searchsorted(cdf, (u * cdf[:, -1:]).contiguous(), right=True)  # cdf[i-1] <= u·total < cdf[i]
    return drawn.clamp_(max=logits.shape[-1] - 1)


def _frame_size(vectors: torch.Tensor, special: bool) -> int:
    """How many of ``vectors (B, d, m)``'s columns fix a pose: ``d - 1`` (``special``) or ``d``; else a ShapeError."""
    if vectors.ndim != 3:
        raise ShapeError(f"vectors: expected shape (B, d, m), m vectors as columns, got {tuple(vectors.shape)}")
    d, m = vectors.shape[-2:]
    size = d - 1 if special else d
    if m < size:
        raise ShapeError(f"vectors: a {'rotation' if special else 'pose'} in {d} dimensions needs {size} vectors, "
                         f"got shape {tuple(vectors.shape)}")
    return size


def weighted_frames(vectors: torch.Tensor, top_k: int, *, special: bool, temperature: float = 1.0,
                    eps: float = 1e-6, scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted frames of equivariant vectors: the ``top_k`` best-conditioned Gram–Schmidt frames and their weights.

    Every subset of ``s`` of the ``m`` columns (``s = d - 1`` when ``special``, else ``d``; in index order)
    is orthonormalised by :func:`gram_schmidt_with_margin` into a frame ``F_S``, which moves with the input
    (``F_S(QV) = Q F_S(V)``) wherever its columns are independent. Its score is ``c_S = (margin_S − tol)₊``,
    ``tol = max(eps, sqrt(machine epsilon))`` Gram–Schmidt's own threshold: invariant, continuous, and 0
    exactly where ``F_S`` is completed (nearly dependent columns), i.e. wherever ``F_S`` can jump. The
    weights are :func:`top_k_weights` of the scores with one more score 0 that is never a frame, so the
    ``(k+1)``-th score is ``≥ 0`` and ``w_S ∝ exp(c_S/τ) · (c_S − c_(k+1))₊`` vanishes at every degenerate
    frame, also for ``k`` = all subsets. Hence ``Σ_S w_S · F_S ⋆ p(F_S⁻¹·x)`` is exactly equivariant and
    continuous wherever at least one subset is independent (Dym, Lawrence & Siegel, ICML 2024: weighted
    frames are continuous where every canonicalization jumps). Where every subset is degenerate the weights
    are ``1/k`` on the first ``k`` (completed) frames.

    Args:
        vectors: ``(B, d, m)`` equivariant vectors as columns, ``m ≥ s``.
        top_k: frames per sample, ``1 ≤ k ≤ C(m, s)``.
        special: ``det = +1`` frames (SO(d)) from ``d - 1`` columns and their completion; else O(d) frames.
        temperature: ``τ > 0`` of the factor ``exp(c/τ)`` (``math.inf``: none).
        eps, scale: Gram–Schmidt's relative threshold and reference magnitude ``(B,)``, the same for every
            subset (``None``: the longest of the ``m`` vectors); it must be invariant, e.g. the size the vectors
            would have without cancellation in the network that made them.

    Returns:
        ``(frames (B, k, d, d), weights (B, k))``: best first; the weights (detached) are ``≥ 0`` and sum to 1.

    Example:
        >>> v = torch.tensor([[[1.0, 0.0, 1.0], [0.0, 1.0, 0.2], [0.0, 0.0, 0.0]]])  # columns x, y, x + 0.2 y
        >>> frames, weights = weighted_frames(v, 3, special=True)  # pairs (x, y), (x, x + 0.2 y), (y, x + 0.2 y)
        >>> frames.shape, [round(w, 3) for w in weights[0].tolist()]  # the nearly dependent pair weighs little
        (torch.Size([1, 3, 3, 3]), [0.478, 0.478, 0.044])
    """
    size = _frame_size(vectors, special)
    b, d, m = vectors.shape
    subsets = torch.combinations(torch.arange(m, device=vectors.device), size)  # (S, s), rows in index order
    n = subsets.shape[0]
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= n:
        raise ShapeError(f"top_k: expected an integer from 1 to C({m}, {size}) = {n}, the frames of {m} vectors, "
                         f"got {top_k!r}")
    chosen = vectors[:, :, subsets].permute(0, 2, 1, 3).reshape(b * n, d, size)  # (B·S, d, s)
    if scale is None:  # one reference for every subset, so that their scores compare
        scale = torch.linalg.vector_norm(vectors.detach(), dim=1).amax(dim=1)
    frames, margin = gram_schmidt_with_margin(chosen, special=special, eps=eps, scale=scale.repeat_interleave(n))
    tol = max(float(eps), _relative_floor(vectors.dtype))
    scores = (margin.reshape(b, n) - tol).clamp_min(0)
    scores = torch.cat([scores, torch.zeros_like(scores[:, :1])], dim=1)  # the score-0 non-frame, index n
    best, weights = top_k_weights(scores, top_k, temperature)
    best = best.clamp(max=n - 1)  # the non-frame gets weight 0 (it ties with the (k+1)-th), or all tie at 0
    picked = frames.reshape(b, n, d, d).gather(1, best[:, :, None, None].expand(b, top_k, d, d))
    return picked, weights.detach()


def noisy_frames(vectors: torch.Tensor, noise: torch.Tensor, *, special: bool, temperature: float = 1.0,
                 eps: float = 1e-6, scale: torch.Tensor | None = None) -> torch.Tensor:
    """Frames of equivariant vectors moved by isotropic Gaussian noise: ``k`` draws from an equivariant distribution.

    ``F_j = gram_schmidt(V_s + τ · r · E_j)`` with ``V_s`` the first ``s`` columns of ``vectors`` (``s = d - 1``
    when ``special``, else ``d``), ``r`` the RMS length of those columns (invariant, detached) and ``E_j`` the
    ``(d, s)`` slices of ``noise``, i.i.d. standard normal. The normal law is invariant under orthogonal maps,
    so ``Q V + τ r E =_d Q (V + τ r E)`` and ``F(Q·x) =_d Q F(x)``: equivariant in distribution, and exactly
    equivariant when the noise is moved too (``noise → Q noise``). The frames are differentiable in
    ``vectors`` (reparameterization: pathwise gradients, Kim et al., NeurIPS 2023). ``τ → 0`` gives the
    noise-free Gram–Schmidt pose.

    Args:
        vectors: ``(B, d, m)`` equivariant vectors as columns, ``m ≥ s``.
        noise: ``(B, k, d, s)`` standard normal draws, ``k`` per sample.
        special, eps, scale: as for :func:`gram_schmidt` (``scale (B,)``).
        temperature: ``τ ≥ 0``, the noise's standard deviation relative to ``r``.

    Returns:
        ``(B, k, d, d)`` orthogonal frames (``det = +1`` when ``special``).
    """
    size = _frame_size(vectors, special)
    b, d = vectors.shape[:2]
    if noise.ndim != 4 or noise.shape[0] != b or noise.shape[2:] != (d, size):
        raise ShapeError(f"noise: expected shape ({b}, k, {d}, {size}), k draws of {size} vectors per sample, "
                         f"got {tuple(noise.shape)}")
    k = noise.shape[1]
    base = vectors[:, :, :size]
    rms = base.detach().square().sum(dim=1).mean(dim=-1).sqrt()  # (B,)
    moved = base[:, None] + (temperature * rms)[:, None, None, None] * noise.to(base)
    frames = gram_schmidt(moved.reshape(b * k, d, size), special=special, eps=eps,
                          scale=None if scale is None else scale.repeat_interleave(k))
    return frames.reshape(b, k, d, d)
