"""Property-based fuzzing (hypothesis, bounded and derandomized so CI is fast and reproducible).

For every registered canonicalizer configuration: random initialisations, batch sizes, image sizes,
dtypes and group elements, and the contract ``pose(g·x) = g pose(x)``, ``canonical(g·x) = canonical(x)``.
Interpolating configurations (C(8), SO(2), O(2)) are fuzzed on the elements that map the pixel grid
onto itself (quarter turns and flips), where they are exact too; their interpolated angles are
measured in tests/test_canonicalizers.py. Also the action law ``g·(h·x) = (gh)·x`` of the exact actions.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import equicanon as ec
from equicanon.canonicalizers.base import RegistryCase, available, entry
from equicanon.testing import assert_canonicalizer

FUZZ = settings(max_examples=4, deadline=None, derandomize=True)
CASES = [pytest.param(case, id=f"{name}:{case.name}") for name in available() for case in entry(name).test_cases()]
SEEDS = st.integers(0, 2**31 - 1)


def _grid_elements(group: ec.groups.Group, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` random elements of ``group`` that map the pixel grid onto itself (all elements of C(4), D(4), ...)."""
    if isinstance(group, ec.groups.PlanarFiniteGroup):
        exact = group.elements()[group.is_quarter_turn(group.elements())]
        return exact[torch.randint(len(exact), (count,), generator=generator)]
    angles = 90.0 * torch.randint(4, (count,), generator=generator).double()
    quarter = ec.groups.base.snap(ec.SO2().from_angle(angles, degrees=True))  # exact 0 and ±1 entries
    if isinstance(group, ec.O2):
        flip = torch.where(torch.rand(count, generator=generator, dtype=torch.float64) < 0.5, -1.0, 1.0)
        quarter = quarter * torch.stack([flip, torch.ones_like(flip)], -1)[:, None, :]  # R F: negate the first column
    return quarter


@pytest.mark.parametrize("case", CASES)
@FUZZ
@given(seed=SEEDS, batch=st.integers(1, 3), size=st.integers(3, 11), float32=st.booleans())
def test_every_registered_canonicalizer_is_invariant_under_random_elements(case: RegistryCase, seed: int, batch: int,
                                                                           size: int, float32: bool) -> None:
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    canon = case.make().eval()
    group = canon.group
    image = "size" in case.input_shape
    if image and getattr(canon, "resize", None) is not None:
        size = max(size, 5)  # crop + resize needs a few pixels
    shape = (batch, *(size if s == "size" else int(s) for s in case.input_shape[1:]))
    x = torch.randn(shape, generator=generator, dtype=torch.float64)
    if image:
        elements = _grid_elements(group, 4, generator)
    else:
        elements = group.sample(4, generator=generator, dtype=torch.float64)
    dtype = torch.float32 if float32 else torch.float64
    tolerance = {"atol": 1e-4, "rtol": 1e-4} if float32 else {}
    if float32 and image and case.exact:
        tolerance = {"atol": 1e-5, "rtol": 0.0}
    assert_canonicalizer(canon, x, elements=elements, dtype=dtype, **tolerance)


EXACT_ACTIONS = [ec.actions.Image(ec.D(4)), ec.actions.Points(ec.O3()), ec.actions.Points(ec.SE3()),
                 ec.actions.Particles(ec.E3()), ec.actions.Set(ec.S(5)), ec.actions.Regular(ec.D(3)),
                 ec.actions.Vectors(ec.SO2())]


@pytest.mark.parametrize("action", EXACT_ACTIONS, ids=repr)
@FUZZ
@given(seed=SEEDS, batch=st.integers(0, 4))
def test_exact_actions_compose(action: ec.actions.Action, seed: int, batch: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    group = action.group
    assert group is not None
    x = action.example(batch, generator=generator, dtype=torch.float64)
    g, h = (group.sample(batch, generator=generator, dtype=torch.float64) for _ in range(2))
    before = x.clone()
    torch.testing.assert_close(action(g, action(h, x)), action(group.compose(g, h), x), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(action(group.inverse(g), action(g, x)), x, atol=1e-12, rtol=1e-12)
    assert torch.equal(x, before)
