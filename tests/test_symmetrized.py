"""``Symmetrized``: the mean of ``h_j ⋆ p(h_j⁻¹·x)`` over poses drawn from ``p(h|x) = softmax(ℓ(x)/τ)``.

Equivariant in distribution (its exact expectation is equivariant; Monte-Carlo means at ``x`` and ``g·x`` agree
within their standard errors); ``τ → 0`` is ``Canonicalized``; draws are i.i.d.; the score-function surrogate
with the leave-one-out baseline gives unbiased gradients of the expectation to the logits.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import equicanon as ec
from equicanon.canonicalizers import Canonicalization, Canonicalizer, GroupConv
from equicanon.errors import ConfigError, DTypeError
from equicanon.nn import LiftingConv2d
from equicanon.testing import assert_equivariant, equivariance_error
from equicanon.training import fit, step

CLASSES = 5
#: a bound on |Monte-Carlo mean − what it estimates| in standard errors: a normal tail of 5.7e-7 per compared
#: coordinate, so the few thousand comparisons below fail by chance with probability below 1e-3
Z = 5.0


def _classifier() -> nn.Module:
    """A plain CNN (random 3x3 filters, max pools, no batch norm: rows stay independent); not rotation invariant."""
    return ec.models.SmallCNN(classes=CLASSES, in_channels=3, width=4, batch_norm=False)


def _dense() -> nn.Module:
    """Per-pixel scores ``(B, 2, H, W)`` from one random convolution; not rotation equivariant."""
    return nn.Conv2d(3, 2, 3, padding=1)


def _canonicalizer(group: ec.groups.Group) -> GroupConv:
    return GroupConv(group, 3, hidden=4, kernel_size=3)


def _images(size: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _model(group: ec.groups.Group, output: str = "trivial", **kwargs) -> ec.Symmetrized:
    predictor = _classifier() if output == "trivial" else _dense()
    out_action = ec.actions.Trivial() if output == "trivial" else ec.actions.Image(group)
    kwargs.setdefault("samples", 4)
    return ec.Symmetrized(predictor, _canonicalizer(group), output=out_action, **kwargs).double().eval()


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- equivariance in distribution -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("size", [14, 15])
@pytest.mark.parametrize("output", ["trivial", "image"])
@pytest.mark.parametrize("group", [ec.C(4), ec.D(4)], ids=repr)
def test_the_exact_expectation_is_equivariant(group, output, size, dtype):
    torch.manual_seed(0)
    model = _model(group, output).to(dtype)
    image, out_action = ec.actions.Image(group), model.output
    x = _images(size).to(dtype)
    if dtype == torch.float64:  # the predictor alone is not equivariant
        assert equivariance_error(model.predictor, group, image, out_action, x).max_error > 1e-3
    with torch.no_grad():
        report = assert_equivariant(model.expected, group, image, out_action, x, dtype=dtype)
    assert len(report.errors) == group.order


def test_the_expectation_with_a_contrastive_canonicalizer_is_invariant():
    torch.manual_seed(0)
    group = ec.C(4)
    canon = ec.canonicalizers.Contrastive(group, ec.models.ConvEncoder(3), embed_dim=16)
    model = ec.Symmetrized(_classifier(), canon, samples=2).double().eval()
    with torch.no_grad():
        assert_equivariant(model.expected, group, ec.actions.Image(group), ec.actions.Trivial(), _images(15))


def test_the_expectation_is_the_probability_weighted_sum_written_out():
    """``Σ_h softmax(ℓ/τ)_h · rot90^h p(rot90^{-h} x)`` for C(4)."""
    torch.manual_seed(0)
    model = _model(ec.C(4), "image", temperature=0.5)
    x = _images(13)
    with torch.no_grad():
        p = torch.softmax(model.canonicalizer(x).logits / 0.5, dim=1)
        expected = sum(p[:, h, None, None, None] * torch.rot90(model.predictor(torch.rot90(x, -h, dims=(-2, -1))),
                                                                h, dims=(-2, -1)) for h in range(4))
        torch.testing.assert_close(model.expected(x), expected, atol=1e-12, rtol=0)


def _draws(model: ec.Symmetrized, x: torch.Tensor, rows: int, seed: int) -> torch.Tensor:
    """``rows`` independent ``samples``-draw estimates at every input: ``(rows, B, *)``."""
    with torch.no_grad():
        out = model(x.repeat(rows, *([1] * (x.ndim - 1))), generator=_seeded(seed))
    return out.reshape(rows, *x.shape[:1], *out.shape[1:])


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(("group", "output"), [(ec.C(4), "trivial"), (ec.D(4), "trivial"), (ec.C(4), "image")],
                         ids=["C4-trivial", "D4-trivial", "C4-image"])
def test_monte_carlo_means_at_x_and_at_g_x_agree(group, output, seed):
    """``f̂(g·x)`` has the law of ``g ⋆ f̂(x)``: over ``n`` draws each, the means differ by at most ``Z`` standard
    errors ``sqrt(s²(x)/n + s²(g·x)/n)`` (sample variances) in every coordinate, and each is within ``Z`` of its
    own standard errors of the exact expectation. Not vacuous: the bound is below a third of the predictor's own
    equivariance error (what a model that did not symmetrize would show)."""
    torch.manual_seed(seed)
    model, rows = _model(group, output, temperature=0.3), 400
    image, x = ec.actions.Image(group), _images(9, seed=seed)
    at_x = _draws(model, x, rows, 100 + seed)
    with torch.no_grad():
        exact = model.expected(x)
        raw = equivariance_error(model.predictor, group, image, model.output, x).max_error
    se_x = at_x.var(dim=0) / rows
    assert ((at_x.mean(dim=0) - exact).abs() <= Z * se_x.sqrt()).all()
    assert 2 * float((Z * se_x.sqrt()).max()) < raw / 3
    for g in group.elements():
        moved = _draws(model, image(g.expand(2), x), rows, 200 + seed + int(g))  # other noise: only laws agree
        back = model.output(group.inverse(g.expand(rows * 2)), moved.flatten(0, 1)).reshape(moved.shape)
        bound = Z * (se_x + back.var(dim=0) / rows).sqrt()
        assert ((back.mean(dim=0) - at_x.mean(dim=0)).abs() <= bound).all(), int(g)


# --- the draws ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("samples", [1, 3])
@pytest.mark.parametrize("output", ["trivial", "image"])
def test_a_vanishing_temperature_is_canonicalized(output, samples):
    torch.manual_seed(0)
    model = _model(ec.D(4), output, samples=samples, temperature=1e-9)
    hard = ec.Canonicalized(model.predictor, model.canonicalizer, output=model.output).eval()
    x = _images(15, batch=4)
    with torch.no_grad():
        got, res = model(x, return_canonicalization=True, generator=_seeded(0))
        assert float(res.margin.min()) > 1e-6  # no ties: the argmax is the only pose of positive probability
        assert torch.equal(model.sample_poses(res.logits, _seeded(1)), res.pose[:, None].expand(4, samples))
        torch.testing.assert_close(got, hard(x), atol=1e-12, rtol=0)


def test_draws_follow_the_softmax_and_are_iid_not_a_permutation():
    """``samples = |G|`` draws with replacement: under uniform logits all four elements of C(4) come up in only
    ``4!/4⁴ = 9.4 %`` of the rows; the frequencies are ``softmax(ℓ/τ)`` and two draws of a row coincide with
    probability ``Σ p_h²``, each within ``Z`` binomial standard errors."""
    model = ec.Symmetrized(_classifier(), _canonicalizer(ec.C(4)), samples=4, temperature=0.5)
    rows = 20000
    uniform = model.sample_poses(torch.zeros(rows, 4), _seeded(0))
    permutation = (uniform.sort(dim=1).values == torch.arange(4)).all(dim=1).double().mean()
    p = 24 / 256
    assert abs(float(permutation) - p) <= Z * math.sqrt(p * (1 - p) / rows)
    logits = torch.tensor([0.4, -0.3, 0.0, 0.2])
    probs = torch.softmax(logits.double() / 0.5, dim=0)
    poses = model.sample_poses(logits.expand(rows, 4), _seeded(1))
    freq = torch.stack([(poses == h).double().mean() for h in range(4)])
    assert ((freq - probs).abs() <= Z * (probs * (1 - probs) / (rows * 4)).sqrt()).all()
    same, q = (poses[:, 0] == poses[:, 1]).double().mean(), float(probs.square().sum())
    assert abs(float(same) - q) <= Z * math.sqrt(q * (1 - q) / rows)
    never = model.sample_poses(torch.tensor([[0.0, -math.inf, 1.0, -math.inf]]).expand(1000, 4), _seeded(2))
    assert set(never.unique().tolist()) <= {0, 2}  # elements of probability 0 are never drawn


def test_the_prediction_is_the_mean_over_the_drawn_poses():
    torch.manual_seed(0)
    model = _model(ec.C(4), "image", samples=3)
    x = _images(13)
    with torch.no_grad():
        poses = model.sample_poses(model.canonicalizer(x).logits, _seeded(5))
        expected = torch.stack([
            sum(torch.rot90(model.predictor(torch.rot90(x[b:b + 1], -int(h), dims=(-2, -1))), int(h),
                            dims=(-2, -1))[0] for h in poses[b]) / 3 for b in range(2)])
        torch.testing.assert_close(model(x, generator=_seeded(5)), expected, atol=1e-12, rtol=0)


def test_it_is_reproducible_with_a_generator():
    torch.manual_seed(0)
    canon, predictor = _canonicalizer(ec.C(4)).double().eval(), _classifier().double()
    x = _images(14, batch=3)
    a, b = (ec.Symmetrized(predictor, canon, samples=4, generator=_seeded(7)) for _ in range(2))
    with torch.no_grad():
        first = a(x)
        assert torch.equal(b(x), first)  # same seed, same draws
        assert not torch.equal(a(x), first)  # the model's generator advances
        assert torch.equal(a(x, generator=_seeded(7)), first)  # a per-call generator wins
        torch.manual_seed(3)
        plain = ec.Symmetrized(predictor, canon, samples=4)(x)
        torch.manual_seed(3)
        assert torch.equal(ec.Symmetrized(predictor, canon, samples=4)(x), plain)  # the global generator


@pytest.mark.parametrize("elements_per_call", [1, 3])
def test_chunking_changes_neither_the_prediction_nor_the_gradient(elements_per_call):
    torch.manual_seed(0)
    whole = _model(ec.D(4), "image", samples=5)
    chunked = ec.Symmetrized(whole.predictor, whole.canonicalizer, output=whole.output, samples=5,
                             elements_per_call=elements_per_call)
    x = _images(15, batch=3)
    grads = []
    for model in (whole, chunked):
        model.zero_grad()
        out = model(x, generator=_seeded(1))
        out.square().sum().backward()
        grads.append((out.detach(), _lift(model.canonicalizer).weight.grad.clone()))
    torch.testing.assert_close(grads[1][0], grads[0][0], atol=1e-12, rtol=0)
    torch.testing.assert_close(grads[1][1], grads[0][1], atol=1e-10, rtol=1e-10)


# --- gradients ----------------------------------------------------------------------------------------------------


class _FreeLogits(Canonicalizer):
    """C(4) poses from logits that are parameters, one row per input: the gradient to each row is one estimate.
    ``None``: results without logits (pose: the identity)."""

    def __init__(self, logits: torch.Tensor | None) -> None:
        super().__init__()
        self.group = ec.C(4)
        self.action = ec.actions.Image(self.group)
        self.rows = None if logits is None else nn.Parameter(logits.clone())

    def forward(self, x: torch.Tensor) -> Canonicalization:
        if self.rows is None:
            return Canonicalization(x, self.group.identity(x.shape[0]), self.group)
        return Canonicalization(x, self.rows.detach().argmax(dim=1), self.group, logits=self.rows)

    def prior_loss(self, result: Canonicalization, target: torch.Tensor | None = None) -> torch.Tensor:
        return torch.zeros(())


def _estimates(samples: int, temperature: float, rows: int, offset: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row surrogate gradients ``(rows, 4)`` of ``c · out`` in the logits, and the exact gradient ``(4,)`` of
    ``c · expected`` (enumeration), for one 5x5 image; ``offset`` is added to every prediction."""
    torch.manual_seed(0)
    predictor = nn.Sequential(nn.Flatten(), nn.Linear(3 * 5 * 5, 3)).double()
    with torch.no_grad():
        predictor[1].bias += offset
    logits = torch.tensor([[0.5, -0.2, 0.1, 0.3]], dtype=torch.float64)
    x, c = _images(5, batch=1), torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    exact = ec.Symmetrized(predictor, _FreeLogits(logits), samples=samples, temperature=temperature)
    (exact.expected(x) * c).sum().backward()
    canon = _FreeLogits(logits.expand(rows, 4))
    model = ec.Symmetrized(predictor, canon, samples=samples, temperature=temperature)
    (model(x.expand(rows, -1, -1, -1), generator=_seeded(samples)) * c).sum().backward()
    assert canon.rows.grad is not None and exact.canonicalizer.rows.grad is not None
    return canon.rows.grad, exact.canonicalizer.rows.grad[0]


