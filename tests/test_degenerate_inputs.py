"""Valid poses on degenerate inputs (issue 17): every registered canonicalizer, every degenerate input.

Blank, constant, rotation-symmetric and tiny images; all-zero, coincident, single, collinear, planar and
tiny point clouds and particle systems; sets with repeated elements. For each, in float64 and float32: the
pose is a group element, the canonical form is finite, gradients of ``canonical.sum()`` with respect to the
input and the parameters are finite, and the result carries a ``margin`` that is 0 at a tie.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch

import equicanon as ec
from equicanon.actions import Particles
from equicanon.canonicalizers import Canonicalizer, RegistryCase, available, entry
from equicanon.canonicalizers.functional import gram_schmidt, gram_schmidt_with_margin
from equicanon.testing import canonicalizer_error, default_tolerance, element_error

CASES = [pytest.param(case, id=f"{name}:{case.name}") for name in available() for case in entry(name).test_cases()]
DTYPES = [pytest.param(torch.float64, id="float64"), pytest.param(torch.float32, id="float32")]
B = 2


def _make(case: RegistryCase, dtype: torch.dtype = torch.float64) -> Canonicalizer:
    torch.manual_seed(0)
    return case.make().to(dtype).eval()


def _kind(canon: Canonicalizer, case: RegistryCase) -> str:
    if "size" in case.input_shape:
        return "image"
    if canon.group.kind == "permutation":
        return "set"
    return "particles" if isinstance(canon.action, Particles) else "points"


def _radial(size: int) -> torch.Tensor:
    """``(size, size)``, a function of the integer squared distance from the grid centre only: exactly
    invariant under quarter turns and flips."""
    i = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    return torch.exp(-(i[:, None] ** 2 + i[None, :] ** 2) / 4)


def _images(c: int, size: int = 9) -> Iterator[tuple[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    yield "all-zero", torch.zeros(B, c, size, size, dtype=torch.float64)
    yield "constant", torch.full((B, c, size, size), 0.7, dtype=torch.float64)
    yield "single pixel", torch.randn(B, c, 1, 1, generator=gen, dtype=torch.float64)
    delta = torch.zeros(B, c, size, size, dtype=torch.float64)
    delta[..., size // 2, size // 2] = 1.0
    yield "centre delta", delta
    yield "radial blob", _radial(size).expand(B, c, size, size).clone()
    yield "tiny", 1e-12 * torch.randn(B, c, size, size, generator=gen, dtype=torch.float64)


def _clouds(n: int) -> Iterator[tuple[str, torch.Tensor]]:
    """Point clouds ``(B, n, 3)``."""
    gen = torch.Generator().manual_seed(0)
    direction = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    yield "all-zero", torch.zeros(B, n, 3, dtype=torch.float64)
    yield "coincident", torch.full((B, n, 3), 0.7, dtype=torch.float64)
    yield "single point", torch.randn(B, 1, 3, generator=gen, dtype=torch.float64)
    yield "collinear, centred", torch.linspace(-1, 1, n, dtype=torch.float64)[None, :, None] * direction
    yield "collinear", torch.rand(B, n, 1, generator=gen, dtype=torch.float64) * direction
    planar = torch.randn(B, n, 3, generator=gen, dtype=torch.float64)
    planar[..., 2] = 0
    yield "planar", planar
    yield "tiny", 1e-12 * torch.randn(B, n, 3, generator=gen, dtype=torch.float64)


def _particles(n: int, features: int) -> Iterator[tuple[str, torch.Tensor]]:
    """Particle systems ``(B, n, 6 + features)``: the clouds with zero velocities and unit charges, and
    random positions with zero velocities and charges."""
    for what, pos in _clouds(n):
        pos = pos.expand(B, *pos.shape[1:])
        rest = [torch.zeros_like(pos), torch.ones(*pos.shape[:2], features, dtype=torch.float64)]
        yield what, torch.cat([pos, *rest], dim=-1)
    pos = torch.randn(B, n, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    yield "zero velocities and charges", torch.cat([pos, torch.zeros(B, n, 3 + features, dtype=torch.float64)], -1)
    line = torch.rand(B, n, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    direction = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    yield "collinear, velocities along the line", torch.cat(
        [line * direction, line.flip(1) * direction, torch.ones(B, n, features, dtype=torch.float64)], -1)


def _sets(n: int, f: int) -> Iterator[tuple[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    yield "all-zero", torch.zeros(B, n, f, dtype=torch.float64)
    yield "all equal", torch.randn(B, 1, f, generator=gen, dtype=torch.float64).expand(B, n, f).clone()
    repeated = torch.randn(B, n, f, generator=gen, dtype=torch.float64)
    repeated[:, -1] = repeated[:, 0]
    yield "repeated elements", repeated


def degenerate_inputs(case: RegistryCase, canon: Canonicalizer) -> list[tuple[str, torch.Tensor]]:
    shape = case.input_shape
    kind = _kind(canon, case)
    if kind == "image":
        return list(_images(int(shape[1])))
    n, f = int(shape[1]), int(shape[2])
    if kind == "set":
        return list(_sets(n, f))
    if kind == "particles":
        return list(_particles(n, f - 6))
    return [(what, x.expand(B, *x.shape[1:]).clone()) for what, x in _clouds(n)]


MATRIX = [pytest.param(p.values[0], what, id=f"{p.id}:{what}") for p in CASES
          for what, _ in degenerate_inputs(p.values[0], _make(p.values[0]))]


def _input(case: RegistryCase, canon: Canonicalizer, what: str, dtype: torch.dtype) -> torch.Tensor:
    return dict(degenerate_inputs(case, canon))[what].to(dtype)


def _check_margin(res: ec.canonicalizers.Canonicalization) -> torch.Tensor:
    margin = res.margin
    assert margin is not None, "every registered canonicalizer sets margin"
    assert margin.shape == (res.canonical.shape[0],) and margin.is_floating_point()
    assert not margin.requires_grad
    assert bool((margin >= 0).all()) and not bool(margin.isnan().any())
    return margin


# ------------------------------------------------------------------ the matrix


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("case", "what"), MATRIX)
def test_degenerate_input_gets_a_group_element_and_finite_gradients(case: RegistryCase, what: str,
                                                                    dtype: torch.dtype) -> None:
    canon = _make(case, dtype)
    x = _input(case, canon, what, dtype)
    before = x.clone()
    x.requires_grad_(True)
    res = canon(x)
    error = float(element_error(canon.group, res.pose).max())
    assert error <= default_tolerance(dtype)[0], f"{what}: the pose is {error:.2e} from {canon.group}: {res.pose}"
    assert bool(torch.isfinite(res.canonical).all())
    if res.pose.is_floating_point():
        assert bool(torch.isfinite(res.pose).all())
    _check_margin(res)
    res.canonical.sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())
    grads = [p.grad for p in canon.parameters() if p.grad is not None]
    assert all(bool(torch.isfinite(g).all()) for g in grads)
    assert torch.equal(x.detach(), before), "the caller's tensor was modified"


@pytest.mark.parametrize(("case", "what"), MATRIX)
def test_degenerate_input_in_training_mode_gets_a_group_element(case: RegistryCase, what: str) -> None:
    """Batch statistics of a degenerate batch (zero variance) must not break the pose either."""
    canon = _make(case).train()
    x = _input(case, canon, what, torch.float64).requires_grad_(True)
    res = canon(x)
    assert float(element_error(canon.group, res.pose).max()) <= 1e-9
    res.canonical.sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())
    assert all(bool(torch.isfinite(p.grad).all()) for p in canon.parameters() if p.grad is not None)


# ------------------------------------------------------------------ invariance where the input allows it


@pytest.mark.parametrize("group", [ec.SO3(), ec.O3()], ids=repr)
@pytest.mark.parametrize("what", ["coincident", "collinear"])
def test_any_completion_around_a_line_gives_the_same_canonical_form(group: ec.groups.Group, what: str) -> None:
    """The network's vectors all lie along the line; the completing axes are not equivariant, but every
    point has coordinate 0 along them, so the canonical form is still invariant (and the pose valid)."""
    torch.manual_seed(0)
    canon = ec.canonicalizers.VectorNeurons(group, hidden=8, layers=1, k=4).double().eval()
    x = dict(_clouds(12))[what].expand(B, 12, 3).clone()
    report = canonicalizer_error(canon, x)
    assert report.canonical.passed, report.canonical
    assert report.valid_poses and report.in_orbit
    assert float(canon(x).margin.max()) == 0.0  # a degeneracy was completed


def test_a_planar_cloud_has_an_invariant_canonical_form_under_o3() -> None:
    """The third O(3) axis is the cross product of the two in the plane; the points' coordinate along it is 0."""
    torch.manual_seed(0)
    canon = ec.canonicalizers.VectorNeurons(ec.O3(), hidden=8, layers=1, k=4).double().eval()
    x = dict(_clouds(12))["planar"]
    report = canonicalizer_error(canon, x)
    assert report.canonical.passed and report.valid_poses and report.in_orbit, report.canonical
    assert float(canon(x).margin.max()) == 0.0


