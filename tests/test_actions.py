"""Actions: the action law, the geometric meaning of each action, and the functional image core."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import equicanon as ec
from equicanon.actions import Action, Image, Mask, Points, Regular, Set, Trivial, Vectors
from equicanon.actions.functional import MODES, PADDINGS, rotate_image
from equicanon.groups import FiniteGroup, Group

EXACT_IMAGE_GROUPS = [ec.C(1), ec.C(2), ec.C(4), ec.D(1), ec.D(2), ec.D(4)]
INTERPOLATED_IMAGE_GROUPS = [ec.C(8), ec.D(8), ec.C(3), ec.SO2(), ec.O2()]
SHAPE_KEEPING_GROUPS = [ec.C(1), ec.C(2), ec.D(1), ec.D(2)]  # no 90° turns: any H x W
SIZES = (5, 6, 28, 29)
PLANAR = [ec.C(4), ec.D(4), ec.C(8), ec.D(5), ec.SO2(), ec.O2()]
SPATIAL = [ec.SO3(), ec.O3()]
FLOAT64 = torch.float64

seeds = st.integers(min_value=0, max_value=2**63 - 1)
batches = st.integers(min_value=1, max_value=4)


def all_pairs(G: FiniteGroup) -> tuple[torch.Tensor, torch.Tensor]:
    """Every pair ``(g, h)`` of elements, as two batches of ``|G|²``."""
    e = G.elements()
    return e.repeat_interleave(G.order), e.repeat(G.order)


def draw(G: Group, batch: int, seed: int, count: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [G.sample(batch, generator=gen, dtype=FLOAT64) for _ in range(count)]


def pixel_to_point(i: int, j: int, h: int, w: int) -> torch.Tensor:
    """Centred coordinates ``(u, v)`` of pixel (row ``i``, column ``j``): ``u`` right, ``v`` up."""
    return torch.tensor([j - (w - 1) / 2, (h - 1) / 2 - i], dtype=FLOAT64)


def point_to_pixel(p: torch.Tensor, h: int, w: int) -> tuple[float, float]:
    return (h - 1) / 2 - float(p[1]), float(p[0]) + (w - 1) / 2


def rot90(x: torch.Tensor, k: int) -> torch.Tensor:
    return torch.rot90(x, k, dims=(-2, -1))


def hflip(x: torch.Tensor) -> torch.Tensor:
    return torch.flip(x, dims=[-1])


# ================================================================ images, exact


def group_and_size(sizes: tuple[int, ...]) -> list[tuple[Group, tuple[int, int]]]:
    """Every exact group on square images; the groups without 90° turns also on non-square ones."""
    square = [(G, (n, n)) for G in EXACT_IMAGE_GROUPS for n in sizes]
    return square + [(G, hw) for G in SHAPE_KEEPING_GROUPS for hw in [(5, 8), (6, 7)]]


@pytest.mark.parametrize(("G", "size"), group_and_size(SIZES), ids=str)
def test_exact_image_action_law(G: FiniteGroup, size: tuple[int, int]) -> None:
    h, w = size
    act = Image(G)
    g, k = all_pairs(G)
    x = torch.randn(len(g), 2, h, w, dtype=FLOAT64)
    assert torch.equal(act(g, act(k, x)), act(G.compose(g, k), x))
    assert torch.equal(act(G.identity(1), x), x)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, FLOAT64])
def test_cyclic_image_action_is_rot90(n: int, dtype: torch.dtype) -> None:
    x = torch.randn(4, 3, n, n).to(dtype)
    out = Image(ec.C(4))(ec.C(4).elements(), x)
    assert out.dtype == dtype
    for k in range(4):
        assert torch.equal(out[k], rot90(x[k], k))


@pytest.mark.parametrize("n", SIZES)
def test_dihedral_image_action_is_flip_then_rot90(n: int) -> None:
    x = torch.randn(1, 2, n, n, dtype=FLOAT64)
    act = Image(ec.D(4))
    assert torch.equal(act(torch.tensor([4]), x), hflip(x))
    for k in range(4):
        assert torch.equal(act(torch.tensor([k]), x), rot90(x, k))
        assert torch.equal(act(torch.tensor([k + 4]), x), rot90(hflip(x), k))


@pytest.mark.parametrize("size", [(5, 8), (6, 7), (28, 29)], ids=str)
def test_shape_keeping_groups_accept_non_square_images(size: tuple[int, int]) -> None:
    x = torch.randn(1, 2, *size, dtype=FLOAT64)
    assert torch.equal(Image(ec.C(2))(torch.tensor([1]), x), rot90(x, 2))
    assert torch.equal(Image(ec.D(1))(torch.tensor([1]), x), hflip(x))
    assert torch.equal(Image(ec.D(2))(torch.tensor([2]), x), hflip(x))
    assert torch.equal(Image(ec.D(2))(torch.tensor([3]), x), torch.flip(x, dims=[-2]))
    # SO2() interpolates, but its 180° turn lands on pixel centres
    half_turn = ec.SO2().from_angle(torch.tensor([math.pi], dtype=FLOAT64))
    torch.testing.assert_close(Image(ec.SO2())(half_turn, x), rot90(x, 2), atol=1e-12, rtol=0)


@pytest.mark.parametrize(("G", "size"), group_and_size((5, 6)), ids=str)
def test_bright_pixel_moves_to_matrix_times_its_position(G: FiniteGroup, size: tuple[int, int]) -> None:
    h, w = size
    act = Image(G)
    for i, j in [(0, 0), (1, 3), (h - 1, 2), (h // 2, w // 2)]:
        x = torch.zeros(1, 1, h, w, dtype=FLOAT64)
        x[0, 0, i, j] = 1.0
        for g in G.elements()[:, None]:
            out = act(g, x)
            row, col = point_to_pixel(G.matrix(g, dtype=FLOAT64)[0] @ pixel_to_point(i, j, h, w), h, w)
            expected = torch.zeros_like(x)
            expected[0, 0, round(row), round(col)] = 1.0
            assert torch.equal(out, expected), (G.describe(g), (i, j))


@pytest.mark.parametrize("G", [ec.C(8), ec.D(8)], ids=repr)
@pytest.mark.parametrize("n", SIZES)
def test_quarter_turns_of_interpolated_groups_are_exact(G: FiniteGroup, n: int) -> None:
    x = torch.randn(1, 2, n, n, dtype=FLOAT64)
    act = Image(G)
    for k in (0, 2, 4, 6):
        assert torch.equal(act(torch.tensor([k]), x), rot90(x, k // 2))
        if G.order == 16:
            assert torch.equal(act(torch.tensor([k + 8]), x), rot90(hflip(x), k // 2))


@pytest.mark.parametrize("dtype", [torch.float32, FLOAT64])
@pytest.mark.parametrize("n", [5, 6])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("G", INTERPOLATED_IMAGE_GROUPS, ids=repr)
def test_identity_leaves_images_exactly_unchanged(G: Group, mode: str, padding: str, n: int,
                                                  dtype: torch.dtype) -> None:
    x = torch.randn(2, 3, n, n + (0 if G in (ec.C(8), ec.D(8)) else 1), dtype=dtype)
    assert torch.equal(Image(G, padding=padding, mode=mode)(G.identity(1, dtype=dtype), x), x)


# ================================================================ images, interpolated

# Measured on the smooth test image (peak ≈ 1, Gaussians of width n/9..n/5) over all pairs of
# testing elements, inside the inscribed disk: mean |error| ≤ 3.7e-3 and max ≤ 0.029 at 28/29 px
# (6.8e-4 / 7e-3 at 64 px). Bilinear interpolation error is O(curvature), so these bounds leave ~2x room.
INTERP_MEAN_TOL = 8e-3
INTERP_MAX_TOL = 0.06


@pytest.mark.parametrize("n", [28, 29])
@pytest.mark.parametrize("G", INTERPOLATED_IMAGE_GROUPS, ids=repr)
def test_interpolated_image_action_law_holds_inside_the_disk(G: Group, n: int, smooth_image: Callable,
                                                             inscribed_disk: Callable) -> None:
    act = Image(G)
    assert not act.exact
    t = G.testing_elements(dtype=FLOAT64)
    m = len(t)
    g, k = t.repeat_interleave(m, dim=0), t.repeat(m, *([1] * (t.ndim - 1)))
    x = smooth_image(n).expand(m * m, 1, n, n)
    diff = (act(g, act(k, x)) - act(G.compose(g, k), x))[:, 0, inscribed_disk(n, n)].abs()
    assert diff.mean(dim=1).max() < INTERP_MEAN_TOL
    assert diff.max() < INTERP_MAX_TOL


@pytest.mark.parametrize(("finite", "continuous"), [(ec.C(8), ec.SO2()), (ec.D(8), ec.O2()), (ec.C(3), ec.SO2())],
                         ids=repr)
@pytest.mark.parametrize("padding", PADDINGS)
def test_finite_group_images_agree_with_their_continuous_group(finite: FiniteGroup, continuous: Group,
                                                               padding: str) -> None:
    x = torch.randn(finite.order, 2, 12, 12, dtype=FLOAT64)
    e = finite.elements()
    expected = Image(continuous, padding=padding)(finite.matrix(e, dtype=FLOAT64), x)
    torch.testing.assert_close(Image(finite, padding=padding)(e, x), expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("G", [ec.SO2(), ec.O2()], ids=repr)
def test_blob_centre_moves_to_matrix_times_its_position(G: Group) -> None:
    n, centre, sigma = 41, torch.tensor([6.0, 4.0], dtype=FLOAT64), 2.0
    i = torch.arange(n, dtype=FLOAT64)
    rows, cols = torch.meshgrid(i, i, indexing="ij")
    u, v = cols - (n - 1) / 2, (n - 1) / 2 - rows
    blob = torch.exp(-((u - centre[0]) ** 2 + (v - centre[1]) ** 2) / (2 * sigma**2))[None, None]
    t = G.testing_elements(dtype=FLOAT64)
    out = Image(G)(t, blob.expand(len(t), 1, n, n))[:, 0]
    mass = out.sum(dim=(1, 2))
    found = torch.stack([(out * u).sum(dim=(1, 2)) / mass, (out * v).sum(dim=(1, 2)) / mass], -1)
    torch.testing.assert_close(found, t @ centre, atol=0.02, rtol=0)


def test_o2_flip_is_the_horizontal_flip() -> None:
    x = torch.randn(1, 2, 7, 10, dtype=FLOAT64)
    flip = torch.diag(torch.tensor([-1.0, 1.0], dtype=FLOAT64))[None]
    torch.testing.assert_close(Image(ec.O2())(flip, x), hflip(x), atol=1e-12, rtol=0)


# ================================================================ functional rotate_image


@pytest.mark.parametrize("size", [(5, 5), (6, 6), (5, 7), (4, 6), (1, 1)])
def test_one_index_move_for_the_batch_equals_the_per_sample_gather(size: tuple[int, int]) -> None:
    """permute_image with one matrix for the whole batch (a transpose and flips) gives the per-sample
    gather's result exactly, for every signed permutation that maps the grid onto itself."""
    from equicanon.actions.functional import _gather_move, permute_image

    h, w = size
    x = torch.randn(3, 2, h, w, generator=torch.Generator().manual_seed(h * w))
    matrices = ec.D(4).matrix(ec.D(4).elements(), dtype=torch.float64)
    for m in matrices:
        if h != w and m[0, 0] == 0:
            continue  # a quarter turn of a non-square image is no move of its grid
        reference = _gather_move(x, m[None].long())
        for batched in (m[None], m[None].expand(3, 2, 2)):
            out = permute_image(x, batched)
            assert torch.equal(out, reference) and out.is_contiguous()
    mixed = matrices[torch.tensor([0, 1, 2])] if h == w else matrices[torch.tensor([0, 2, 4])]
    assert torch.equal(permute_image(x, mixed), _gather_move(x, mixed.long()))