@pytest.mark.parametrize("temperature", [1.0, 0.5])
@pytest.mark.parametrize("samples", [1, 2, 4])
def test_the_surrogate_gradient_is_unbiased(samples, temperature):
    """The mean of 20,000 independent estimates of ``∂(c · f)/∂ℓ`` is within ``Z`` standard errors (from their
    sample variance) of the exact gradient of the expectation, and that bound is far below the gradient."""
    estimates, exact = _estimates(samples, temperature, rows=20000)
    se = estimates.var(dim=0).div(estimates.shape[0]).sqrt()
    assert ((estimates.mean(dim=0) - exact).abs() <= Z * se).all(), (estimates.mean(dim=0), exact, se)
    assert float(Z * se.max()) < 0.2 * float(exact.abs().max())


def test_the_leave_one_out_baseline_reduces_the_variance():
    """Predictions with a large common offset: four draws with the baseline have over 5x less variance than four
    independent draws without it (a quarter of one draw's, which the offset dominates); the offset leaves the
    exact gradient alone."""
    one, exact = _estimates(1, 1.0, rows=4000, offset=10.0)
    four, exact_four = _estimates(4, 1.0, rows=4000, offset=10.0)
    torch.testing.assert_close(exact_four, exact, atol=1e-12, rtol=0)
    assert float(four.var(dim=0).sum()) < 0.2 * float(one.var(dim=0).sum()) / 4


