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

import torch
import torch.nn.functional as F

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
]


class _StraightThrough(torch.autograd.Function):
    """Value of ``hard``; gradient to both ``hard`` and ``soft``."""

    @staticmethod
    def forward(ctx: object, hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
        return hard.clone()

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return grad, grad


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
        ``(canonical, pose)``: ``(B, *)`` and ``(B,)`` int64. Without ``copies``, the mixture
        of all ``|G|`` transforms is computed only when gradients will flow to ``logits``.
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


def sorted_gap(scores: torch.Tensor) -> torch.Tensor:
    """Margin of an argsort: the smallest gap between consecutive sorted ``scores (B, n)``, ``(B,)``, detached;
    0 at a tie, ``inf`` for ``n = 1``."""
    scores = scores.detach()
    if scores.shape[-1] < 2:
        return torch.full(scores.shape[:-1], math.inf, dtype=scores.dtype, device=scores.device)
    return scores.sort(dim=-1).values.diff(dim=-1).amin(dim=-1)


def regular_to_matrix(group: FiniteGroup, logits: torch.Tensor) -> torch.Tensor:
    """``M = Σ_h ℓ_h ρ(h)``: ``(B, |G|)`` regular logits to ``(B, d, d)`` matrices with ``M(g·x) = ρ(g) M(x)``."""
    mats = group.matrix(group.elements(device=logits.device), dtype=logits.dtype)
    return torch.einsum("bk,kij->bij", logits, mats)


def identity_cross_entropy(logits: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Prior for discrete poses: cross-entropy of ``(B, |G|)`` logits against the identity (index 0).

    With ``target`` (``(B,)`` element indices), against those elements instead: the prior for
    upright inputs moved by ``target`` (``pose(g·x) = g`` when ``pose(x) = e``).
    """
    if target is None:
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
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