@pytest.mark.parametrize("n", [28, 29, 32, 33])
@pytest.mark.parametrize("dtype", [torch.float32, FLOAT64])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_interpolated_quarter_turns_equal_rot90(n: int, dtype: torch.dtype, k: int) -> None:
    """The rotation centre is the pixel-grid centre, so 90° turns hit pixel centres for odd and even n.

    The angle is built in float64: ``float32(π/2)`` is itself off by 4e-8 rad, which moves samples
    by up to 1e-6 px at 32 px and shows as ~1e-5 on a random image.
    """
    x = torch.randn(2, 3, n, n, generator=torch.Generator().manual_seed(n), dtype=dtype)
    g = ec.SO2().from_angle(torch.tensor([k * math.pi / 2], dtype=FLOAT64))
    expected = rot90(x, k)
    outs = [rotate_image(x, g, padding=padding) for padding in PADDINGS]
    for out in outs:
        assert out.dtype == dtype
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(out, outs[0], atol=1e-12, rtol=0)  # samples stay inside: padding is unused
    torch.testing.assert_close(Image(ec.SO2())(g.to(dtype), x), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(Image(ec.SO2())(g.to(dtype).expand(2, 2, 2), x), expected, atol=1e-5, rtol=0)


def grid_sample_reference(x: torch.Tensor, m: torch.Tensor, mode: str, padding: str) -> torch.Tensor:
    """``(M·x)(p) = x(Mᵀ p)`` written directly with ``grid_sample(align_corners=True)`` on the unpadded input."""
    b, _, h, w = x.shape
    rows, cols = torch.meshgrid(torch.arange(h, dtype=FLOAT64), torch.arange(w, dtype=FLOAT64), indexing="ij")
    p = torch.stack([cols - (w - 1) / 2, (h - 1) / 2 - rows], -1)  # (H, W, 2) centred (u, v)
    src = torch.einsum("bji,hwj->bhwi", m, p)  # Mᵀ p
    col, row = src[..., 0] + (w - 1) / 2, (h - 1) / 2 - src[..., 1]
    grid = torch.stack([2 * col / (w - 1) - 1, 2 * row / (h - 1) - 1], -1)
    return F.grid_sample(x, grid.expand(b, h, w, 2), mode=mode, padding_mode=padding, align_corners=True)


@pytest.mark.parametrize("size", [(28, 28), (29, 29), (17, 23)], ids=str)
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("mode", MODES)
def test_rotate_image_matches_grid_sample_at_generic_angles(size: tuple[int, int], padding: str, mode: str) -> None:
    x = torch.randn(3, 2, *size, dtype=FLOAT64)
    flip = torch.diag(torch.tensor([-1.0, 1.0], dtype=FLOAT64))
    m = ec.SO2().from_angle(torch.tensor([0.7, -2.1, 1.234], dtype=FLOAT64))
    m = torch.cat([m[:2], m[2:] @ flip])
    out = rotate_image(x, m, mode=mode, padding=padding)
    torch.testing.assert_close(out, grid_sample_reference(x, m, mode, padding), atol=1e-12, rtol=0)


def test_rotate_image_padding_modes_fill_the_corners_as_documented() -> None:
    """At 45° the corners sample outside the input: zeros reads 0, border the edge, reflection the mirror."""
    x = torch.ones(1, 1, 9, 9, dtype=FLOAT64)
    g = ec.SO2().from_angle(torch.tensor([math.pi / 4], dtype=FLOAT64))
    assert rotate_image(x, g, padding="zeros")[0, 0, 0, 0] == 0
    assert torch.allclose(rotate_image(x, g, padding="border"), x, atol=1e-12)
    assert torch.allclose(rotate_image(x, g, padding="reflection"), x, atol=1e-12)


def test_rotate_image_is_differentiable_in_image_and_matrix() -> None:
    x = torch.randn(1, 2, 6, 7, dtype=FLOAT64, requires_grad=True)
    theta = torch.tensor([0.3], dtype=FLOAT64, requires_grad=True)
    for padding in PADDINGS:
        assert torch.autograd.gradcheck(
            lambda x, t, padding=padding: rotate_image(x, ec.SO2().from_angle(t), padding=padding), (x, theta))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_rotate_image_low_precision_follows_float64(dtype: torch.dtype) -> None:
    x = torch.rand(2, 3, 12, 12, dtype=FLOAT64)
    g = ec.SO2().sample(2, generator=torch.Generator().manual_seed(0), dtype=FLOAT64)
    out = rotate_image(x.to(dtype), g)
    assert out.dtype == dtype
    tol = {torch.float16: 2e-3, torch.bfloat16: 2e-2, torch.float32: 1e-6}[dtype]
    torch.testing.assert_close(out.double(), rotate_image(x.to(dtype).double(), g), atol=tol, rtol=0)


# ================================================================ masks


@pytest.mark.parametrize("n", [5, 6])
@pytest.mark.parametrize("G", EXACT_IMAGE_GROUPS, ids=repr)
def test_exact_mask_action_law(G: FiniteGroup, n: int) -> None:
    act = Mask(G)
    g, k = all_pairs(G)
    labels = torch.randint(0, 7, (len(g), n, n))
    assert torch.equal(act(g, act(k, labels)), act(G.compose(g, k), labels))
    assert torch.equal(act(G.identity(1), labels), labels)
    stacked = labels[:, None].expand(len(g), 2, n, n)
    assert torch.equal(act(g, stacked), act(g, labels)[:, None].expand_as(stacked))


def test_mask_moves_labels_like_image() -> None:
    labels = torch.randint(0, 5, (8, 2, 7, 7))
    e = ec.D(4).elements()
    assert torch.equal(Mask(ec.D(4))(e, labels), Image(ec.D(4))(e, labels.double()).long())


@pytest.mark.parametrize("G", [ec.C(8), ec.SO2(), ec.O2()], ids=repr)
@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.float32])
def test_interpolated_mask_keeps_labels(G: Group, dtype: torch.dtype) -> None:
    labels = torch.randint(1, 5, (1, 15, 15)).to(dtype)
    t = G.testing_elements()
    out = Mask(G)(t, labels.expand(len(t), 15, 15))
    assert out.dtype == dtype
    assert set(out.unique().tolist()) <= {0, 1, 2, 3, 4}  # 0 is the padding
    assert torch.equal(Mask(G, padding="border")(G.identity(1), labels), labels)


