"""The conditioning regularizer of the vector-frame canonicalizers (``VectorNeurons``, ``ParticleVectorNeurons``).

``conditioning_loss = mean_{b, i} relu(log m₀ − log max(r_{b,i}, 10⁻³ m₀))`` with ``r_{b,i}`` the residual of frame
vector ``i`` after projecting out the ones before it, relative to ``extras["scale"]``: ``r_{b,i} = |R_ii| / scale_b``
for the QR factorisation ``V_b = Q R`` of the frame's vectors. Tested: that formula (against ``torch.linalg.qr``),
the training step adds it only with a positive weight and gradients, finite gradients at degenerate inputs, a few
optimiser steps raise the residuals, the poses stay exactly equivariant, and the configuration errors.
"""

from __future__ import annotations

import math

import pytest
import torch

import equicanon as ec
from equicanon.errors import ConfigError
from equicanon.testing import assert_canonicalizer
from equicanon.training import step


def _particles(weight: float = 1.0, margin: float = 0.5, seed: int = 0) -> ec.canonicalizers.ParticleVectorNeurons:
    torch.manual_seed(seed)
    return ec.canonicalizers.ParticleVectorNeurons(ec.SE3(), 1, hidden=8, conditioning_weight=weight,
                                                   conditioning_margin=margin).double()


def _systems(batch: int = 5, n: int = 9, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, n, 7, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("group", [ec.SO3(), ec.O3()], ids=repr)
def test_conditioning_loss_is_the_log_hinge_of_the_relative_qr_residuals(group):
    torch.manual_seed(0)
    canon = ec.canonicalizers.VectorNeurons(group, hidden=8, conditioning_weight=1.0, conditioning_margin=0.5).double()
    x = torch.randn(6, 20, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    res = canon(x)
    size = 2 if group == ec.SO3() else 3
    r = torch.linalg.qr(res.extras["vectors"][..., :size]).R.diagonal(dim1=-2, dim2=-1).abs()
    relative = (r / res.extras["scale"][:, None]).clamp_min(1e-3 * 0.5)
    want = torch.relu(math.log(0.5) - relative.log()).mean()
    assert torch.allclose(canon.conditioning_loss(res), want, rtol=1e-10, atol=1e-12)
    assert float(want.detach()) > 0, "a margin below every residual would make the check trivial"


def test_the_training_step_adds_it_only_with_a_weight_and_gradients():
    x, y = _systems(), torch.randn(5, 1, dtype=torch.float64)
    model = ec.Canonicalized(ec.models.PointEncoder(7, 1, 8).double(), _particles(weight=2.0))
    out = step(model, (x, y), task_loss="mse", transform=None)
    assert set(out.terms) == {"task", "conditioning"}
    assert torch.allclose(out.loss, out.terms["task"] + 2.0 * out.terms["conditioning"])
    off = ec.Canonicalized(ec.models.PointEncoder(7, 1, 8).double(), _particles(weight=0.0))
    assert set(step(off, (x, y), task_loss="mse", transform=None).terms) == {"task"}
    canon = _particles()
    with torch.no_grad():
        loss, terms = canon.add_regularizers(0.0, canon(x))
    assert terms == {} and loss == 0.0


def test_gradients_stay_finite_on_degenerate_systems():
    """Coincident particles at rest: the frame's vectors vanish by symmetry; below the floor no gradient flows."""
    canon = _particles()
    x = torch.zeros(3, 6, 7, dtype=torch.float64)
    x[..., 6] = 1.0
    loss = canon.conditioning_loss(canon(x))
    loss.backward()
    assert math.isfinite(float(loss))
    assert all(torch.isfinite(p.grad).all() for p in canon.parameters() if p.grad is not None)


def test_a_few_steps_on_it_raise_the_residuals_and_poses_stay_equivariant():
    canon = _particles(margin=1.0)
    x = _systems(batch=8)
    first = float(canon.conditioning_loss(canon(x)).detach())
    opt = torch.optim.Adam(canon.parameters(), lr=1e-2)
    for _ in range(40):
        opt.zero_grad()
        canon.conditioning_loss(canon(x)).backward()
        opt.step()
    assert float(canon.conditioning_loss(canon(x)).detach()) < 0.5 * first
    assert_canonicalizer(canon.eval(), x, dtype=torch.float64)


def test_configuration_errors():
    with pytest.raises(ConfigError, match="conditioning_weight"):
        ec.canonicalizers.ParticleVectorNeurons(ec.SE3(), 1, conditioning_weight=-1.0)
    with pytest.raises(ConfigError, match="conditioning_margin"):
        ec.canonicalizers.VectorNeurons(ec.SO3(), conditioning_margin=0.0)
