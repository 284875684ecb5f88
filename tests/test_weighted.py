"""``WeightedCanonicalized``: the weighted mean of ``g_j ⋆ p(g_j⁻¹·x)`` over the ``k`` poses of largest logit.

Equivariant like ``Canonicalized`` (on C(8), on its quarter turns: the other elements interpolate);
``k = 1`` is ``Canonicalized`` and uniform ``k = |G|`` is ``GroupAveraged``; continuous at the near-ties
where the hard argmax pose jumps.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import equicanon as ec
from equicanon.adapt import top_k_weights
from equicanon.canonicalizers import Canonicalization, Canonicalizer, GroupConv
from equicanon.errors import ConfigError, DTypeError
from equicanon.nn import LiftingConv2d
from equicanon.testing import assert_equivariant, equivariance_error
from equicanon.training import step

GROUPS = [ec.C(4), ec.D(4), ec.C(8)]
SIZES = [14, 15]  # even and odd
CLASSES = 5


def _classifier() -> nn.Module:
    """A plain CNN (random filters, no batch norm); not rotation invariant."""
    return ec.models.SmallCNN(classes=CLASSES, in_channels=3, width=8, batch_norm=False)


def _segmenter() -> nn.Module:
    """Per-pixel scores ``(B, 3, H, W)``: two random convolutions, not rotation equivariant."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))


class _Argmax(nn.Module):
    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        return scores.argmax(dim=1)


def _labeller() -> nn.Module:
    """Integer labels ``(B, H, W)``: the argmax of a segmenter."""
    return nn.Sequential(_segmenter(), _Argmax())


def _canonicalizer(group: ec.groups.Group) -> GroupConv:
    return GroupConv(group, 3, hidden=4, kernel_size=3)