def test_a_blank_image_gets_the_identity_pose_from_unrefined_so2() -> None:
    torch.manual_seed(0)
    for group in (ec.SO2(), ec.O2()):
        canon = ec.canonicalizers.GroupConv(group, 3, hidden=4, kernel_size=3, refine=False).double().eval()
        for x in (torch.zeros(B, 3, 9, 9, dtype=torch.float64), torch.full((B, 3, 9, 9), 0.7, dtype=torch.float64)):
            res = canon(x)
            torch.testing.assert_close(res.pose, torch.eye(2, dtype=torch.float64).expand(B, 2, 2), atol=0, rtol=0)
            assert float(res.margin.max()) == 0.0
            torch.testing.assert_close(res.canonical, x)


def test_repeated_elements_of_a_set_keep_the_canonical_form_invariant() -> None:
    """Equal elements get equal scores, so whichever goes first the sorted set is the same."""
    torch.manual_seed(0)
    canon = ec.canonicalizers.Sort(ec.S(5), 3, hidden=8).double().eval()
    x = dict(_sets(5, 3))["repeated elements"]
    assert canonicalizer_error(canon, x).canonical.passed
    assert float(canon(x).margin.max()) == 0.0


# ------------------------------------------------------------------ margin


@pytest.mark.parametrize("case", CASES)
def test_margin_is_positive_on_random_input(case: RegistryCase) -> None:
    canon = _make(case)
    shape = tuple(9 if s == "size" else int(s) for s in case.input_shape)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    margin = _check_margin(canon(x))
    assert bool((margin > 1e-8).all()), margin
    if not bool(torch.isinf(margin).any()) and not canon.group.is_finite and canon.group.kind != "planar":
        assert bool((margin <= 1).all())  # Gram–Schmidt margins are relative residuals


