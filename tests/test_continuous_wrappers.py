"""``WeightedCanonicalized`` and ``Symmetrized`` on continuous groups.

Images, ``SO2()`` / ``O2()``: the refined ``GroupConv`` ranks (or draws) its coarse elements and refines each;
equivariant exactly on quarter turns and flips (other angles interpolate the image). Point clouds and particles
(``SO3()``, ``O3()``, ``SE3()``, ``E3()``): weighted frames of the vector-neuron output vectors, and noisy
frames (Gaussian noise on the vectors, reparameterized) for sampling; rotations act on points exactly.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import equicanon as ec
from equicanon.canonicalizers import GroupConv
from equicanon.canonicalizers.functional import gram_schmidt, noisy_frames, weighted_frames
from equicanon.errors import ConfigError, ShapeError
from equicanon.testing import assert_equivariant

SIZES = [14, 15]  # even and odd
CLASSES = 5


def _classifier() -> nn.Module:
    return ec.models.SmallCNN(classes=CLASSES, in_channels=3, width=8, batch_norm=False)


def _segmenter() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))


def _refined(group: ec.groups.Group, rotations: int = 8) -> GroupConv:
    """A refined GroupConv whose residual head is random (a fresh one starts at δ = 0: the coarse poses)."""
    canon = GroupConv(group, 3, hidden=4, kernel_size=3, refine_hidden=4, rotations=rotations)
    assert canon.residual is not None
    with torch.no_grad():
        canon.residual.head.weight.normal_(0, 0.5)
        canon.residual.head.bias.fill_(0.1)
    return canon


def _images(size: int, batch: int = 3, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _quarter_turns(group: ec.groups.Group, dtype: torch.dtype) -> torch.Tensor:
    """The testing elements of SO2()/O2() that move pixels exactly: quarter turns (and their flips)."""
    elements = group.testing_elements(dtype=dtype)
    exact = (elements.round() == elements).flatten(1).all(dim=1)
    return elements[exact]


# --- refined SO2()/O2() GroupConv ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("output", ["trivial", "image"])
@pytest.mark.parametrize("wrapper", ["weighted k=2", "weighted k=all", "expected"])
@pytest.mark.parametrize("group", [ec.SO2(), ec.O2()], ids=repr)
def test_refined_image_wrappers_are_equivariant_on_quarter_turns(group, wrapper, output, size, dtype):
    torch.manual_seed(0)
    canon = _refined(group)
    predictor = _classifier() if output == "trivial" else _segmenter()
    out_action = ec.actions.Trivial() if output == "trivial" else ec.actions.Image(group)
    if wrapper == "expected":
        model = ec.Symmetrized(predictor, canon, out_action, samples=2).to(dtype).eval()
        f = model.expected
    else:
        top_k = 2 if wrapper == "weighted k=2" else canon.candidate_count
        model = ec.WeightedCanonicalized(predictor, canon, out_action, top_k=top_k).to(dtype).eval()
        f = model
    with torch.no_grad():
        assert_equivariant(f, group, ec.actions.Image(group), out_action, _images(size, dtype=dtype),
                           elements=_quarter_turns(group, dtype), dtype=dtype)


def test_refined_weighted_poses_are_the_refined_poses_of_the_best_coarse_elements():
    torch.manual_seed(0)
    canon = _refined(ec.SO2()).double().eval()
    x = _images(15)
    model = ec.WeightedCanonicalized(_classifier().double(), canon, top_k=3).eval()
    with torch.no_grad():
        res = canon(x)
        poses, weights = model.weighted_poses(x)
        assert poses.shape == (3, 3, 2, 2) and weights.shape == (3, 3)
        assert torch.allclose(poses[:, 0], res.pose, atol=1e-12)  # the best one is the hard pose
        order = res.extras["coarse_logits"].argsort(dim=1, descending=True, stable=True)[:, :3]
        for j in range(3):  # each is its coarse element h times a residual turn of at most one coarse step
            h = canon.net_group.matrix(order[:, j], dtype=torch.float64)
            rest = h.transpose(1, 2) @ poses[:, j]
            assert torch.allclose(torch.linalg.det(rest), torch.ones(3, dtype=torch.float64))
            assert (torch.atan2(rest[:, 1, 0], rest[:, 0, 0]).abs() <= canon.max_residual + 1e-12).all()
        assert torch.allclose(weights.sum(dim=1), torch.ones(3, dtype=torch.float64))


def test_refined_top_k_1_is_canonicalized():
    torch.manual_seed(0)
    canon, predictor = _refined(ec.SO2()).double().eval(), _classifier().double().eval()
    x = _images(14)
    with torch.no_grad():
        one = ec.WeightedCanonicalized(predictor, canon, top_k=1)(x)
        assert torch.equal(one, ec.Canonicalized(predictor, canon)(x))


def test_refined_sampling_draws_coarse_elements_with_their_probabilities_and_refines_each():
    torch.manual_seed(0)
    canon = _refined(ec.SO2()).double().eval()
    x = _images(14, batch=2)
    model = ec.Symmetrized(_classifier().double(), canon, samples=4000, temperature=1.0).eval()
    with torch.no_grad():
        poses, log_p = model.draw_poses(x, generator=torch.Generator().manual_seed(0))
        all_poses, p = canon.pose_distribution(x, canon(x), 1.0)
    assert poses.shape == (2, 4000, 2, 2) and log_p is not None and log_p.shape == (2, 4000)
    # every draw is one of the 8 refined poses, drawn about as often as its probability says
    distance = (poses[:, :, None] - all_poses[:, None]).flatten(3).abs().amax(dim=-1)  # (2, 4000, 8)
    assert (distance.amin(dim=-1) < 1e-12).all()
    counts = torch.nn.functional.one_hot(distance.argmin(dim=-1), 8).double().mean(dim=1)
    standard_error = (p * (1 - p) / 4000).sqrt()
    assert ((counts - p).abs() <= 5 * standard_error + 1e-3).all()
    assert torch.allclose(log_p.exp(), p.gather(1, distance.argmin(dim=-1)))


def test_refined_sampling_trains_the_coarse_network_and_the_residual():
    """The coarse draw has score-function gradients (logits), the residual turn pathwise ones."""
    torch.manual_seed(0)
    canon = _refined(ec.SO2())
    model = ec.Symmetrized(_classifier(), canon, samples=3)
    out = model(_images(14, dtype=torch.float32), generator=torch.Generator().manual_seed(0))
    out.square().sum().backward()
    coarse = [p.grad for p in canon.net.parameters()]
    residual = [p.grad for p in canon.residual.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in coarse + residual)
    assert any(g.abs().sum() > 0 for g in coarse) and any(g.abs().sum() > 0 for g in residual)


def test_unrefined_so2_is_refused_with_what_to_use():
    with pytest.raises(ConfigError, match="refine"):
        ec.WeightedCanonicalized(_classifier(), GroupConv(ec.SO2(), 3, hidden=4, refine=False), top_k=2)
    with pytest.raises(ConfigError, match=r"top_k.*candidates = 8"):
        ec.WeightedCanonicalized(_classifier(), _refined(ec.SO2()), top_k=9)


# --- weighted and noisy frames of vectors ------------------------------------------------------------------------


def _rotations(n: int, seed: int, dtype: torch.dtype = torch.float64, reflections: bool = False) -> torch.Tensor:
    group = ec.O3() if reflections else ec.SO3()
    return group.sample(n, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("special", [True, False])
def test_weighted_frames_move_with_the_vectors_and_keep_their_weights(special):
    v = torch.randn(6, 3, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    q = _rotations(6, 1, reflections=not special)
    frames, weights = weighted_frames(v, 4, special=special)
    moved, moved_weights = weighted_frames(q @ v, 4, special=special)
    assert torch.allclose(moved, q[:, None] @ frames, atol=1e-12)
    assert torch.allclose(moved_weights, weights, atol=1e-12)
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(frames.transpose(-1, -2) @ frames, eye.expand_as(frames), atol=1e-12)


def test_a_degenerate_subset_gets_weight_zero_even_with_every_frame_kept():
    # columns x, y, 2x: the pair (x, 2x) is dependent (its frame is a completion, it jumps as they cross), so it
    # weighs exactly 0; the pairs (x, y) and (y, 2x) have the same score (residuals relative to |2x|: 1/2)
    v = torch.tensor([[[1.0, 0.0, 2.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]], dtype=torch.float64)
    frames, weights = weighted_frames(v, 3, special=True)
    assert weights[0].tolist() == [0.5, 0.5, 0.0]
    x, y = v[0, :, 0], v[0, :, 1]
    assert torch.allclose(frames[0, 0, :, :2], torch.stack([x, y], dim=1), atol=1e-15)  # (x, y) first by index


def test_weighted_frames_are_continuous_where_the_hard_frame_jumps():
    """Two vectors crossing collinearity: Gram–Schmidt of that pair flips, the weighted average does not."""
    base = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.3, 1.0, 0.2]], dtype=torch.float64).T  # v0 ∥ v1

    def vectors(t: float) -> torch.Tensor:
        v = base.clone()
        v[1, 1] = t  # v1 = (1, t, 0): the pair (v0, v1) turns by 180° about v0 as t crosses 0
        return v[None]

    def prediction(t: float) -> torch.Tensor:
        frames, weights = weighted_frames(vectors(t), 3, special=True)
        return (weights[:, :, None, None] * frames).sum(dim=1)  # any continuous f of the frame, weighted

    def hard(t: float) -> torch.Tensor:
        return gram_schmidt(vectors(t)[:, :, :2], special=True)

    for step in (1e-4, 1e-5):  # above Gram–Schmidt's relative threshold (1e-6), below it the pair is completed
        assert (hard(step) - hard(-step)).abs().max() > 1.0  # the hard frame jumps
        assert (prediction(step) - prediction(-step)).abs().max() < 10 * step  # the weighted one moves by O(step)


def test_noisy_frames_move_with_vectors_and_noise_and_vanish_to_the_hard_frame():
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(4, 3, 2, generator=gen, dtype=torch.float64)
    noise = torch.randn(4, 7, 3, 2, generator=gen, dtype=torch.float64)
    q = _rotations(4, 1)
    frames = noisy_frames(v, noise, special=True, temperature=0.3)
    moved = noisy_frames(q @ v, q[:, None] @ noise, special=True, temperature=0.3)
    assert torch.allclose(moved, q[:, None] @ frames, atol=1e-12)
    cold = noisy_frames(v, noise, special=True, temperature=1e-12)
    assert torch.allclose(cold, gram_schmidt(v, special=True)[:, None].expand_as(cold), atol=1e-9)
    with pytest.raises(ShapeError, match="noise"):
        noisy_frames(v, noise[..., :1], special=True)


def test_weighted_frames_refuse_a_top_k_beyond_the_subsets():
    with pytest.raises(ShapeError, match=r"C\(3, 2\) = 3"):
        weighted_frames(torch.randn(1, 3, 3), 4, special=True)
    with pytest.raises(ShapeError, match="needs 3 vectors"):
        weighted_frames(torch.randn(1, 3, 2), 1, special=False)


def test_the_frame_weight_temperature_flattens_the_weights():
    v = torch.randn(3, 3, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    _, sharp = weighted_frames(v, 6, special=True, temperature=0.05)
    _, flat = weighted_frames(v, 6, special=True, temperature=math.inf)
    assert (sharp.amax(dim=1) >= flat.amax(dim=1) - 1e-12).all()


# --- vector-neuron canonicalizers: SO3(), O3(), SE3(), E3() ------------------------------------------------------

POINTS = 12


def _point_canonicalizer(group: ec.groups.Group, vectors: int) -> ec.canonicalizers.Canonicalizer:
    torch.manual_seed(0)
    if group.has_translations:
        return ec.canonicalizers.ParticleVectorNeurons(group, features=1, hidden=8, layers=2, vectors=vectors)
    return ec.canonicalizers.VectorNeurons(group, hidden=8, layers=1, k=4, vectors=vectors)


def _point_input(group: ec.groups.Group, dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, ec.actions.Action]:
    gen = torch.Generator().manual_seed(seed)
    if group.has_translations:  # particles: positions, velocities, one charge
        x = torch.cat([torch.randn(3, POINTS, 6, generator=gen), torch.rand(3, POINTS, 1, generator=gen)], dim=-1)
        return x.to(dtype), ec.actions.Particles(group)
    return torch.randn(3, POINTS, 3, generator=gen).to(dtype), ec.actions.Points(group)


class _PointPredictor(nn.Module):
    """Not equivariant: a linear map of the flattened points to 5 scores (``vector``: and to one 3-D vector)."""

    def __init__(self, features: int, vector: bool) -> None:
        super().__init__()
        self.vector = vector
        self.linear = nn.Linear(POINTS * features, 3 if vector else CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


POINT_CASES = [(ec.SO3(), 3), (ec.SO3(), 4), (ec.O3(), 4), (ec.SE3(), 3), (ec.E3(), 4)]
# a vector output moves by the rotation part of a rigid pose: Vectors(SO3/O3) acts for SO3/O3 poses only
OUTPUT_CASES = [(g, m, o) for g, m in POINT_CASES for o in ("trivial", "vector")
                if o == "trivial" or not g.has_translations]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("top_k", [1, 2, "all"])
@pytest.mark.parametrize(("group", "vectors", "output"), OUTPUT_CASES, ids=repr)
def test_weighted_frames_of_points_are_equivariant(group, vectors, output, top_k, dtype):
    canon = _point_canonicalizer(group, vectors)
    x, in_action = _point_input(group, dtype)
    k = canon.candidate_count if top_k == "all" else top_k
    out_action = ec.actions.Trivial() if output == "trivial" else ec.actions.Vectors(group)
    torch.manual_seed(1)
    model = ec.WeightedCanonicalized(_PointPredictor(x.shape[-1], output == "vector"), canon, out_action, top_k=k)
    # float32: the canonical forms of a rotated cloud differ by rounding (~1e-6 of the radius), which the linear
    # predictor sums over 36 inputs: up to 3e-5 measured for the hard pose (top_k=1) itself, hence 1e-4
    tolerance = {} if dtype == torch.float64 else {"atol": 1e-4, "rtol": 1e-4}
    with torch.no_grad():
        assert_equivariant(model.eval().to(dtype), group, in_action, out_action, x, dtype=dtype, **tolerance)


@pytest.mark.parametrize(("group", "vectors"), POINT_CASES, ids=repr)
def test_noisy_point_frames_move_exactly_with_the_input_and_the_noise(group, vectors):
    canon = _point_canonicalizer(group, vectors).double().eval()
    x, in_action = _point_input(group, torch.float64)
    size = 2 if not group.has_reflections else 3
    noise = torch.randn(3, 5, 3, size, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    g = group.sample(3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    rotation = g[:, :3, :3] if group.has_translations else g
    with torch.no_grad():
        poses, log_p = canon.sampled_poses(x, canon(x), 5, 0.5, noise=noise)
        moved_x = in_action(g, x)
        moved, _ = canon.sampled_poses(moved_x, canon(moved_x), 5, 0.5, noise=rotation[:, None] @ noise)
    assert log_p is None  # reparameterized
    assert torch.allclose(moved, g[:, None] @ poses, atol=1e-9)
    assert ec.testing.element_error(group, poses.flatten(0, 1)).max() < 1e-9


@pytest.mark.parametrize(("group", "vectors"), [(ec.SO3(), 2), (ec.O3(), 3), (ec.SE3(), 2)], ids=repr)
def test_symmetrized_points_agree_in_distribution_at_x_and_g_x(group, vectors):
    canon = _point_canonicalizer(group, vectors).double().eval()
    x, in_action = _point_input(group, torch.float64)
    torch.manual_seed(1)
    model = ec.Symmetrized(_PointPredictor(x.shape[-1], False).double(), canon, samples=3000, temperature=0.5).eval()
    g = group.sample(3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with torch.no_grad():
        draws = [model(z, generator=torch.Generator().manual_seed(seed)) for z, seed in ((x, 0), (in_action(g, x), 1))]
        poses, _ = model.draw_poses(x, generator=torch.Generator().manual_seed(0))
    # the standard error of a 3000-draw mean, from the spread of single draws
    spread = torch.stack([model.predictor(in_action(group.inverse(poses[:, j]), x)) for j in range(200)]).std(dim=0)
    tolerance = 5 * spread * math.sqrt(2 / 3000) + 1e-9
    assert ((draws[0] - draws[1]).abs() <= tolerance).all()
    assert (spread > 0).all()  # the draws differ: it samples


def test_symmetrized_points_train_by_pathwise_gradients():
    canon = _point_canonicalizer(ec.SO3(), 2)
    x, _ = _point_input(ec.SO3(), torch.float32)
    model = ec.Symmetrized(_PointPredictor(3, False), canon, samples=4, temperature=0.2)
    model(x, generator=torch.Generator().manual_seed(0)).square().sum().backward()
    grads = [p.grad for p in canon.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_a_vanishing_noise_is_canonicalized_and_expected_is_refused_for_points():
    canon = _point_canonicalizer(ec.SO3(), 2).double().eval()
    x, _ = _point_input(ec.SO3(), torch.float64)
    predictor = _PointPredictor(3, False).double()
    model = ec.Symmetrized(predictor, canon, samples=3, temperature=1e-12).eval()
    with torch.no_grad():
        assert torch.allclose(model(x), ec.Canonicalized(predictor, canon)(x), atol=1e-8)
        with pytest.raises(ConfigError, match="continuous distribution"):
            model.expected(x)


def test_point_top_k_is_bounded_by_the_vector_subsets():
    with pytest.raises(ConfigError, match=r"top_k.*= 1"):  # 2 vectors: one pair, one frame
        ec.WeightedCanonicalized(nn.Flatten(), _point_canonicalizer(ec.SO3(), 2), top_k=2)
    assert _point_canonicalizer(ec.SO3(), 4).candidate_count == 6
    assert _point_canonicalizer(ec.O3(), 4).candidate_count == 4