# ================================================================ points and vectors


@pytest.mark.parametrize("G", PLANAR + SPATIAL, ids=repr)
@given(seed=seeds, batch=batches)
def test_points_action_law(G: Group, seed: int, batch: int) -> None:
    g, k = draw(G, batch, seed, 2)
    x = torch.randn(batch, 7, G.dim, generator=torch.Generator().manual_seed(seed), dtype=FLOAT64)
    act = Points(G)
    torch.testing.assert_close(act(g, act(k, x)), act(G.compose(g, k), x), atol=1e-12, rtol=0)
    assert torch.equal(act(G.identity(1, dtype=FLOAT64), x), x)


@pytest.mark.parametrize("G", PLANAR + SPATIAL, ids=repr)
@given(seed=seeds, batch=batches)
def test_points_are_multiplied_by_the_matrix(G: Group, seed: int, batch: int) -> None:
    (g,) = draw(G, batch, seed, 1)
    x = torch.randn(batch, 5, G.dim, generator=torch.Generator().manual_seed(seed), dtype=FLOAT64)
    expected = x @ G.matrix(g, dtype=FLOAT64).transpose(1, 2)
    torch.testing.assert_close(Points(G)(g, x), expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("G", PLANAR + SPATIAL, ids=repr)
@given(seed=seeds, batch=batches)
def test_vectors_action_law_with_extra_axes(G: Group, seed: int, batch: int) -> None:
    g, k = draw(G, batch, seed, 2)
    x = torch.randn(batch, 2, 3, G.dim, generator=torch.Generator().manual_seed(seed), dtype=FLOAT64)
    act = Vectors(G)
    torch.testing.assert_close(act(g, act(k, x)), act(G.compose(g, k), x), atol=1e-12, rtol=0)
    expected = torch.einsum("bij,bxyj->bxyi", G.matrix(g, dtype=FLOAT64), x)
    torch.testing.assert_close(act(g, x), expected, atol=1e-12, rtol=0)


def test_planar_points_rotate_counter_clockwise() -> None:
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=FLOAT64)
    assert torch.equal(Points(ec.C(4))(torch.tensor([1]), x), torch.tensor([[[0.0, 1.0], [-1.0, 0.0]]], dtype=FLOAT64))
    assert torch.equal(Points(ec.D(4))(torch.tensor([4]), x), torch.tensor([[[-1.0, 0.0], [0.0, 1.0]]], dtype=FLOAT64))