def _images(size: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _exact_elements(group: ec.groups.Group) -> torch.Tensor | None:
    """The testing elements whose image action is an exact index move: all of C(4)/D(4), C(8)'s quarter turns."""
    return torch.tensor([0, 2, 4, 6]) if group == ec.C(8) else None


# --- equivariance -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("output", ["trivial", "image"])
@pytest.mark.parametrize("k", ["2", "|G|"])
@pytest.mark.parametrize("group", GROUPS, ids=repr)
def test_weighted_canonicalized_is_equivariant(group, k, output, size, dtype):
    torch.manual_seed(0)
    image = ec.actions.Image(group)
    top_k = 2 if k == "2" else group.order
    predictor = _classifier() if output == "trivial" else _segmenter()
    out_action = ec.actions.Trivial() if output == "trivial" else image
    model = ec.WeightedCanonicalized(predictor, _canonicalizer(group), output=out_action, top_k=top_k).eval()
    x = _images(size).to(dtype)
    if dtype == torch.float64:  # the predictor alone is not equivariant
        assert equivariance_error(predictor, group, image, out_action, x).max_error > 1e-3
    report = assert_equivariant(model, group, image, out_action, x, dtype=dtype, elements=_exact_elements(group))
    assert len(report.errors) >= 4


def test_weighted_canonicalized_with_a_contrastive_canonicalizer_is_invariant():
    torch.manual_seed(0)
    group = ec.C(4)
    canon = ec.canonicalizers.Contrastive(group, ec.models.ConvEncoder(3), embed_dim=16)
    model = ec.WeightedCanonicalized(_classifier(), canon, top_k=3).eval()
    assert_equivariant(model, group, ec.actions.Image(group), ec.actions.Trivial(), _images(15))


# --- the two ends: k = 1 and uniform k = |G| ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("output", ["trivial", "image", "mask"])
@pytest.mark.parametrize("group", [ec.C(4), ec.D(4)], ids=repr)
def test_top_1_is_canonicalized(group, output, mode):
    torch.manual_seed(0)
    predictor = {"trivial": _classifier, "image": _segmenter}.get(output, lambda: _labeller())()
    out_action = {"trivial": ec.actions.Trivial(), "image": ec.actions.Image(group), "mask": ec.actions.Mask(group)}[output]
    canon = GroupConv(group, 3, hidden=4, kernel_size=3, gumbel=True).double()  # noise in training mode too
    hard = getattr(ec.Canonicalized(predictor, canon, output=out_action).double(), mode)()
    weighted = getattr(ec.WeightedCanonicalized(predictor, canon, output=out_action, top_k=1).double(), mode)()
    x = _images(15, batch=4)
    x[1] = torch.rot90(x[0], 1, dims=(-2, -1))
    torch.manual_seed(1)
    expected, res = hard(x, return_canonicalization=True)
    torch.manual_seed(1)
    got, wres = weighted(x, return_canonicalization=True)
    assert torch.equal(got, expected)
    assert isinstance(wres, Canonicalization)
    assert torch.equal(wres.pose, res.pose) and torch.equal(wres.canonical, res.canonical)


def test_top_1_breaks_ties_as_canonicalized():
    """A blank image ties every logit (no biases: all are 0): both pick the first element, index 0."""
    torch.manual_seed(0)
    canon = _canonicalizer(ec.C(4)).double().eval()
    predictor = _segmenter().double()
    x = torch.zeros(2, 3, 15, 15, dtype=torch.float64)
    x[1] = torch.randn(3, 15, 15, dtype=torch.float64)
    with torch.no_grad():
        res = canon(x)
        assert float(res.margin[0]) == 0.0 and int(res.pose[0]) == 0
        for top_k in (1, 2):
            poses, _ = ec.WeightedCanonicalized(predictor, canon, top_k=top_k).top_poses(res.logits)
            assert torch.equal(poses[:, 0], res.pose)
        image = ec.actions.Image(ec.C(4))
        hard = ec.Canonicalized(predictor, canon, output=image)
        weighted = ec.WeightedCanonicalized(predictor, canon, output=image, top_k=1)
        assert torch.equal(weighted(x), hard(x))


@pytest.mark.parametrize("elements_per_call", [None, 1, 3])
@pytest.mark.parametrize("output", ["trivial", "image"])
@pytest.mark.parametrize("group", [ec.C(4), ec.D(4)], ids=repr)
def test_uniform_top_all_is_group_averaged(group, output, elements_per_call):
    torch.manual_seed(0)
    predictor = (_classifier() if output == "trivial" else _segmenter()).double()
    out_action = ec.actions.Trivial() if output == "trivial" else ec.actions.Image(group)
    canon = _canonicalizer(group).double().eval()
    weighted = ec.WeightedCanonicalized(predictor, canon, output=out_action, top_k=group.order, temperature=math.inf,
                                        elements_per_call=elements_per_call)
    averaged = ec.GroupAveraged(predictor, group, output=out_action)
    x = _images(15, batch=3)
    with torch.no_grad():
        torch.testing.assert_close(weighted(x), averaged(x), atol=1e-12, rtol=0)


@pytest.mark.parametrize("elements_per_call", [1, 2, 3])
def test_chunking_does_not_change_the_prediction(elements_per_call):
    torch.manual_seed(0)
    group = ec.D(4)
    predictor, canon = _segmenter().double(), _canonicalizer(group).double().eval()
    image = ec.actions.Image(group)
    x = _images(15, batch=3)
    with torch.no_grad():
        whole = ec.WeightedCanonicalized(predictor, canon, output=image, top_k=5)(x)
        chunked = ec.WeightedCanonicalized(predictor, canon, output=image, top_k=5, elements_per_call=elements_per_call)
        torch.testing.assert_close(chunked(x), whole, atol=1e-12, rtol=0)


class _Counting(nn.Module):
    """A predictor that records the batch size of each call."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _classifier()
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(x.shape[0])
        return self.net(x)


@pytest.mark.parametrize(("elements_per_call", "sizes"), [(None, [12]), (2, [6, 6]), (3, [9, 3])])
def test_the_k_passes_go_as_one_batch_or_in_chunks(elements_per_call, sizes):
    torch.manual_seed(0)
    predictor = _Counting()
    model = ec.WeightedCanonicalized(predictor, _canonicalizer(ec.C(4)), top_k=4, elements_per_call=elements_per_call)
    model(torch.randn(3, 3, 14, 14))
    assert predictor.sizes == sizes


def test_the_prediction_is_the_weighted_sum_written_out():
    """``Σ_j w_j · rot90^{g_j} p(rot90^{-g_j} x)`` for C(4), with the weights of ``top_k_weights``."""
    torch.manual_seed(0)
    group = ec.C(4)
    predictor, canon = _segmenter().double(), _canonicalizer(group).double().eval()
    model = ec.WeightedCanonicalized(predictor, canon, output=ec.actions.Image(group), top_k=3, temperature=0.5)
    x = _images(13, batch=2)
    with torch.no_grad():
        logits = canon(x).logits
        poses, weights = top_k_weights(logits, 3, 0.5)
        expected = torch.stack([
            sum(weights[b, j] * torch.rot90(predictor(torch.rot90(x[b:b + 1], -int(poses[b, j]), dims=(-2, -1))),
                                            int(poses[b, j]), dims=(-2, -1))[0] for j in range(3))
            for b in range(2)])
        torch.testing.assert_close(model(x), expected, atol=1e-12, rtol=0)


# --- the weights --------------------------------------------------------------------------------------------------


def test_weights_are_the_gap_weighted_softmax_over_the_top_k():
    logits = torch.tensor([[0.3, 2.0, -1.0, 1.0, 0.5]], dtype=torch.float64)
    poses, weights = top_k_weights(logits, 3, temperature=2.0)
    assert poses.tolist() == [[1, 3, 4]]
    top, t = logits[0, [1, 3, 4]], 0.3  # ℓ_(4) = 0.3 is the first left out
    raw = torch.softmax(top / 2.0, dim=0) * (top - t)
    torch.testing.assert_close(weights[0], raw / raw.sum(), atol=1e-15, rtol=0)
    _, all_weights = top_k_weights(logits, 5, temperature=2.0)  # k = |G|: plain softmax
    torch.testing.assert_close(all_weights, torch.softmax(logits[:, [1, 3, 4, 0, 2]] / 2.0, dim=1), atol=1e-15, rtol=0)
    _, uniform = top_k_weights(logits, 5, temperature=math.inf)
    assert torch.equal(uniform, torch.full((1, 5), 0.2, dtype=torch.float64))


def test_an_element_leaving_the_top_k_has_weight_going_to_zero_linearly():
    for gap in (1e-2, 1e-4, 1e-6):
        logits = torch.tensor([[1.0, 0.5 + gap, 0.5, 0.0]], dtype=torch.float64)
        _, weights = top_k_weights(logits, 2)
        assert 0 < float(weights[0, 1]) <= 2 * gap  # w ≈ gap · e^{-0.5} / 0.5
    _, weights = top_k_weights(torch.tensor([[1.0, 0.5, 0.5, 0.0]], dtype=torch.float64), 2)
    assert weights[0].tolist() == [1.0, 0.0]


def test_when_k_plus_one_logits_tie_for_the_top_the_weights_are_uniform_on_the_first_k():
    logits = torch.tensor([[1.0, 1.0, 1.0, 0.0]], requires_grad=True)
    poses, weights = top_k_weights(logits, 2)
    assert poses.tolist() == [[0, 1]] and weights.tolist() == [[0.5, 0.5]]
    weights.sum().backward()
    assert logits.grad is not None and bool(torch.isfinite(logits.grad).all())


def test_weights_are_permuted_with_the_logits():
    """Regular logits permute under the group, and the weights follow: ``w_{gh}(g·x) = w_h(x)``."""
    logits = torch.randn(6, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(1))
    poses, weights = top_k_weights(logits, 3)
    moved_poses, moved_weights = top_k_weights(logits[:, perm.argsort()], 3)  # entry perm[h] of moved is ℓ[h]
    assert torch.equal(moved_poses, perm[poses]) and torch.equal(moved_weights, weights)


# --- continuity at near-ties --------------------------------------------------------------------------------------

EPS = 1e-3
#: stated bound: |f(x0 + δ) − f(x0 − δ)|∞ ≤ LIPSCHITZ · |2δ|∞ for the weighted models at a near-tie x0 (the five
#: seeds below measure at most 0.05, 20x below it); the hard model jumps by 0.009 to 0.032 whatever the step,
#: 4-16x the bound's allowance at |δ|∞ = 1e-3 and 45-160x at 1e-4
LIPSCHITZ = 1.0


def _near_tie(canon: GroupConv, x: torch.Tensor, y: torch.Tensor, same) -> torch.Tensor:
    """A point on the segment from ``x`` to ``y`` where ``same(result)`` switches, found by bisection."""
    lo, hi = 0.0, 1.0
    ref = canon(x)
    assert not same(ref, canon(y))
    for _ in range(60):
        mid = (lo + hi) / 2
        if same(ref, canon((1 - mid) * x + mid * y)):
            lo = mid
        else:
            hi = mid
    return (1 - (lo + hi) / 2) * x + (lo + hi) / 2 * y


def _models(seed: int) -> tuple[GroupConv, ec.Canonicalized, ec.WeightedCanonicalized, ec.WeightedCanonicalized]:
    torch.manual_seed(seed)
    canon = _canonicalizer(ec.C(4)).double().eval()
    predictor = _classifier().double()
    return (canon, ec.Canonicalized(predictor, canon).eval(), ec.WeightedCanonicalized(predictor, canon, top_k=2).eval(),
            ec.WeightedCanonicalized(predictor, canon, top_k=4).eval())


def _change(f, x0: torch.Tensor, delta: torch.Tensor) -> float:
    return float((f(x0 + delta) - f(x0 - delta)).abs().max())


@pytest.mark.parametrize("seed", range(5))
def test_weighted_is_continuous_where_the_hard_pose_jumps(seed):
    """At an image whose two best logits tie (on the way from x to its quarter turn), a step of 1e-3 either way
    flips the hard pose, and the hard prediction jumps; the weighted ones move in proportion to the step."""
    canon, hard, top2, top4 = _models(seed)
    x = _images(15, batch=1, seed=seed)
    y = torch.rot90(x, 1, dims=(-2, -1))
    with torch.no_grad():
        x0 = _near_tie(canon, x, y, lambda a, b: torch.equal(a.pose, b.pose))
        assert float(canon(x0).margin[0]) < 1e-9  # a tie of the two best logits
        direction = (y - x) / (y - x).abs().max()
        for eps in (EPS, EPS / 10):
            delta = eps * direction
            assert not torch.equal(canon(x0 + delta).pose, canon(x0 - delta).pose)
            jump = _change(hard, x0, delta)
            for model in (top2, top4):
                change = _change(model, x0, delta)
                assert change <= LIPSCHITZ * 2 * eps, (eps, change)
                assert jump >= 50 * change, (eps, jump, change)
            assert jump >= 2 * LIPSCHITZ * EPS  # the hard jump does not shrink with the step
        # proportional: a step 10x smaller moves the weighted prediction about 10x less
        ratio = _change(top2, x0, EPS * direction) / _change(top2, x0, EPS / 10 * direction)
        assert 5 < ratio < 20, ratio
        gen = torch.Generator().manual_seed(100 + seed)
        for _ in range(4):  # and in random directions
            u = torch.randn(x.shape, generator=gen, dtype=torch.float64)
            assert _change(top2, x0, EPS * u / u.abs().max()) <= LIPSCHITZ * 2 * EPS


@pytest.mark.parametrize("seed", range(3))
def test_weighted_is_continuous_where_an_element_leaves_the_top_k(seed):
    """Where the second and third logits tie, the top-2 set changes; the leaving element's weight is 0 there."""
    canon, _, top2, _ = _models(seed)
    x = _images(15, batch=1, seed=seed)
    y = torch.rot90(x, 1, dims=(-2, -1))  # its top-2 set is the shifted one, never the same set in C(4)
    with torch.no_grad():
        x0 = _near_tie(canon, x, y, lambda a, b: set(a.logits.topk(2).indices[0].tolist())
                       == set(b.logits.topk(2).indices[0].tolist()))
        values = canon(x0).logits.sort(descending=True).values[0]
        assert float(values[1] - values[2]) < 1e-9
        _, weights = top2.top_poses(canon(x0).logits)
        assert float(weights[0, 1]) < 1e-8
        direction = (y - x) / (y - x).abs().max()
        before, after = (canon(x0 + s * EPS * direction).logits.topk(2).indices for s in (-1, 1))
        assert set(before[0].tolist()) != set(after[0].tolist())
        for eps in (EPS, EPS / 10):
            assert _change(top2, x0, eps * direction) <= LIPSCHITZ * 2 * eps


# --- gradients, inputs ------------------------------------------------------------------------------------------


def _lift_grad(canon: GroupConv) -> torch.Tensor | None:
    lift = next(m for m in canon.modules() if isinstance(m, LiftingConv2d))
    return lift.weight.grad


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_the_task_loss_reaches_the_canonicalizer_through_the_weights(mode):
    torch.manual_seed(0)
    canon = _canonicalizer(ec.C(4))
    model = getattr(ec.WeightedCanonicalized(_classifier(), canon, top_k=2), mode)()
    model(torch.randn(4, 3, 14, 14)).square().sum().backward()
    grad = _lift_grad(canon)
    assert grad is not None and float(grad.abs().sum()) > 0


def test_uniform_weights_pass_no_gradient_to_the_canonicalizer():
    """Contrast: with constant weights (uniform k = |G|) the output does not depend on the canonicalizer."""
    torch.manual_seed(0)
    canon = _canonicalizer(ec.C(4))
    model = ec.WeightedCanonicalized(_classifier(), canon, top_k=4, temperature=math.inf)
    model(torch.randn(4, 3, 14, 14)).square().sum().backward()
    grad = _lift_grad(canon)
    assert grad is None or float(grad.abs().sum()) == 0


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_the_callers_tensors_are_not_modified(mode):
    torch.manual_seed(0)
    model = getattr(ec.WeightedCanonicalized(_segmenter(), _canonicalizer(ec.D(4)), output=ec.actions.Image(ec.D(4)),
                                             top_k=3), mode)()
    x = torch.randn(2, 3, 15, 15)
    before = x.clone()
    logits = torch.randn(2, 8)
    logits_before = logits.clone()
    model(x)
    model.top_poses(logits)
    assert torch.equal(x, before) and torch.equal(logits, logits_before)


def test_it_trains_with_the_library_step():
    """A WeightedCanonicalized is a Canonicalized: training.step runs it with the task loss and the prior."""
    torch.manual_seed(0)
    model = ec.WeightedCanonicalized(_classifier(), _canonicalizer(ec.C(4)), top_k=2)
    x, y = torch.randn(4, 3, 14, 14), torch.randint(0, CLASSES, (4,))
    out = step(model, (x, y), prior_weight=0.1, generator=torch.Generator().manual_seed(0))
    assert set(out.terms) == {"task", "prior"}
    out.loss.backward()


# --- bad configurations --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("group", [ec.SO2(), ec.O2()], ids=repr)
def test_unrefined_continuous_poses_are_refused(group):
    with pytest.raises(ConfigError, match=r"does not rank several poses.*refine.*Canonicalized"):
        ec.WeightedCanonicalized(_classifier(), GroupConv(group, 3, hidden=4, refine=False), top_k=2)


def test_permutation_poses_are_refused():
    with pytest.raises(ConfigError, match=r"S\(n\) poses are sorting permutations.*use Canonicalized"):
        ec.WeightedCanonicalized(nn.Flatten(), ec.canonicalizers.Sort(ec.S(5), 2), top_k=2)


@pytest.mark.parametrize("top_k", [0, -1, 5, 1.5, True, None])
def test_top_k_must_be_from_1_to_the_group_order(top_k):
    with pytest.raises(ConfigError, match="top_k"):
        ec.WeightedCanonicalized(_classifier(), _canonicalizer(ec.C(4)), top_k=top_k)


@pytest.mark.parametrize("temperature", [0, 0.0, -1.0, -math.inf, math.nan, "1", True])
def test_temperature_must_be_positive(temperature):
    with pytest.raises(ConfigError, match="temperature"):
        ec.WeightedCanonicalized(_classifier(), _canonicalizer(ec.C(4)), top_k=2, temperature=temperature)


@pytest.mark.parametrize("elements_per_call", [0, -2, 1.5])
def test_elements_per_call_must_be_a_positive_integer(elements_per_call):
    with pytest.raises(ConfigError, match="elements_per_call"):
        ec.WeightedCanonicalized(_classifier(), _canonicalizer(ec.C(4)), top_k=2, elements_per_call=elements_per_call)


class _NoLogits(Canonicalizer):
    """A C(4) canonicalizer whose results carry no logits (pose: always the identity)."""

    def __init__(self) -> None:
        super().__init__()
        self.group = ec.C(4)
        self.action = ec.actions.Image(self.group)

    def forward(self, x: torch.Tensor) -> Canonicalization:
        return Canonicalization(x, self.group.identity(x.shape[0]), self.group)

    def prior_loss(self, result: Canonicalization, target: torch.Tensor | None = None) -> torch.Tensor:
        return torch.zeros(())


def test_a_canonicalizer_without_logits_is_refused_in_the_call():
    model = ec.WeightedCanonicalized(_classifier(), _NoLogits(), top_k=2)
    with pytest.raises(ConfigError, match="no logits"):
        model(torch.randn(2, 3, 14, 14))
    ec.WeightedCanonicalized(_classifier(), _NoLogits(), top_k=1)(torch.randn(2, 3, 14, 14))  # k = 1 needs none


def test_integer_predictions_cannot_be_averaged():
    group = ec.C(4)
    model = ec.WeightedCanonicalized(_labeller(), _canonicalizer(group), output=ec.actions.Mask(group), top_k=2)
    with pytest.raises(DTypeError, match="floating"):
        model(torch.randn(2, 3, 14, 14))
