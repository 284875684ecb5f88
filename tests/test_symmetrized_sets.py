"""``Symmetrized`` on ``S(n)``: permutations drawn by Gumbel-perturbed sorts (Plackett–Luce) of the ``Sort`` scores."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

import equicanon as ec
from equicanon.canonicalizers import Sort
from equicanon.errors import ConfigError

N, F = 4, 3


def _sort(n: int = N) -> Sort:
    torch.manual_seed(0)
    return Sort(ec.S(n), F, hidden=8).double().eval()


def _sets(batch: int = 3, n: int = N, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, n, F, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


class _OrderSensitive(nn.Module):
    """Not permutation invariant: a linear map of the flattened set."""

    def __init__(self, n: int = N) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.linear = nn.Linear(n * F, 5).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


def test_the_plackett_luce_probabilities_of_all_permutations_sum_to_one():
    canon, x = _sort(3), _sets(2, n=3)
    with torch.no_grad():
        res = canon(x)
    every = torch.tensor(list(itertools.permutations(range(3))))  # (6, 3)
    total = torch.zeros(2, dtype=torch.float64)
    for perm in every:
        # noise that forces this permutation: keys s/τ − G sorted as perm whatever the scores
        keys = torch.empty(2, 1, 3, dtype=torch.float64)
        keys[:, 0, perm] = torch.arange(3, dtype=torch.float64) * 1e6
        noise = res.extras["scores"][:, None] / 0.7 - keys
        poses, log_p = canon.sampled_poses(x, res, 1, 0.7, noise=noise)
        assert torch.equal(poses[:, 0], perm.expand(2, 3))
        total += log_p[:, 0].exp()
    torch.testing.assert_close(total, torch.ones(2, dtype=torch.float64))


def test_draws_follow_their_probabilities():
    canon, x = _sort(3), _sets(1, n=3)
    with torch.no_grad():
        res = canon(x)
        poses, log_p = canon.sampled_poses(x, res, 20000, 0.5, generator=torch.Generator().manual_seed(0))
    for perm in itertools.permutations(range(3)):
        hit = (poses[0] == torch.tensor(perm)).all(dim=-1)
        p = float(log_p[0][hit][0].exp()) if hit.any() else 0.0
        frequency = float(hit.double().mean())
        assert abs(frequency - p) <= 5 * math.sqrt(max(p * (1 - p), 1e-4) / 20000)


def test_draws_move_exactly_with_the_set_and_its_noise():
    canon, x = _sort(), _sets()
    g = ec.S(N).sample(3, generator=torch.Generator().manual_seed(2))
    action = ec.actions.Set(ec.S(N))
    noise = torch.randn(3, 6, N, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        poses, log_p = canon.sampled_poses(x, canon(x), 6, 0.5, noise=noise)
        moved = action(g, x)
        # element i of the moved set is element g⁻¹(i) of x: its noise moves the same way
        moved_noise = action(g, noise.transpose(1, 2)).transpose(1, 2)
        moved_poses, moved_log_p = canon.sampled_poses(moved, canon(moved), 6, 0.5, noise=moved_noise)
    expected = ec.S(N).compose(g.repeat_interleave(6, dim=0), poses.reshape(-1, N)).reshape(3, 6, N)
    assert torch.equal(moved_poses, expected)
    torch.testing.assert_close(moved_log_p, log_p)


def test_symmetrized_sets_agree_in_distribution_and_train_the_scorer():
    canon = _sort()
    model = ec.Symmetrized(_OrderSensitive(), canon, samples=4000, temperature=0.5).eval()
    x = _sets()
    g = ec.S(N).sample(3, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        at_x = model(x, generator=torch.Generator().manual_seed(0))
        at_gx = model(ec.actions.Set(ec.S(N))(g, x), generator=torch.Generator().manual_seed(1))
        poses, _ = model.draw_poses(x, generator=torch.Generator().manual_seed(0))
        single = torch.stack([model.predictor(ec.actions.Set(ec.S(N))(ec.S(N).inverse(poses[:, j]), x))
                              for j in range(300)])
    spread = single.std(dim=0)
    assert (spread > 0).all()  # the draws differ
    assert ((at_x - at_gx).abs() <= 5 * spread * math.sqrt(2 / 4000) + 1e-9).all()
    small = ec.Symmetrized(_OrderSensitive(), _sort(), samples=3, temperature=0.5)
    small(x, generator=torch.Generator().manual_seed(0)).square().sum().backward()
    grads = [p.grad for p in small.canonicalizer.parameters()]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
    assert any(gr.abs().sum() > 0 for gr in grads)  # score-function gradients reach the scorer


def test_a_vanishing_temperature_is_the_hard_sort_and_expected_is_refused():
    canon, x = _sort(), _sets()
    predictor = _OrderSensitive()
    model = ec.Symmetrized(predictor, canon, samples=3, temperature=1e-9).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x, generator=torch.Generator().manual_seed(0)),
                                   ec.Canonicalized(predictor, canon)(x))
        with pytest.raises(ConfigError, match="n! permutations"):
            model.expected(x)


def test_weighting_sorts_is_refused():
    with pytest.raises(ConfigError, match="use Canonicalized"):
        ec.WeightedCanonicalized(_OrderSensitive(), _sort(), top_k=2)
