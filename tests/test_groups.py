"""Group values and their element algebra: axioms, matrices, sampling, value semantics, capabilities, names.

The axiom tests run over ``groups.examples()``: a newly registered family is tested by them without edits here.
"""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import equicanon as ec
from equicanon import groups
from equicanon.errors import ConfigError, GroupMismatchError
from equicanon.groups import FiniteGroup, Group, MatrixGroup

NS = (1, 2, 3, 4, 5, 8)
ALL_GROUPS = list(groups.examples())
INDEXED = [G for G in ALL_GROUPS if G.is_finite]  # elements are integers (indices, permutations): laws hold exactly
RIGID = [G for G in ALL_GROUPS if G.has_translations]  # homogeneous (B, 4, 4) elements; matrix() the orthogonal part
CONTINUOUS_LINEAR = [G for G in ALL_GROUPS if not G.is_finite and not G.has_translations]  # SO2, O2, SO3, O3
ROTATIONS_ONLY = [G for G in ALL_GROUPS if not G.has_reflections and G.kind != "permutation"]  # det = +1

seeds = st.integers(min_value=0, max_value=2**63 - 1)
batches = st.integers(min_value=1, max_value=6)


def draw(G: Group, batch: int, seed: int, count: int = 1) -> list[torch.Tensor]:
    """``count`` batches of elements drawn with a generator seeded by ``seed`` (matrices in float64)."""
    gen = torch.Generator().manual_seed(seed)
    return [G.sample(batch, generator=gen, dtype=torch.float64) for _ in range(count)]


def assert_same_elements(G: Group, a: torch.Tensor, b: torch.Tensor) -> None:
    """Indexed elements must be equal; float64 matrices equal up to rounding (1e-12)."""
    if G in INDEXED:
        assert torch.equal(a, b)
    else:
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def identity(G: Group, batch: int) -> torch.Tensor:
    return G.identity(batch, dtype=torch.float64)


def matrix_size(G: Group) -> int:
    return int(G.matrix(G.identity(1, dtype=torch.float64)).shape[-1])


def eye(G: Group, batch: int) -> torch.Tensor:
    d = matrix_size(G)
    return torch.eye(d, dtype=torch.float64).expand(batch, d, d)


# ---------------------------------------------------------------- group axioms


@pytest.mark.parametrize("G", ALL_GROUPS, ids=repr)
@given(seed=seeds, batch=batches)
def test_compose_is_associative(G: Group, seed: int, batch: int) -> None:
    a, b, c = draw(G, batch, seed, 3)
    assert_same_elements(G, G.compose(G.compose(a, b), c), G.compose(a, G.compose(b, c)))


@pytest.mark.parametrize("G", ALL_GROUPS, ids=repr)
@given(seed=seeds, batch=batches)
def test_identity_is_neutral(G: Group, seed: int, batch: int) -> None:
    (a,) = draw(G, batch, seed)
    e = identity(G, batch)
    assert torch.equal(G.compose(e, a), a)
    assert torch.equal(G.compose(a, e), a)


@pytest.mark.parametrize("G", ALL_GROUPS, ids=repr)
@given(seed=seeds, batch=batches)
def test_inverse_cancels(G: Group, seed: int, batch: int) -> None:
    (a,) = draw(G, batch, seed)
    e = identity(G, batch)
    assert_same_elements(G, G.compose(a, G.inverse(a)), e)
    assert_same_elements(G, G.compose(G.inverse(a), a), e)
    if G in RIGID:  # the translation of the double inverse is R R^T t: equal up to rounding
        assert_same_elements(G, G.inverse(G.inverse(a)), a)
    else:
        assert torch.equal(G.inverse(G.inverse(a)), a)


@pytest.mark.parametrize("G", ALL_GROUPS, ids=repr)
@given(seed=seeds, batch=batches)
def test_one_element_broadcasts_in_compose(G: Group, seed: int, batch: int) -> None:
    a, b = draw(G, batch, seed, 2)
    one = G.take(a, 0)
    assert torch.equal(G.compose(one, b), G.compose(G.expand(one, batch), b))
    assert torch.equal(G.compose(b, one), G.compose(b, G.expand(one, batch)))


