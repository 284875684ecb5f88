"""The model-driven prior: distilling test-time canonicalization into a cheap canonicalizer (issue 18, item 2).

- the prior's soft targets: cross-entropy to a distribution over the group's elements;
- ``train_canonicalizer`` / ``adapt_pretrained(prior="model", reference=...)`` train towards a ``TestTime``
  teacher, also on data that is not upright, and the student then agrees with the teacher;
- what is refused, with a clear error: training ``TestTime`` itself, ``reference`` without ``prior="model"``,
  a teacher of another group, an unknown prior.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import equicanon as ec
from equicanon.canonicalizers.functional import identity_cross_entropy
from equicanon.errors import ConfigError, ShapeError
from equicanon.training.step import teacher_distribution


def _bars(n: int, seed: int) -> torch.Tensor:
    """Upright images ``(n, 1, 12, 12)``: a vertical bar with a blob on top (an orientation any network sees)."""
    gen = torch.Generator().manual_seed(seed)
    x = 0.05 * torch.rand(n, 1, 12, 12, generator=gen)
    x[:, :, 2:10, 5:7] += 1.0
    x[:, :, 1:4, 3:9] += 0.8
    return x


def _predictor() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 144, 5)).eval()


def test_soft_targets_are_a_cross_entropy_to_a_distribution() -> None:
    logits = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
    target = torch.softmax(torch.randn(4, 8, dtype=torch.float64), dim=-1)
    expected = -(target * logits.log_softmax(-1)).sum(-1).mean()
    torch.testing.assert_close(identity_cross_entropy(logits, target), expected)
    one_hot = torch.nn.functional.one_hot(torch.tensor([0, 3, 1, 7]), 8).double()
    torch.testing.assert_close(identity_cross_entropy(logits, one_hot),
                               identity_cross_entropy(logits, torch.tensor([0, 3, 1, 7])))
    with pytest.raises(ShapeError, match="distribution over the 8 elements"):
        identity_cross_entropy(logits, target[:, :4])


def test_teacher_distribution_is_equivariant_for_testtime() -> None:
    """The teacher's target on ``g·x`` is its target on ``x`` permuted by ``g`` (quarter turns: exactly)."""
    net = _predictor()
    teacher = ec.canonicalizers.TestTime(ec.C(4), net, reference=_bars(40, 0))
    x = _bars(6, 1).double()
    teacher.double()
    p = teacher_distribution(teacher, x)
    assert torch.allclose(p.sum(-1), torch.ones(6, dtype=p.dtype))
    action = ec.actions.Image(ec.C(4))
    moved = teacher_distribution(teacher, action(torch.ones(6, dtype=torch.long), x))
    torch.testing.assert_close(moved, p.roll(1, dims=-1), atol=1e-6, rtol=0)


def test_distillation_trains_on_turned_data_and_agrees_with_its_teacher() -> None:
    """Unlabelled training data all turned by 180°: the identity prior learns that 180° is upright, the
    model-driven prior learns the teacher's poses (the upright bar), so the student's pose on upright test
    images is mostly the identity."""
    net = _predictor()
    upright = _bars(40, 0)
    turned = ec.actions.Image(ec.C(4))(torch.full((200,), 2), _bars(200, 2))
    teacher = ec.canonicalizers.TestTime(ec.C(4), net, reference=upright)
    test = _bars(64, 3)
    assert float((teacher(test).pose == 0).float().mean()) > 0.9  # the teacher knows the bar
    rates = {}
    for prior in ("identity", "model"):
        torch.manual_seed(0)
        canon = ec.canonicalizers.GroupConv(ec.C(4), 1, hidden=4, layers=2, kernel_size=3)
        model = ec.adapt_pretrained(net, ec.C(4), canonicalizer=canon, data=turned, steps=60, batch_size=32, lr=1e-2,
                                    prior=prior, reference=upright if prior == "model" else None, transform="group")
        rates[prior] = float((model.canonicalizer(test).pose == 0).float().mean())
    assert rates["model"] > 0.8 and rates["identity"] < 0.2, rates


def test_what_is_refused() -> None:
    net = _predictor()
    upright = _bars(20, 0)
    tt = ec.canonicalizers.TestTime(ec.C(4), net, reference=upright)
    with pytest.raises(ConfigError, match="nothing to train"):
        ec.train_canonicalizer(ec.Canonicalized(net, tt), upright, 1)
    canon = ec.canonicalizers.GroupConv(ec.C(4), 1, hidden=4, layers=2, kernel_size=3)
    model = ec.Canonicalized(net, canon)
    with pytest.raises(ConfigError, match="reference= is for prior='model'"):
        ec.train_canonicalizer(model, upright, 1, reference=upright)
    with pytest.raises(ConfigError, match="needs reference="):
        ec.train_canonicalizer(model, upright, 1, prior="model")
    with pytest.raises(ConfigError, match="prior must be"):
        ec.train_canonicalizer(model, upright, 1, prior="upright")
    other = ec.canonicalizers.TestTime(ec.C(8), net, reference=upright)
    with pytest.raises(ConfigError, match="group"):
        ec.train_canonicalizer(model, upright, 1, prior=other)
    with pytest.raises(ConfigError, match="weight"):
        ec.train_canonicalizer(model, upright, 1, prior=tt, prior_weight=0.0, finetune=True)
