"""The registry test for canonicalizers of point clouds, particle systems and sets.

Every registered case whose input is not an image is checked at random
initialisation: the canonical form is invariant and the pose equivariant, in
float64 to rounding error and in float32 within 1e-4, on the group's testing
elements and on random elements (random rotations, reflections for O(3)/E(3),
random translations for SE(3)/E(3), random permutations for S(n)); point-cloud
and particle poses are also invariant to the order of the points.
"""

from __future__ import annotations

import pytest
import torch

import equicanon as ec
from equicanon.canonicalizers import available, entry
from equicanon.testing import assert_canonicalizer, canonicalizer_error

FLOAT32 = {"atol": 1e-4, "rtol": 1e-4}


def _cases() -> list:
    return [
        pytest.param(case, id=f"{name}:{case.name}")
        for name in available()
        for case in entry(name).test_cases()
        if "size" not in case.input_shape
    ]


CASES = _cases()


def _make(case, mode: str = "eval"):
    torch.manual_seed(0)
    canon = case.make()
    return canon.train() if mode == "train" else canon.eval()


def _input(case, seed: int = 0) -> torch.Tensor:
    return torch.randn(case.input_shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_geometric_canonicalizers_are_registered():
    names = {name for name in available() for case in entry(name).test_cases() if "size" not in case.input_shape}
    assert {"vector_neurons", "particle_vector_neurons", "sort"} <= names


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("case", CASES)
def test_invariant_and_equivariant_on_testing_elements(case, mode):
    canon = _make(case, mode)
    assert_canonicalizer(canon, _input(case), dtype=torch.float64)
    assert_canonicalizer(canon, _input(case), dtype=torch.float32, **FLOAT32)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_invariant_and_equivariant_on_random_elements(case, seed):
    canon = _make(case)
    group = canon.group
    elements = group.sample(6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    assert_canonicalizer(canon, _input(case, seed), elements=elements, dtype=torch.float64)
    assert_canonicalizer(canon, _input(case, seed), elements=elements, dtype=torch.float32, **FLOAT32)


@pytest.mark.parametrize("case", [c for c in CASES if c.values[0].make().group.kind != "permutation"])
def test_pose_is_invariant_to_the_order_of_points(case):
    """Permuting the points permutes the canonical points the same way and leaves the pose unchanged."""
    canon = _make(case).double()
    x = _input(case)
    perm = torch.randperm(x.shape[1], generator=torch.Generator().manual_seed(3))
    res, res_perm = canon(x), canon(x[:, perm])
    assert torch.allclose(res_perm.pose, res.pose, atol=1e-12)
    assert torch.allclose(res_perm.canonical, res.canonical[:, perm], atol=1e-12)


def test_o3_poses_follow_reflections():
    """O(3) keeps the sign: a mirrored cloud gets a pose of determinant -1 times the original's."""
    canon = ec.canonicalizers.VectorNeurons(ec.O3(), hidden=8, layers=1, k=4).double().eval()
    x = torch.randn(3, 12, 3, dtype=torch.float64)
    mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    det = torch.linalg.det(canon(x).pose) * torch.linalg.det(canon(x @ mirror).pose)
    assert torch.allclose(det, torch.full_like(det, -1.0))


def test_so3_poses_are_rotations():
    canon = ec.canonicalizers.VectorNeurons(ec.SO3(), hidden=8, layers=1, k=4).double().eval()
    pose = canon(torch.randn(4, 12, 3, dtype=torch.float64)).pose
    eye = torch.eye(3, dtype=torch.float64).expand_as(pose)
    assert torch.allclose(pose.transpose(1, 2) @ pose, eye, atol=1e-12)
    assert torch.allclose(torch.linalg.det(pose), torch.ones(4, dtype=torch.float64))


def test_particle_pose_translation_is_the_centroid_and_canonical_positions_are_centred():
    canon = ec.canonicalizers.ParticleVectorNeurons(ec.SE3(), features=1, hidden=8).double().eval()
    x = torch.randn(2, 6, 7, dtype=torch.float64) + 5.0
    res = canon(x)
    assert torch.allclose(ec.SE3().translation(res.pose), x[..., :3].mean(1), atol=1e-12)
    assert torch.allclose(res.canonical[..., :3].mean(1), torch.zeros(2, 3, dtype=torch.float64), atol=1e-12)
    assert torch.equal(res.canonical[..., 6:], x[..., 6:])  # charges untouched
    # velocities are rotated, never translated: their norms are kept
    assert torch.allclose(res.canonical[..., 3:6].norm(dim=-1), x[..., 3:6].norm(dim=-1), atol=1e-12)


def test_charges_steer_the_particle_frame():
    """Invariant features enter the frame: flipping one charge changes the pose."""
    canon = ec.canonicalizers.ParticleVectorNeurons(ec.SE3(), features=1, hidden=8).double().eval()
    x = torch.randn(1, 6, 7, dtype=torch.float64)
    y = x.clone()
    y[0, 0, 6] = -y[0, 0, 6]
    assert not torch.allclose(canon(x).pose, canon(y).pose)


def test_sort_canonical_form_is_the_sorted_set_and_pose_a_permutation():
    canon = ec.canonicalizers.Sort(ec.S(6), 2, hidden=8).double().eval()
    x = torch.randn(3, 6, 2, dtype=torch.float64)
    res = canon(x)
    scores = res.extras["scores"]
    assert torch.equal(res.pose, scores.argsort(dim=-1, stable=True))
    assert torch.equal(res.canonical, torch.stack([x[b, res.pose[b]] for b in range(3)]))
    sorted_scores = canon(res.canonical).extras["scores"]
    assert torch.all(sorted_scores[:, 1:] >= sorted_scores[:, :-1])


def test_sort_has_no_prior_and_says_why():
    canon = ec.canonicalizers.Sort(ec.S(4), 2)
    with pytest.raises(ec.errors.ConfigError, match="no preferred order"):
        canon.prior_loss(canon(torch.randn(2, 4, 2)))


def test_sort_gradients_reach_the_scorer_through_softsort():
    canon = ec.canonicalizers.Sort(ec.S(5), 3, hidden=8).train()
    x = torch.randn(4, 5, 3)
    res = canon(x)
    assert torch.equal(res.canonical, torch.stack([x[b, res.pose[b]] for b in range(4)]))  # value is the hard sort
    (res.canonical * torch.arange(5.0)[None, :, None]).sum().backward()
    grads = [p.grad for p in canon.scorer.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)


@pytest.mark.parametrize("group", [ec.SO3(), ec.O3()])
def test_prior_is_squared_frobenius_distance_and_training_it_reaches_identity(group):
    """Training the prior alone drives the poses to the lowest loss the group allows.

    For SO(3) that is 0. An O(3) pose cannot move continuously from det -1 to the identity, so the batch holds
    four clouds and their mirror images ``x * (1, 1, -1)``: the pose of a mirrored cloud is ``M R`` and
    ``(||R - I||^2 + ||M R - I||^2) / 2 = 6 - 2 (R_11 + R_22) >= 2``, with equality only at ``R = I``. The
    floor is 2 whichever cloud of a pair the network gives det -1, so the criterion does not depend on
    where training sends each det sign (a bound on ``last / first`` did: 0.48 here, 0.75 on another machine).
    Over seeds 0-9 ``(last - floor) / (first - floor)`` is at most 0.0009 (SO(3)) and 0.006 (O(3)) after 150
    steps on two threads; on one thread seed 0 still sat on a plateau at 3.5 (O(3)) after 150 steps and
    reached the floor (2.000) by 400, as every seed 0-9 does, so the test takes 400.
    """
    torch.manual_seed(0)
    canon = ec.canonicalizers.VectorNeurons(group, hidden=16, layers=1, k=4)
    clouds = torch.randn(4, 12, 3)
    x = torch.cat([clouds, clouds * torch.tensor([1.0, 1.0, -1.0])])
    floor = 2.0 if group == ec.O3() else 0.0
    res = canon(x)
    eye = torch.eye(3)
    assert torch.allclose(canon.prior_loss(res), ((res.pose - eye) ** 2).sum((1, 2)).mean())
    opt = torch.optim.Adam(canon.parameters(), lr=1e-2)
    first = float(canon.prior_loss(canon(x)).detach())
    for _ in range(400):
        loss = canon.prior_loss(canon(x))
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = float(canon.prior_loss(canon(x)).detach())
    assert last > floor - 1e-4, f"the prior went below its floor {floor}: {last}"
    assert last - floor < 0.1 * (first - floor), f"prior {first:.3f} -> {last:.3f}, floor {floor}"


@pytest.mark.parametrize("group", [ec.SO3(), ec.O3()])
def test_gradcheck_through_vector_neurons_and_gram_schmidt(group):
    canon = ec.canonicalizers.VectorNeurons(group, hidden=4, layers=1, k=3, batch_norm=False).double().eval()
    x = torch.randn(1, 6, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: canon(t).pose, (x,))
    assert torch.autograd.gradcheck(lambda t: canon(t).canonical, (x,))


@pytest.mark.parametrize("special", [True, False])
def test_gram_schmidt_of_collinear_and_zero_vectors_is_finite(special):
    from equicanon.canonicalizers.functional import gram_schmidt

    v = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    cols = torch.stack([v[0], 2 * v[0], torch.zeros(3, dtype=torch.float64)], dim=-1)[None].requires_grad_(True)
    q = gram_schmidt(cols if not special else cols[..., :2], special=special)
    q.sum().backward()
    assert torch.isfinite(q).all() and torch.isfinite(cols.grad).all()


def test_wrong_inputs_are_typed_errors():
    vn = ec.canonicalizers.VectorNeurons(ec.SO3())
    with pytest.raises(ec.errors.ShapeError, match=r"\(B, N, 3\)"):
        vn(torch.randn(2, 10, 2))
    with pytest.raises(ec.errors.DTypeError):
        vn(torch.zeros(2, 10, 3, dtype=torch.long))
    with pytest.raises(ec.errors.GroupMismatchError):
        ec.canonicalizers.VectorNeurons(ec.SE3())
    pv = ec.canonicalizers.ParticleVectorNeurons(ec.SE3(), features=1)
    with pytest.raises(ec.errors.ShapeError, match="F=7"):
        pv(torch.randn(2, 5, 6))
    with pytest.raises(ec.errors.GroupMismatchError):
        ec.canonicalizers.ParticleVectorNeurons(ec.SO3())
    with pytest.raises(ec.errors.ShapeError, match=r"\(B, 4, 2\)"):
        ec.canonicalizers.Sort(ec.S(4), 2)(torch.randn(2, 5, 2))
    with pytest.raises(ec.errors.GroupMismatchError):
        ec.canonicalizers.Sort(ec.C(4), 2)


@pytest.mark.parametrize("case", CASES)
def test_input_is_never_modified(case):
    canon = _make(case, "train")
    x = _input(case).float()
    before = x.clone()
    canon(x)
    assert torch.equal(x, before)


def test_float32_errors_are_reported():
    """The measured float32 errors, printed for the record (the bound asserted above is 1e-4)."""
    for name in ("vector_neurons", "particle_vector_neurons"):
        for case in entry(name).test_cases():
            canon = _make(case)
            report = canonicalizer_error(canon, _input(case), dtype=torch.float32)
            print(f"{name} {case.name}: canonical {report.canonical.max_error:.1e}, pose {report.pose.max_error:.1e}")
            assert report.passed or report.canonical.max_error < 1e-4