@pytest.mark.parametrize("G", [ec.C(4), ec.SO2(), ec.SO3()], ids=repr)
def test_points_accept_empty_batches_and_clouds(G: Group) -> None:
    g = G.identity(1, dtype=FLOAT64)
    for x in (torch.zeros(0, 4, G.dim, dtype=FLOAT64), torch.zeros(2, 0, G.dim, dtype=FLOAT64)):
        assert torch.equal(Points(G)(g, x), x)
        assert torch.equal(Vectors(G)(g, x), x)


# ================================================================ regular representation and sets


@pytest.mark.parametrize("G", [ec.C(n) for n in (1, 2, 3, 4, 8)] + [ec.D(n) for n in (1, 3, 4)], ids=repr)
@given(seed=seeds, batch=batches)
def test_regular_action_law_and_definition(G: FiniteGroup, seed: int, batch: int) -> None:
    g, k = draw(G, batch, seed, 2)
    logits = torch.randn(batch, G.order, generator=torch.Generator().manual_seed(seed), dtype=FLOAT64)
    act = Regular(G)
    assert torch.equal(act(g, act(k, logits)), act(G.compose(g, k), logits))
    assert torch.equal(act(G.identity(1), logits), logits)
    # (g·ℓ)[g k] = ℓ[k] for every k
    moved = G.compose(g[:, None], G.elements()[None, :])
    assert torch.equal(act(g, logits).gather(1, moved), logits)