def test_margin_is_inf_without_a_runner_up() -> None:
    torch.manual_seed(0)
    res = ec.canonicalizers.Sort(ec.S(1), 3, hidden=8).eval()(torch.randn(3, 1, 3))
    assert res.margin is not None and res.margin.tolist() == [math.inf] * 3


@pytest.mark.parametrize("make", [
    pytest.param(lambda: ec.canonicalizers.GroupConv(ec.C(4), 3, hidden=4, kernel_size=3), id="GroupConv C(4)"),
    pytest.param(lambda: ec.canonicalizers.GroupConv(ec.D(4), 3, hidden=4, kernel_size=3), id="GroupConv D(4)"),
    pytest.param(lambda: ec.canonicalizers.Contrastive(ec.C(4), ec.models.ConvEncoder(3, out_dim=16, hidden=4)),
                 id="Contrastive C(4)"),
    pytest.param(lambda: ec.canonicalizers.GroupConv(ec.SO2(), 3, hidden=4, kernel_size=3), id="GroupConv SO2 refined"),
])
def test_margin_is_zero_at_a_tie_of_a_symmetric_image(make) -> None:
    torch.manual_seed(0)
    canon = make().double().eval()
    gen = torch.Generator().manual_seed(0)
    # exactly invariant under quarter turns (and flips): all |G| logits of C(4) / D(4) tie
    x = _radial(9) * torch.rand(B, 3, 1, 1, generator=gen, dtype=torch.float64)
    res = canon(x)
    logits = res.logits if res.logits is not None else res.extras["coarse_logits"]
    assert float(res.margin.max()) <= 1e-12 * float(logits.detach().abs().max())
    noisy = x + 0.1 * torch.randn(x.shape, generator=gen, dtype=torch.float64)
    assert bool((canon(noisy).margin > 1e-6).all())


def test_margin_is_zero_for_an_all_equal_set() -> None:
    torch.manual_seed(0)
    canon = ec.canonicalizers.Sort(ec.S(7), 3, hidden=8).eval()
    x = torch.randn(4, 1, 3).expand(4, 7, 3)
    assert canon(x).margin.tolist() == [0.0] * 4
    assert bool((canon(torch.randn(4, 7, 3)).margin > 0).all())