@pytest.mark.parametrize("G", [G for G in ALL_GROUPS if G.is_indexed], ids=repr)
def test_cayley_table_is_a_latin_square(G: FiniteGroup) -> None:
    table = G.cayley_table()
    e = G.elements()
    assert torch.equal(table[0], e) and torch.equal(table[:, 0], e)  # index 0 is the identity
    assert torch.equal(table.sort(dim=0).values, e[:, None].expand_as(table))
    assert torch.equal(table.sort(dim=1).values, e[None, :].expand_as(table))


# ---------------------------------------------------------------- matrices


@pytest.mark.parametrize("G", ALL_GROUPS, ids=repr)
@given(seed=seeds, batch=batches)
def test_matrix_is_a_homomorphism(G: Group, seed: int, batch: int) -> None:
    a, b = draw(G, batch, seed, 2)
    M = lambda g: G.matrix(g, dtype=torch.float64)  # noqa: E731
    torch.testing.assert_close(M(G.compose(a, b)), M(a) @ M(b), atol=1e-12, rtol=0)


@pytest.mark.parametrize("G", ALL_GROUPS, ids=repr)
@given(seed=seeds, batch=batches)
def test_matrix_is_orthogonal_and_inverse_is_transpose(G: Group, seed: int, batch: int) -> None:
    (a,) = draw(G, batch, seed)
    m = G.matrix(a, dtype=torch.float64)
    torch.testing.assert_close(m.transpose(1, 2) @ m, eye(G, batch), atol=1e-12, rtol=0)
    torch.testing.assert_close(G.matrix(G.inverse(a), dtype=torch.float64), m.transpose(1, 2), atol=1e-12, rtol=0)
    det = torch.linalg.det(m)
    if G in ROTATIONS_ONLY:
        torch.testing.assert_close(det, torch.ones_like(det), atol=1e-12, rtol=0)
    else:
        torch.testing.assert_close(det.abs(), torch.ones_like(det), atol=1e-12, rtol=0)


@pytest.mark.parametrize("G", ALL_GROUPS, ids=repr)
def test_matrix_of_identity_is_exactly_eye(G: Group) -> None:
    assert torch.equal(G.matrix(identity(G, 3), dtype=torch.float64), eye(G, 3))


@pytest.mark.parametrize("G", [G for G in ALL_GROUPS if G.all_quarter_turns or (G.is_finite and G.kind != "planar")],
                         ids=repr)
def test_pixel_grid_groups_have_exact_integer_matrices(G: Group) -> None:
    """Quarter turns, flips, the cube's rotations and permutations: entries are exactly 0 or ±1 and inverse is
    exactly transpose."""
    e = G.elements()
    m = G.matrix(e, dtype=torch.float64)
    assert torch.equal(m, m.round())
    assert torch.equal(G.matrix(G.inverse(e), dtype=torch.float64), m.transpose(1, 2))