@pytest.mark.parametrize("dim", [2, -2])
def test_regular_action_on_another_axis(dim: int) -> None:
    G = ec.D(4)
    g = G.elements()
    x = torch.randn(8, 3, 8, 5, dtype=FLOAT64)
    expected = Regular(G)(g, x.movedim(2, 1)).movedim(1, 2)
    assert torch.equal(Regular(G, dim=dim)(g, x), expected)


@pytest.mark.parametrize("G", [ec.S(n) for n in range(1, 7)], ids=repr)
@given(seed=seeds, batch=batches)
def test_set_action_law_and_permutation_matrix(G: ec.S, seed: int, batch: int) -> None:
    g, k = draw(G, batch, seed, 2)
    x = torch.randn(batch, G.n, 3, generator=torch.Generator().manual_seed(seed), dtype=FLOAT64)
    act = Set(G)
    assert torch.equal(act(g, act(k, x)), act(G.compose(g, k), x))
    assert torch.equal(act(G.identity(1), x), x)
    assert torch.equal(act(g, x), G.matrix(g, dtype=FLOAT64) @ x)
    # (g·x)[p[i]] = x[i]
    assert torch.equal(act(g, x).gather(1, g[:, :, None].expand_as(x)), x)


def test_set_action_on_another_axis() -> None:
    G = ec.S(4)
    g = G.sample(3, generator=torch.Generator().manual_seed(0))
    x = torch.randn(3, 2, 4, dtype=FLOAT64)
    assert torch.equal(Set(G, dim=-1)(g, x), Set(G)(g, x.transpose(1, 2)).transpose(1, 2))