def _lift(canon: GroupConv) -> LiftingConv2d:
    return next(m for m in canon.modules() if isinstance(m, LiftingConv2d))


def test_the_canonicalizer_network_and_predictor_gradients_are_unbiased():
    """Through a real GroupConv: the mean over 600 seeds of the parameter gradients of ``c · out`` is within ``Z``
    standard errors of the gradients of ``c · expected``."""
    torch.manual_seed(0)
    model = _model(ec.C(4), samples=2, temperature=0.2)
    x, c = _images(9, batch=2), torch.randn(CLASSES, generator=_seeded(1), dtype=torch.float64)
    params = [_lift(model.canonicalizer).weight, *model.predictor.parameters()]

    def grads(f) -> torch.Tensor:
        model.zero_grad()
        (f(x) * c).sum().backward()
        return torch.cat([p.grad.flatten() for p in params])

    exact = grads(model.expected)
    draws = torch.stack([grads(lambda v, s=s: model(v, generator=_seeded(s))) for s in range(600)])
    se = draws.var(dim=0).div(len(draws)).sqrt()
    assert ((draws.mean(dim=0) - exact).abs() <= Z * se + 1e-12).all()
    lift = _lift(model.canonicalizer).weight.numel()
    assert float(exact[:lift].abs().max()) > 1.5 * float(Z * se[:lift].max())  # would catch a missing surrogate