def test_margin_of_gumbel_training_is_that_of_the_noisy_scores() -> None:
    torch.manual_seed(0)
    canon = ec.canonicalizers.GroupConv(ec.C(4), 1, hidden=4, kernel_size=3, gumbel=True).train()
    res = canon(torch.randn(8, 1, 9, 9))
    assert res.logits is not None and res.margin is not None
    assert not torch.equal(res.margin, ec.metrics.argmax_margin(res, reduction="none"))  # noise moved it
    canon.eval()
    res = canon(torch.randn(8, 1, 9, 9))
    torch.testing.assert_close(res.margin, ec.metrics.argmax_margin(res, reduction="none"), atol=0, rtol=0)


# ------------------------------------------------------------------ the relative threshold


def test_a_tiny_cloud_gets_the_pose_of_the_same_cloud_at_scale_one() -> None:
    """VectorNeurons SO3, float64: the frame head (Gram–Schmidt with its relative threshold) gives the same
    pose for the network's features scaled by 1e-12 as unscaled; an absolute threshold collapsed it."""
    torch.manual_seed(0)
    canon = ec.canonicalizers.VectorNeurons(ec.SO3(), hidden=8, layers=1, k=4).double().eval()
    x = torch.randn(B, 12, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    features = canon.trunk(canon.edge(x))
    pose, vectors, margin, scale = canon.head(features, canon.pool)
    tiny_pose, tiny_vectors, tiny_margin, tiny_scale = canon.head(1e-12 * features, canon.pool)
    torch.testing.assert_close(tiny_vectors, 1e-12 * vectors)
    torch.testing.assert_close(tiny_scale, 1e-12 * scale)
    torch.testing.assert_close(tiny_pose, pose, atol=1e-12, rtol=0)
    torch.testing.assert_close(tiny_margin, margin, atol=1e-12, rtol=0)
    torch.testing.assert_close(pose, canon(x).pose, atol=0, rtol=0)
    assert float(margin.min()) > 1e-3
    # the whole canonicalizer at 1e-12: a rotation (its network is not scale-equivariant: the cross-product
    # channel is quadratic and the VN layers' eps are absolute, so the pose itself differs from scale 1)
    assert float(element_error(ec.SO3(), canon(1e-12 * x).pose).max()) < 1e-12


@pytest.mark.parametrize("scale", [2.0**-40, 1e-12, 1e12, 1e-150])
@pytest.mark.parametrize(("d", "special", "k"), [(2, True, 2), (2, False, 2), (3, True, 2), (3, False, 3), (4, True, 3)])
def test_gram_schmidt_is_scale_invariant(d: int, special: bool, k: int, scale: float) -> None:
    v = torch.randn(4, d, k, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    q, margin = gram_schmidt_with_margin(v, special=special)
    q_scaled, margin_scaled = gram_schmidt_with_margin(scale * v, special=special)
    if math.log2(scale).is_integer():  # a power of two: bit for bit
        assert torch.equal(q_scaled, q) and torch.equal(margin_scaled, margin)
    torch.testing.assert_close(q_scaled, q, atol=1e-12, rtol=0)
    torch.testing.assert_close(margin_scaled, margin, atol=1e-12, rtol=1e-12)


# ------------------------------------------------------------------ gram_schmidt's completion rule


GS_CONFIGS = [(2, True, 2), (2, True, 1), (2, False, 2), (3, True, 2), (3, True, 3), (3, False, 3), (4, True, 3),
              (4, False, 4)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("d", "special", "k"), GS_CONFIGS)
def test_zero_vectors_give_the_identity_with_zero_margin(d: int, special: bool, k: int, dtype: torch.dtype) -> None:
    v = torch.zeros(3, d, k, dtype=dtype, requires_grad=True)
    q, margin = gram_schmidt_with_margin(v, special=special)
    assert q.dtype == dtype
    torch.testing.assert_close(q, torch.eye(d, dtype=dtype).expand(3, d, d), atol=0, rtol=0)
    assert margin.tolist() == [0.0] * 3
    q.sum().backward()
    assert v.grad is not None and bool(torch.isfinite(v.grad).all())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("d", "special", "k"), GS_CONFIGS)
@pytest.mark.parametrize("kind", ["collinear", "first zero", "last dependent", "noise under scale"])
def test_degenerate_vectors_give_orthogonal_matrices(d: int, special: bool, k: int, kind: str,
                                                     dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(5, d, k, generator=gen, dtype=torch.float64)
    scale = None
    if kind == "collinear":
        v = v[:, :, :1] * torch.randn(5, 1, k, generator=gen, dtype=torch.float64)
    elif kind == "first zero":
        v[:, :, 0] = 0
    elif kind == "last dependent":  # on the columns before it (zero when it is the only one)
        mix = torch.randn(5, k - 1, 1, generator=gen, dtype=torch.float64)
        v[:, :, -1] = (v[:, :, :-1] @ mix)[..., 0]
    else:  # vectors that are rounding noise of what they would be without cancellation
        v = 1e-20 * v
        scale = torch.ones(5, dtype=dtype)
    v = v.to(dtype).requires_grad_(True)
    q, margin = gram_schmidt_with_margin(v, special=special, scale=scale)
    group = {(2, True): ec.SO2(), (2, False): ec.O2(), (3, True): ec.SO3(), (3, False): ec.O3()}.get((d, special))
    eye = torch.eye(d, dtype=torch.float64)
    m = q.detach().double()
    assert float((m.transpose(1, 2) @ m - eye).abs().max()) <= default_tolerance(dtype)[0]
    det = torch.linalg.det(m)
    if special:
        torch.testing.assert_close(det, torch.ones(5, dtype=torch.float64), atol=default_tolerance(dtype)[0], rtol=0)
    if group is not None:
        assert float(element_error(group, q).max()) <= default_tolerance(dtype)[0]
    if kind == "collinear" and k == 1:  # one vector: nothing to be collinear with
        torch.testing.assert_close(margin, torch.ones(5, dtype=dtype))
    else:
        assert margin.tolist() == [0.0] * 5
    if kind == "noise under scale":
        torch.testing.assert_close(q, torch.eye(d, dtype=dtype).expand(5, d, d), atol=0, rtol=0)
    if kind == "last dependent" and k == d:  # completed by the cross product: det +1, also for O(d)
        torch.testing.assert_close(det, torch.ones(5, dtype=torch.float64), atol=default_tolerance(dtype)[0], rtol=0)
    q.square().sum().backward()
    assert v.grad is not None and bool(torch.isfinite(v.grad).all())


def test_the_completion_is_the_least_aligned_basis_vector_and_moves_with_the_line() -> None:
    """A line along u: the first axis is ±u (equivariant), the next is e_j − (e_j·u)u normalised for the basis
    vector e_j least aligned with u, the last completes a rotation."""
    u = torch.tensor([[0.9, 0.1, 0.3]], dtype=torch.float64)
    v = torch.stack([u, 2 * u], dim=-1)  # (1, 3, 2), collinear
    q = gram_schmidt(v, special=True)
    unit = u / u.norm()
    torch.testing.assert_close(q[:, :, 0], unit)
    e = torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64)  # |u_1| is the smallest
    second = e - (e * unit).sum() * unit
    torch.testing.assert_close(q[:, :, 1], second / second.norm())
    torch.testing.assert_close(q[:, :, 2], torch.linalg.cross(q[:, :, 0], q[:, :, 1]))


def test_non_degenerate_vectors_are_unchanged_by_the_degeneracy_handling() -> None:
    """The plain modified Gram–Schmidt result, bit for bit, on well-separated vectors."""
    v = torch.randn(64, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    q, margin = gram_schmidt_with_margin(v, special=False)
    keep = margin > 0.2
    columns: list[torch.Tensor] = []
    for i in range(3):
        w = v[:, :, i]
        for u in columns:
            w = w - (u * w).sum(-1, keepdim=True) * u
        columns.append(w / torch.sqrt((w * w).sum(-1, keepdim=True)))
    assert int(keep.sum()) > 10
    assert torch.equal(q[keep], torch.stack(columns, dim=-1)[keep])


# ------------------------------------------------------------------ no host synchronisation


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", CASES)
def test_poses_and_margins_do_not_synchronise_with_the_gpu(case: RegistryCase) -> None:
    canon = _make(case, torch.float32).cuda()
    inputs = [x.float().cuda() for _, x in degenerate_inputs(case, canon)]
    with torch.no_grad():
        for x in inputs:
            canon(x)  # warm-up: lazy modules, cached tables
        torch.cuda.set_sync_debug_mode("error")
        try:
            for x in inputs:
                canon(x)
        finally:
            torch.cuda.set_sync_debug_mode("default")