# ================================================================ rules every action keeps


def action_cases() -> list[tuple[Action, Group, Callable[[], torch.Tensor]]]:
    """(action, group, input factory) covering every action kind; images are square 12 x 12."""
    img = lambda: torch.randn(3, 4, 12, 12, dtype=FLOAT64)  # noqa: E731
    cases: list[tuple[Action, Group, Callable[[], torch.Tensor]]] = [
        (Image(G), G, img) for G in [ec.C(4), ec.D(4), ec.C(8), ec.C(3), ec.SO2(), ec.O2()]
    ]
    cases += [
        (Image(ec.SO2(), padding="reflection", mode="nearest"), ec.SO2(), img),
        (Mask(ec.D(4)), ec.D(4), lambda: torch.randint(0, 5, (3, 2, 12, 12))),
        (Mask(ec.C(8)), ec.C(8), lambda: torch.randint(0, 5, (3, 2, 12, 12))),
        (Points(ec.SO3()), ec.SO3(), lambda: torch.randn(3, 6, 3, dtype=FLOAT64)),
        (Points(ec.D(4)), ec.D(4), lambda: torch.randn(3, 6, 2, dtype=FLOAT64)),
        (Vectors(ec.O3()), ec.O3(), lambda: torch.randn(3, 2, 6, 3, dtype=FLOAT64)),
        (Regular(ec.D(4), dim=2), ec.D(4), lambda: torch.randn(3, 2, 8, 5, dtype=FLOAT64)),
        (Set(ec.S(5)), ec.S(5), lambda: torch.randn(3, 5, 4, 2, dtype=FLOAT64)),
    ]
    return cases