def test_the_forward_value_is_the_plain_mean_and_the_surrogate_adds_nothing():
    torch.manual_seed(0)
    model = _model(ec.C(4), samples=4)
    x = _images(14)
    out = model(x, generator=_seeded(0))
    with torch.no_grad():
        plain = model(x, generator=_seeded(0))
    assert out.requires_grad and torch.equal(out.detach(), plain)


# --- training, inputs --------------------------------------------------------------------------------------------


def test_it_trains_with_the_library_step_and_fit():
    """A Symmetrized is a Canonicalized: training.step runs it with the task loss and the prior, and the task
    loss reaches the canonicalizer's network through the score-function surrogate."""
    torch.manual_seed(0)
    model = ec.Symmetrized(_classifier(), _canonicalizer(ec.C(4)), samples=3, generator=_seeded(0))
    x, y = torch.randn(4, 3, 14, 14), torch.randint(0, CLASSES, (4,))
    out = step(model, (x, y), task_loss="cross_entropy", generator=_seeded(0))
    assert set(out.terms) == {"task"}
    out.loss.backward()
    grad = _lift(model.canonicalizer).weight.grad
    assert grad is not None and bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0
    out = step(model, (x, y), prior_weight=0.1, generator=_seeded(1))
    assert set(out.terms) == {"task", "prior"}
    logs = fit(model, (x, y), steps=2, batch_size=4, prior_weight=0.1)
    assert len(logs) == 2 and all(math.isfinite(log["loss"]) for log in logs)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_the_callers_tensors_are_not_modified(mode):
    torch.manual_seed(0)
    model = getattr(_model(ec.D(4), "image", samples=3), mode)()
    x, logits = _images(15), torch.randn(2, 8, dtype=torch.float64)
    before, logits_before = x.clone(), logits.clone()
    model(x)
    model.expected(x)
    model.sample_poses(logits)
    model.log_probabilities(logits)
    assert torch.equal(x, before) and torch.equal(logits, logits_before)


