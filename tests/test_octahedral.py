"""Octahedral(): the 24 rotations of the cube. Group axioms (hypothesis), exact matrices, its action on points."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import equicanon as ec
from equicanon.errors import ElementError
from equicanon.groups.continuous import axis_angle

G = ec.Octahedral()
seeds = st.integers(min_value=0, max_value=2**63 - 1)
batches = st.integers(min_value=1, max_value=6)


def draw(batch: int, seed: int, count: int = 1) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [G.sample(batch, generator=gen) for _ in range(count)]


def M(g: torch.Tensor) -> torch.Tensor:
    return G.matrix(g, dtype=torch.float64)


# ---------------------------------------------------------------- exactly (the axioms: test_groups.py, over groups.examples())


def test_octahedral_is_registered_so_the_axiom_tests_cover_it() -> None:
    assert G in ec.groups.examples() and ec.groups.parse_group("octahedral") == G


@given(seed=seeds, batch=batches)
def test_matrix_is_an_exact_homomorphism(seed: int, batch: int) -> None:
    a, b = draw(batch, seed, 2)
    assert torch.equal(M(G.compose(a, b)), M(a) @ M(b))
    assert torch.equal(M(G.inverse(a)), M(a).transpose(1, 2))


def test_cayley_table_is_a_latin_square_with_the_identity_first() -> None:
    table = G.cayley_table()
    e = G.elements()
    assert table.shape == (24, 24)
    assert torch.equal(table[0], e) and torch.equal(table[:, 0], e)
    assert torch.equal(table.sort(dim=0).values, e[:, None].expand_as(table))
    assert torch.equal(table.sort(dim=1).values, e[None, :].expand_as(table))


# ---------------------------------------------------------------- the matrices


def test_matrices_are_exactly_the_signed_permutation_matrices_of_determinant_one() -> None:
    m = M(G.elements())
    assert m.shape == (24, 3, 3)
    assert torch.equal(m[0], torch.eye(3, dtype=torch.float64))
    assert torch.equal(m, m.round()) and set(m.unique().tolist()) == {-1.0, 0.0, 1.0}
    assert torch.equal(m.abs().sum(1), torch.ones(24, 3, dtype=torch.float64))  # one ±1 per column
    assert torch.equal(m.abs().sum(2), torch.ones(24, 3, dtype=torch.float64))  # and per row
    assert torch.equal(torch.linalg.det(m), torch.ones(24, dtype=torch.float64))
    assert torch.unique(m.flatten(1), dim=0).shape[0] == 24
    assert torch.equal(m.transpose(1, 2) @ m, torch.eye(3, dtype=torch.float64).expand(24, 3, 3))


def test_rotation_classes_of_the_cube() -> None:
    """1 identity, 6 quarter turns and 3 half turns about face axes, 8 third turns about diagonals, 6 edge half turns."""
    angles = G.rotation_angle(G.elements())
    counts = {a: int((angles == a).sum()) for a in (0.0, 90.0, 120.0, 180.0)}
    assert counts == {0.0: 1, 90.0: 6, 120.0: 8, 180.0: 9}


def test_generated_by_a_quarter_turn_and_a_third_turn() -> None:
    """Closing {90° about z, 120° about (1, 1, 1)} under products gives all 24 matrices of the group."""
    gens = [axis_angle((0, 0, 1), 90)[0], axis_angle((1, 1, 1), 120)[0]]
    found = {tuple(torch.eye(3, dtype=torch.float64).flatten().tolist())}
    frontier = [torch.eye(3, dtype=torch.float64)]
    while frontier:
        new = []
        for a, b in itertools.product(frontier, gens):
            key = tuple((a @ b).flatten().tolist())
            if key not in found:
                found.add(key)
                new.append(a @ b)
        frontier = new
    assert found == {tuple(m.flatten().tolist()) for m in M(G.elements())}


@pytest.mark.parametrize("k", range(24))
def test_describe_gives_the_axis_and_angle_of_the_matrix(k: int) -> None:
    text = G.describe(torch.tensor([k]))
    assert text.startswith(f"Octahedral()[{k}] = ")
    if k == 0:
        assert text.endswith("identity")
        return
    angle = float(text.split("rotation by ")[1].split("°")[0])
    axis = tuple(int(v) for v in text.split("about (")[1].split(")")[0].split(", "))
    torch.testing.assert_close(axis_angle(axis, angle)[0], M(torch.tensor([k]))[0], atol=1e-12, rtol=0)


# ---------------------------------------------------------------- values and elements


def test_value_semantics() -> None:
    assert repr(G) == str(G) == "Octahedral()"
    assert eval("Octahedral()", {"Octahedral": ec.Octahedral}) == G
    assert ec.groups.Octahedral() == G and hash(ec.Octahedral()) == hash(G)
    assert G != ec.C(4) and G != ec.SO3() and G != ec.S(4)
    assert G.order == 24 and G.dim == 3 and G.is_finite and G.is_indexed
    assert (G.kind, G.has_reflections, G.has_translations, G.rotation_subgroup) == ("spatial", False, False, G)
    with pytest.raises(dataclasses.FrozenInstanceError):
        G.anything = 3  # type: ignore[attr-defined]


def test_sample_is_uniform_and_determined_by_the_generator() -> None:
    a = G.sample(4800, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, G.sample(4800, generator=torch.Generator().manual_seed(0)))
    counts = torch.bincount(a, minlength=24)
    assert (counts - 200).abs().max() < 5 * 200**0.5
    assert torch.equal(G.testing_elements(), G.elements())


@pytest.mark.parametrize("bad", [torch.tensor([24]), torch.tensor([-1]), torch.tensor([0.0]), torch.tensor(3)],
                         ids=["24", "-1", "float", "0-d"])
def test_invalid_elements_are_element_errors(bad: torch.Tensor) -> None:
    with pytest.raises(ElementError):
        G.compose(bad, torch.tensor([0]))


# ---------------------------------------------------------------- acting on points


@given(seed=seeds, batch=batches)
def test_points_action_is_exact_and_follows_the_group_law(seed: int, batch: int) -> None:
    a, b = draw(batch, seed, 2)
    act = ec.actions.Points(G)
    x = torch.randn(batch, 7, 3, generator=torch.Generator().manual_seed(seed % 2**32))
    assert torch.equal(act(a, act(b, x)), act(G.compose(a, b), x))  # float32, bit for bit
    assert torch.equal(act(G.identity(batch), x), x)
    moved = act(a, x)
    assert torch.equal(moved, (M(a).float() @ x.transpose(1, 2)).transpose(1, 2))
    assert torch.equal(moved.abs().sort(-1).values, x.abs().sort(-1).values)  # coordinates only move and flip sign


def test_points_and_vectors_accept_the_group_and_pose_is_left_multiplication() -> None:
    x = torch.randn(3, 5, 3, dtype=torch.float64)
    g = torch.tensor([4, 12, 20])
    assert torch.equal(ec.actions.Vectors(G)(g, x), ec.actions.Points(G)(g, x))
    h = torch.tensor([1, 2, 3])
    assert torch.equal(ec.actions.Pose(G)(g, h), G.compose(g, h))
    logits = torch.randn(3, 24)
    moved = ec.actions.Regular(G)(g, logits)
    for b in range(3):  # entry k moves to g k
        assert torch.equal(moved[b, G.compose(g[b:b + 1], G.elements())], logits[b])