CASES = action_cases()


def variants(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The same values laid out differently in memory."""
    out = {"contiguous": x, "transposed": x.transpose(-1, -2).contiguous().transpose(-1, -2),
           "strided": torch.stack([x, x], dim=-1)[..., 0]}
    if x.ndim == 4:
        out["channels_last"] = x.contiguous(memory_format=torch.channels_last)
    return out


@pytest.mark.parametrize(("act", "G", "make"), CASES, ids=[repr(c[0]) for c in CASES])
def test_actions_never_modify_input_and_ignore_memory_layout(act: Action, G: Group, make: Callable) -> None:
    x = make()
    g = G.testing_elements(dtype=FLOAT64)[:3]
    if G.batch_size(g) < 3:
        g = G.expand(g[:1], 3)
    expected = act(g, x)
    for name, xv in variants(x).items():
        assert torch.equal(xv, x)
        before = xv.clone()
        out = act(g, xv)
        assert torch.equal(xv, before), name
        assert torch.equal(out, expected), name
        out.add_(1)  # a new tensor: writing to the output leaves the input alone
        assert torch.equal(xv, before), name


@pytest.mark.parametrize(("act", "G", "make"), CASES, ids=[repr(c[0]) for c in CASES])
def test_one_element_broadcasts_over_the_batch(act: Action, G: Group, make: Callable) -> None:
    x = make()
    g = G.take(G.testing_elements(dtype=FLOAT64), 1)
    assert torch.equal(act(g, x), act(G.expand(g, x.shape[0]), x))
    assert torch.equal(act(g, x)[1:2], act(g, x[1:2]))


def assert_same_on_device(act: Action, G: Group, make: Callable, device: str) -> None:
    x = make()
    g = G.testing_elements(dtype=FLOAT64)[:3]
    g = g if G.batch_size(g) == 3 else G.expand(g[:1], 3)
    out = act(g.to(device), x.to(device))
    assert out.device.type == torch.device(device).type
    torch.testing.assert_close(out.cpu(), act(g, x), atol=1e-12, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(("act", "G", "make"), CASES, ids=[repr(c[0]) for c in CASES])
def test_actions_on_cuda_match_cpu(act: Action, G: Group, make: Callable) -> None:
    assert_same_on_device(act, G, make, "cuda")


def test_trivial_action_returns_the_input() -> None:
    x = torch.randn(3, 4)
    assert Trivial()(ec.C(4).elements()[:3], x) is x
    assert Trivial() == Trivial() and hash(Trivial()) == hash(Trivial())


@pytest.mark.parametrize(("act", "G", "make"), CASES, ids=[repr(c[0]) for c in CASES])
def test_actions_are_values(act: Action, G: Group, make: Callable) -> None:
    same = copy.deepcopy(act)
    assert same is not act and same == act and hash(same) == hash(act) and {act: 1}[same] == 1
    assert act.group == G
    assert repr(act).startswith(type(act).__name__ + "(")


@pytest.mark.parametrize("G", EXACT_IMAGE_GROUPS + INTERPOLATED_IMAGE_GROUPS, ids=repr)
def test_example_is_an_input_the_action_accepts(G: Group) -> None:
    act = Image(G)
    x = act.example(2, generator=torch.Generator().manual_seed(0), dtype=FLOAT64)
    assert torch.equal(act(G.identity(1, dtype=FLOAT64), x), x)
    y = act.example(2, generator=torch.Generator().manual_seed(0), dtype=FLOAT64)
    assert torch.equal(x, y)