def test_unrefined_continuous_poses_are_refused():
    for group in (ec.SO2(), ec.O2()):
        with pytest.raises(ConfigError, match=r"does not sample poses.*refine.*Canonicalized"):
            ec.Symmetrized(_classifier(), GroupConv(group, 3, hidden=4, refine=False), samples=2)


BAD_OPTIONS = [("samples", v) for v in (0, -1, 1.5, True, None)] + [
    ("temperature", v) for v in (0, 0.0, -1.0, -math.inf, math.nan, "1", True)] + [
    ("elements_per_call", 0), ("elements_per_call", 1.5), ("generator", 0)]


@pytest.mark.parametrize(("name", "value"), BAD_OPTIONS)
def test_bad_options_are_refused_by_name(name, value):
    options = {"samples": 2, name: value}
    with pytest.raises(ConfigError, match=name):
        ec.Symmetrized(_classifier(), _canonicalizer(ec.C(4)), **options)


@pytest.mark.parametrize("samples", [1, 2])
def test_a_canonicalizer_without_logits_is_refused_in_the_call(samples):
    model = ec.Symmetrized(_classifier(), _FreeLogits(None), samples=samples)
    with pytest.raises(ConfigError, match="no logits"):
        model(torch.randn(2, 3, 14, 14))


def test_integer_predictions_cannot_be_averaged_but_one_draw_comes_back():
    group = ec.C(4)

    class Labels(nn.Conv2d):  # integer labels (B, H, W): the argmax of per-pixel scores
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x).argmax(dim=1)

    def model(samples: int) -> ec.Symmetrized:
        return ec.Symmetrized(Labels(3, 2, 3, padding=1), _canonicalizer(group), output=ec.actions.Mask(group),
                              samples=samples)

    x = torch.randn(2, 3, 9, 9)
    with pytest.raises(DTypeError, match=r"floating.*samples=1"):
        model(2)(x)
    labels = model(1)(x)
    assert labels.shape == (2, 9, 9) and labels.dtype == torch.int64