def test_quarter_turn_is_counter_clockwise_with_y_up() -> None:
    assert torch.equal(ec.C(4).matrix(torch.tensor([1]), dtype=torch.float64),
                       torch.tensor([[[0.0, -1.0], [1.0, 0.0]]], dtype=torch.float64))
    # index n of D(n) is the horizontal flip x -> -x
    assert torch.equal(ec.D(4).matrix(torch.tensor([4]), dtype=torch.float64),
                       torch.tensor([[[-1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64))


@pytest.mark.parametrize("n", NS)
def test_cyclic_matrices_agree_with_so2(n: int) -> None:
    k = torch.arange(n)
    expected = ec.SO2().from_angle(2 * math.pi * k.double() / n)
    torch.testing.assert_close(ec.C(n).matrix(k, dtype=torch.float64), expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(ec.C(n).angle(k, dtype=torch.float64), 2 * math.pi * k.double() / n)


@pytest.mark.parametrize("n", NS)
def test_dihedral_matrices_are_rotations_then_flips(n: int) -> None:
    Cn, Dn = ec.C(n), ec.D(n)
    k = torch.arange(n)
    flip = torch.diag(torch.tensor([-1.0, 1.0], dtype=torch.float64))
    rotations = Cn.matrix(k, dtype=torch.float64)
    assert torch.equal(Dn.matrix(k, dtype=torch.float64), rotations)
    reflections = Dn.matrix(k + n, dtype=torch.float64)
    torch.testing.assert_close(reflections, rotations @ flip, atol=1e-15, rtol=0)
    torch.testing.assert_close(torch.linalg.det(reflections), -torch.ones(n, dtype=torch.float64))
    # reflections agree with O2 elements R(2πk/n) F
    torch.testing.assert_close(reflections, ec.O2().from_angle(2 * math.pi * k.double() / n) @ flip, atol=1e-12,
                               rtol=0)


@pytest.mark.parametrize("n", NS)
def test_rotations_of_dihedral_group_compose_like_cyclic_group(n: int) -> None:
    k = torch.arange(n)
    assert torch.equal(ec.D(n).compose(k[:, None], k[None, :]), ec.C(n).compose(k[:, None], k[None, :]))


@pytest.mark.parametrize("n", NS)
def test_flip_reverses_rotation(n: int) -> None:
    """``f r^k f = r^-k`` in D(n)."""
    k, f = torch.arange(n), torch.full((n,), n)
    assert torch.equal(ec.D(n).compose(f, ec.D(n).compose(k, f)), ec.C(n).inverse(k))


@given(theta=st.floats(min_value=-3.14, max_value=3.14), seed=seeds)
def test_planar_angle_reads_back_from_angle(theta: float, seed: int) -> None:
    t = torch.tensor([theta], dtype=torch.float64)
    g = ec.SO2().from_angle(t)
    torch.testing.assert_close(ec.SO2().angle(g), t, atol=1e-12, rtol=0)
    flip = torch.diag(torch.tensor([-1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(ec.O2().angle(g @ flip), t, atol=1e-12, rtol=0)


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_permutation_matrix_moves_row_i_to_p_i(n: int) -> None:
    G = ec.S(n)
    p = G.elements()
    x = torch.randn(p.shape[0], n, 2, dtype=torch.float64)
    moved = G.matrix(p, dtype=torch.float64) @ x
    for b in range(p.shape[0]):
        for i in range(n):
            assert torch.equal(moved[b, p[b, i]], x[b, i])


# ---------------------------------------------------------------- element sets


@pytest.mark.parametrize("G", ALL_GROUPS, ids=repr)
def test_testing_elements_are_valid_varied_and_include_identity(G: Group) -> None:
    t = G.testing_elements(dtype=torch.float64)
    assert torch.equal(G.check(t), t)
    m = G.matrix(t, dtype=torch.float64)
    torch.testing.assert_close(m.transpose(1, 2) @ m, eye(G, len(t)), atol=1e-12, rtol=0)
    assert torch.equal(G.take(t, 0), identity(G, 1))
    order = G.order if G.is_finite else math.inf  # type: ignore[attr-defined]
    distinct = torch.unique(t.flatten(1) if t.ndim > 1 else t, dim=0).shape[0]
    assert distinct >= min(order, 4)
    if G.kind != "permutation":  # S(n) adds two random permutations, which may repeat a fixed one
        assert distinct == len(t)


@pytest.mark.parametrize("G", [G for G in ALL_GROUPS if G.has_reflections], ids=repr)
def test_testing_elements_of_groups_with_reflections_include_reflections(G: Group) -> None:
    det = torch.linalg.det(G.matrix(G.testing_elements(dtype=torch.float64), dtype=torch.float64))
    assert (det < 0).any() and (det > 0).any()


@pytest.mark.parametrize("G", INDEXED, ids=repr)
def test_elements_lists_order_distinct_valid_elements(G: Group) -> None:
    e = G.elements()
    assert e.shape[0] == G.order
    assert torch.unique(e, dim=0).shape[0] == G.order
    assert torch.equal(G.check(e), e)
    assert torch.equal(e[:1], G.identity(1))


def test_group_orders() -> None:
    assert [ec.C(n).order for n in NS] == list(NS)
    assert [ec.D(n).order for n in NS] == [2 * n for n in NS]
    assert [ec.S(n).order for n in range(1, 7)] == [1, 2, 6, 24, 120, 720]


# ---------------------------------------------------------------- sampling


@pytest.mark.parametrize("G", ALL_GROUPS, ids=repr)
def test_sample_is_determined_by_the_generator(G: Group) -> None:
    a = G.sample(16, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    b = G.sample(16, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    c = G.sample(16, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    assert torch.equal(a, b)
    if getattr(G, "order", math.inf) > 1:
        assert not torch.equal(a, c)


@pytest.mark.parametrize("G", ALL_GROUPS, ids=repr)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sample_returns_valid_elements_in_the_requested_dtype(G: Group, dtype: torch.dtype) -> None:
    g = G.sample(32, generator=torch.Generator().manual_seed(0), dtype=dtype)
    assert g.dtype == (torch.int64 if G.is_finite else dtype)
    assert torch.equal(G.check(g), g)
    m = G.matrix(g, dtype=torch.float64)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(m.transpose(1, 2) @ m, eye(G, 32), atol=tol, rtol=0)
    assert G.sample(0, dtype=dtype).shape == (0, *G.element_shape())


@pytest.mark.parametrize("G", ALL_GROUPS, ids=repr)
def test_sample_and_identity_respect_device(G: Group) -> None:
    """The meta device stands in for an accelerator: results land where asked, also with a CPU generator."""
    gen = torch.Generator().manual_seed(0)
    assert G.sample(3, generator=gen, device="meta", dtype=torch.float64).device.type == "meta"
    assert G.sample(3, device="meta", dtype=torch.float64).device.type == "meta"
    assert G.identity(3, device="meta").device.type == "meta"
    assert G.testing_elements(device="meta").device.type == "meta"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("G", ALL_GROUPS, ids=repr)
def test_sample_on_cuda_matches_cpu_generator_draws(G: Group) -> None:
    a = G.sample(5, generator=torch.Generator().manual_seed(1), device="cuda", dtype=torch.float64)
    b = G.sample(5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert a.device.type == "cuda"
    assert torch.equal(a.cpu(), b)
    assert_same_elements(G, G.compose(a, G.inverse(a)).cpu(), identity(G, 5))


@pytest.mark.parametrize("G", [G for G in ALL_GROUPS if G.is_indexed] + [ec.S(3)], ids=repr)
def test_finite_sample_is_uniform(G: Group) -> None:
    g = G.sample(6000, generator=torch.Generator().manual_seed(0))
    _, counts = torch.unique(g, dim=0, return_counts=True)
    assert len(counts) == G.order
    expected = 6000 / G.order
    # about 5 standard deviations of a binomial count
    assert (counts - expected).abs().max() < 5 * math.sqrt(expected)


@pytest.mark.parametrize("G", CONTINUOUS_LINEAR, ids=repr)
def test_continuous_sample_is_haar_distributed(G: MatrixGroup) -> None:
    """The Haar mean of the matrices is 0; O(d) draws rotations and reflections equally often."""
    m = G.sample(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert m.mean(0).abs().max() < 0.03
    # second moment: E[M_ij^2] = 1/d for every entry
    torch.testing.assert_close((m**2).mean(0), torch.full((G.dim, G.dim), 1 / G.dim, dtype=torch.float64),
                               atol=0.02, rtol=0)
    det = torch.linalg.det(m)
    expected_det = 1.0 if G in ROTATIONS_ONLY else 0.0
    assert abs(float(det.mean()) - expected_det) < 0.03


# ---------------------------------------------------------------- values


def test_groups_are_equal_by_value_and_hashable() -> None:
    assert ec.C(8) == ec.C(8) and hash(ec.C(8)) == hash(ec.C(8))
    assert ec.C(4) != ec.D(4)
    assert ec.C(4) != ec.C(8)
    assert ec.SO2() == ec.SO2() and ec.SO2() != ec.O2() and ec.SO3() != ec.O3()
    assert ec.S(5) == ec.S(5) and ec.S(5) != ec.S(4)
    table = {ec.C(8): "c8", ec.D(8): "d8", ec.SO2(): "so2", ec.O2(): "o2", ec.SO3(): "so3", ec.S(3): "s3"}
    assert table[ec.C(8)] == "c8" and table[ec.D(8)] == "d8" and table[ec.O2()] == "o2" and table[ec.S(3)] == "s3"
    assert len({ec.C(8), ec.C(8), ec.D(8), ec.SO2(), ec.SO2()}) == 3


@pytest.mark.parametrize("G", ALL_GROUPS, ids=repr)
def test_groups_are_frozen(G: Group) -> None:
    name = "n" if hasattr(G, "n") else "anything"
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(G, name, 3)


@pytest.mark.parametrize(
    ("G", "text"),
    [(ec.C(8), "C(8)"), (ec.D(4), "D(4)"), (ec.SO2(), "SO2()"), (ec.O2(), "O2()"), (ec.SO3(), "SO3()"),
     (ec.O3(), "O3()"), (ec.S(5), "S(5)"), (ec.SE3(), "SE3()"), (ec.E3(), "E3()"), (ec.Octahedral(), "Octahedral()")],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_repr_is_the_constructor_call(G: Group, text: str) -> None:
    assert repr(G) == text == str(G)
    assert eval(text, vars(groups)) == G


@pytest.mark.parametrize("G", ALL_GROUPS, ids=repr)
def test_every_example_prints_as_the_constructor_call(G: Group) -> None:
    assert eval(repr(G), vars(groups)) == G


@pytest.mark.parametrize(
    ("G", "g", "text"),
    [(ec.C(8), torch.tensor([3]), "C(8)[3] = r^3 (rotation by 135°)"),
     (ec.D(4), torch.tensor([5]), "D(4)[5] = r^1 f (rotation by 90° after a horizontal flip)"),
     (ec.S(3), torch.tensor([[1, 2, 0]]), "S(3) permutation [1, 2, 0]")],
)
def test_describe_names_the_element(G: Group, g: torch.Tensor, text: str) -> None:
    assert G.describe(g) == text


def test_describe_names_continuous_elements() -> None:
    g = ec.SO2().from_angle(torch.tensor([30.0], dtype=torch.float64), degrees=True)
    assert ec.SO2().describe(g) == "SO2() rotation by 30°"
    flip = torch.diag(torch.tensor([-1.0, 1.0], dtype=torch.float64))
    assert ec.O2().describe(g @ flip) == "O2() rotation by 30° after a horizontal flip"
    assert "reflection" in ec.O3().describe(-ec.O3().identity(1))


@pytest.mark.parametrize("ctor", [ec.C, ec.D, ec.S], ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    ("bad", "got"),
    [(0, "got 0"), (-1, "got -1"), (2.5, "got float 2.5"), (True, "got bool True"), ("3", "got str '3'"),
     (None, "got NoneType None")],
)
def test_invalid_construction_raises_config_error(ctor: type, bad: object, got: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{ctor.__name__}(n): n: expected an integer >= 1, {got}")) as info:
        ctor(bad)
    assert isinstance(info.value, ValueError)


# ---------------------------------------------------------------- capabilities


@pytest.mark.parametrize(
    ("G", "dim", "reflections", "translations", "rotations", "square", "kind"),
    [(ec.C(4), 2, False, False, ec.C(4), True, "planar"), (ec.C(3), 2, False, False, ec.C(3), False, "planar"),
     (ec.D(8), 2, True, False, ec.C(8), True, "planar"), (ec.D(2), 2, True, False, ec.C(2), False, "planar"),
     (ec.SO2(), 2, False, False, ec.SO2(), False, "planar"), (ec.O2(), 2, True, False, ec.SO2(), False, "planar"),
     (ec.SO3(), 3, False, False, ec.SO3(), False, "spatial"), (ec.O3(), 3, True, False, ec.SO3(), False, "spatial"),
     (ec.Octahedral(), 3, False, False, ec.Octahedral(), False, "spatial"),
     (ec.SE3(), 3, False, True, ec.SO3(), False, "rigid"), (ec.E3(), 3, True, True, ec.SO3(), False, "rigid"),
     (ec.S(4), None, False, False, ec.S(4), False, "permutation")],
    ids=repr,
)
def test_groups_say_what_they_are(G: Group, dim: int | None, reflections: bool, translations: bool,
                                  rotations: Group, square: bool, kind: str) -> None:
    assert (G.dim, G.has_reflections, G.has_translations, G.rotation_subgroup, G.needs_square_images, G.kind) == (
        dim, reflections, translations, rotations, square, kind)


@pytest.mark.parametrize("G", ALL_GROUPS, ids=repr)
def test_capabilities_agree_with_the_elements(G: Group) -> None:
    """What a group says about itself holds for its testing elements: matrix size, reflections, translations,
    quarter turns; its rotation subgroup is a subgroup without reflections or translations."""
    t = G.testing_elements(dtype=torch.float64)
    m = G.matrix(t, dtype=torch.float64)
    if G.dim is not None:
        assert m.shape[-1] == G.dim
    assert G.kind in ("planar", "spatial", "rigid", "permutation")
    assert (G.kind == "permutation") == (G.dim is None)
    if G.kind != "permutation":
        assert bool((torch.linalg.det(m) < 0).any()) == G.has_reflections
    assert (G.element_shape() == (4, 4)) == G.has_translations
    assert G.is_indexed == (G.is_finite and G.element_shape() == ())
    quarter = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
    if G.kind == "planar" and G.is_finite:
        assert G.needs_square_images == any(torch.equal(q, quarter) for q in m)
        assert G.all_quarter_turns == bool(torch.equal(m, m.round()))
    else:
        assert not G.needs_square_images and not G.all_quarter_turns
    H = G.rotation_subgroup
    assert not H.has_reflections and not H.has_translations and H.rotation_subgroup == H
    assert H.kind in (G.kind, "spatial") and H.dim == G.dim
    if G.is_finite:  # every element of the subgroup is an element of G (same matrices)
        inside = {tuple(x.flatten().tolist()) for x in G.matrix(G.testing_elements(), dtype=torch.float64)}
        assert all(tuple(x.flatten().tolist()) in inside for x in H.matrix(H.testing_elements(), dtype=torch.float64))


# ---------------------------------------------------------------- names, the registry, as_group


@pytest.mark.parametrize("G", ALL_GROUPS, ids=repr)
def test_every_registered_group_parses_from_its_name_and_its_repr(G: Group) -> None:
    name = groups.group_name(G)
    for text in (name, name.lower(), repr(G), repr(G).lower()):
        assert groups.parse_group(text) == G
        assert groups.as_group(text) == G


def test_registry_lists_every_family_once_with_its_examples() -> None:
    names = [f.name for f in groups.families()]
    assert names == ["C<n>", "D<n>", "SO2", "O2", "SO3", "O3", "SE3", "E3", "S<n>", "Octahedral"]
    assert groups.examples() == tuple(g for f in groups.families() for g in f.examples)
    assert all(groups.family_of(g) is f for f in groups.families() for g in f.examples)
    assert groups.parse_group("SO(3)") == ec.SO3() and groups.parse_group(" d(8) ") == ec.D(8)


def test_a_new_family_is_one_register_family_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """A registered class is read by parse_group and listed by examples() (the axiom tests' list)."""
    from equicanon.groups import registry

    @dataclasses.dataclass(frozen=True, repr=False)
    class Z(ec.C):
        def __repr__(self) -> str:
            return f"Z({self.n})"

    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))
    groups.register_family("Z<n>", Z, examples=[Z(6)])
    assert groups.parse_group("z(6)") == Z(6) and groups.as_group("Z12") == Z(12)
    assert Z(6) in groups.examples() and groups.group_name(Z(6)) == "Z6"
    with pytest.raises(ConfigError, match="already registered"):
        groups.register_family("z<n>", Z, examples=[Z(2)])
    with pytest.raises(ConfigError, match="must look like"):
        groups.register_family("Z 2", Z, examples=[Z(2)])
    with pytest.raises(ConfigError, match="examples must be"):
        groups.register_family("Y<n>", Z, examples=[ec.C(2)])


def test_as_group_passes_groups_and_parses_names() -> None:
    planar = lambda g: g.kind == "planar"  # noqa: E731
    G = ec.D(4)
    assert groups.as_group(G) is G and groups.as_group(G, where=planar) is G
    assert groups.as_group("C8", where=planar) == ec.C(8)
    assert groups.as_group("SO(3)", where=lambda g: not g.is_finite) == ec.SO3()


def test_as_group_says_what_was_expected_and_what_came() -> None:
    finite_planar = lambda g: g.is_finite and g.kind == "planar"  # noqa: E731
    with pytest.raises(GroupMismatchError, match=re.escape("GroupConv: group: expected one of 'C<n>', 'D<n>', "
                                                           "got SO2()")):
        groups.as_group(ec.SO2(), where=finite_planar, what="GroupConv: group")
    with pytest.raises(ConfigError, match=re.escape("names SO3(), which is not accepted here: expected one of "
                                                    "'C<n>', 'D<n>', got 'so3'")):
        groups.as_group("so3", where=finite_planar)
    with pytest.raises(ConfigError, match=re.escape("unknown group 'C4x': expected a square-image group, got 'C4x'; "
                                                    "did you mean 'C4'?")):
        groups.as_group("C4x", where=lambda g: g.needs_square_images, expected="a square-image group")
    with pytest.raises(ConfigError, match=re.escape("rotate: expected a group or a group name, one of 'SO3', 'O3', "
                                                    "'Octahedral' (e.g. 'SO3' or SO3()), got int 3")):
        groups.as_group(3, where=lambda g: g.kind == "spatial", what="rotate")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="the order n of C<n> must be an integer >= 1, got 0"):
        groups.as_group("C0")
    with pytest.raises(ConfigError, match="did you mean 'SE3'"):
        groups.parse_group("SE2", where=lambda g: g.has_translations)
