"""Keyword arguments of a wrapper's call reach its predictor.

``Canonicalized``, ``WeightedCanonicalized``, ``Symmetrized`` (``forward`` and ``expected``), ``GroupAveraged`` and
``FrameAveraged`` pass ``**kwargs`` to the predictor ``p``:

- a tensor with one row per input (first dimension ``B``) is per input: where ``p`` runs on ``k`` copies of the
  batch (element-major, rows ``j·B … (j+1)·B − 1`` are copy ``j``) it gets ``value.repeat(k, 1, …)``, so
  ``f(x, offset=o) = f(x) + o`` for a predictor that adds ``o``;
- anything else (numbers, strings, tensors of another leading size) is passed as it is:
  ``f(x, scale=s) = s · f(x)`` for a predictor that multiplies by ``s``, ``f(x, bias=b) = f(x) + b`` for ``b (K,)``;
- a keyword named in ``keyword_actions={name: action}`` lives on the input grid and moves with ``x``: the copy made
  with pose ``g`` gets ``action(g⁻¹, value)``. So ``Canonicalized(x, mask=m) = p(h⁻¹·x, mask=h⁻¹·m)``,
  ``GroupAveraged(x, mask=m) = (1/4) Σ_j p(rot90(x, −j), mask=rot90(m, −j))``, and every wrapper is invariant when
  ``x`` and ``m`` turn together: ``f(g·x, mask=g·m) = f(x, mask=m)`` (undeclared, the mask does not turn with
  the copies and the invariance is lost);
- a declared keyword that a call does not pass is fine; a declared action that is not an ``Action`` is a
  ``ConfigError`` at construction; a predictor that does not take a keyword still raises its ``TypeError``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import equicanon as ec
from equicanon.adapt import pca_frames
from equicanon.canonicalizers import Canonicalization, GroupConv
from equicanon.errors import ConfigError

G = ec.C(4)
SIZES = [9, 10]  # odd and even
CLASSES = 5
BATCH = 3  # not CLASSES: a (CLASSES,) tensor is not per input
KINDS = ["canonicalized", "weighted", "symmetrized", "expected", "averaged", "frames"]
IMAGE_KINDS = [k for k in KINDS if k != "frames"]
#: how many copies of the batch each kind runs its predictor on
COPIES = {"canonicalized": 1, "weighted": 2, "symmetrized": 3, "expected": 4, "averaged": 4, "frames": 4}
ATOL = 1e-10


def _turn(x: torch.Tensor, k: int) -> torch.Tensor:
    """``k`` quarter turns of the last two axes: the action of element ``k`` of C(4) on images."""
    return torch.rot90(x, k, dims=(-2, -1))


def _images(size: int, batch: int = BATCH, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 1, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _mask(size: int, batch: int = BATCH, seed: int = 1) -> torch.Tensor:
    """A random 0/1 validity mask ``(B, 1, H, W)`` in float64."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 1, size, size, generator=gen) > 0.3).to(torch.float64)


def _points(batch: int = BATCH, n: int = 12, seed: int = 0) -> torch.Tensor:
    """Point clouds ``(B, N, 3)`` with well separated principal variances (stable PCA frames)."""
    scale = torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)
    return torch.randn(batch, n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


def _rotations(batch: int = BATCH, seed: int = 1) -> torch.Tensor:
    return ec.SO3().sample(batch, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _close(actual: torch.Tensor, expected: torch.Tensor, atol: float = ATOL) -> None:
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


def _seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class MaskedNet(nn.Module):
    """Logits ``(B, 5)`` of ``x · mask`` from a random convolution and a position-weighted pool (not invariant),
    times ``scale``, plus ``offset (B, 1)`` and ``bias (5,)`` where given."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4, CLASSES)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, scale: float = 1.0,
                offset: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> torch.Tensor:
        y = x if mask is None else x * mask
        f = torch.tanh(self.conv(y))
        h, w = x.shape[-2:]
        ramp = torch.linspace(0.5, 1.5, h, dtype=x.dtype)[:, None] * torch.linspace(1.0, 2.0, w, dtype=x.dtype)
        out = scale * self.head((f * ramp).mean(dim=(2, 3)))
        if offset is not None:
            out = out + offset
        if bias is not None:
            out = out + bias
        return out


class PointNet(nn.Module):
    """An energy ``(B, 5)`` of a point cloud from an MLP on raw coordinates (not invariant): per-point
    ``weights (B, N, 1)``, per-point ``velocities (B, N, 3)``, ``scale``, ``offset (B, 1)``, ``bias (5,)``."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 8)
        self.embed_v = nn.Linear(3, 8)
        self.head = nn.Linear(8, CLASSES)

    def forward(self, x: torch.Tensor, weights: torch.Tensor | None = None, velocities: torch.Tensor | None = None,
                scale: float = 1.0, offset: torch.Tensor | None = None, bias: torch.Tensor | None = None
                ) -> torch.Tensor:
        h = self.embed(x) if velocities is None else self.embed(x) + self.embed_v(velocities)
        h = torch.tanh(h)
        if weights is not None:
            h = h * weights
        out = scale * self.head(h.mean(dim=1))
        if offset is not None:
            out = out + offset
        if bias is not None:
            out = out + bias
        return out


class Plain(nn.Module):
    """A predictor that takes no keyword arguments (of images or point clouds)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(1, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.flatten(1).sum(dim=-1, keepdim=True))


class Recorder(nn.Module):
    """Records the keyword arguments of every call; predicts the (invariant) sum of the input."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[dict] = []

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        self.calls.append(kwargs)
        return x.flatten(1).sum(dim=-1, keepdim=True)


def _canon() -> GroupConv:
    return GroupConv(G, in_channels=1, hidden=4, kernel_size=3)


def _wrap(kind: str, predictor: nn.Module, **kwargs) -> nn.Module:
    """A float64 wrapper in eval mode of ``kind`` (``"expected"`` is a ``Symmetrized`` too)."""
    if kind == "canonicalized":
        model = ec.Canonicalized(predictor, _canon(), **kwargs)
    elif kind == "weighted":
        model = ec.WeightedCanonicalized(predictor, _canon(), top_k=2, **kwargs)
    elif kind in ("symmetrized", "expected"):
        model = ec.Symmetrized(predictor, _canon(), samples=3, **kwargs)
    elif kind == "averaged":
        model = ec.GroupAveraged(predictor, G, **kwargs)
    else:
        model = ec.FrameAveraged(predictor, ec.SO3(), **kwargs)
    return model.double().eval()


def _call(kind: str, model: nn.Module, x: torch.Tensor, **kwargs) -> torch.Tensor:
    """``model``'s prediction with ``kwargs`` (``Symmetrized``: a seeded 3-draw estimate, or its expectation)."""
    with torch.no_grad():
        if kind == "symmetrized":
            return model(x, generator=_seeded(), **kwargs)
        if kind == "expected":
            return model.expected(x, **kwargs)
        return model(x, **kwargs)


def _predictor(kind: str) -> nn.Module:
    return PointNet() if kind == "frames" else MaskedNet()


def _input(kind: str) -> torch.Tensor:
    return _points() if kind == "frames" else _images(9)


# --- the known bug: Canonicalized(model, canon)(x, mask=m) -----------------------------------------------------------


def test_canonicalized_passes_a_keyword_argument_to_the_predictor():
    """Was a TypeError ("unexpected keyword argument 'mask'"); undeclared, the mask reaches ``p`` as it is."""
    torch.manual_seed(0)
    net = MaskedNet().double()
    model = ec.Canonicalized(net, _canon()).double().eval()
    x, m = _images(9), _mask(9)
    with torch.no_grad():
        out, res = model(x, mask=m, return_canonicalization=True)
        assert isinstance(res, Canonicalization)
        _close(out, net(res.canonical, mask=m), atol=1e-12)
        assert float((out - model(x)).abs().max()) > 1e-3  # the mask changed the prediction


@pytest.mark.parametrize("action", [ec.actions.Image(G), ec.actions.Mask(G)], ids=repr)
@pytest.mark.parametrize("size", SIZES)
def test_canonicalized_moves_a_declared_mask_with_the_input(size, action):
    """``f(x, mask=m) = p(h⁻¹·x, mask=h⁻¹·m)`` with ``h = res.pose``."""
    torch.manual_seed(0)
    net = MaskedNet().double()
    model = ec.Canonicalized(net, _canon(), keyword_actions={"mask": action}).double().eval()
    x, m = _images(size, batch=4), _mask(size, batch=4)
    with torch.no_grad():
        out, res = model(x, mask=m, return_canonicalization=True)
        assert bool((res.pose != 0).any())  # some mask is turned: moving it is not the identity
        moved_mask = action(G.inverse(res.pose), m)
        _close(out, net(res.canonical, mask=moved_mask), atol=1e-12)
        assert float((out - net(res.canonical, mask=m)).abs().max()) > 1e-3  # not the mask as given


# --- declared keyword arguments: written out and invariant ------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_group_averaged_turns_a_declared_mask_with_each_copy(size):
    torch.manual_seed(0)
    net = MaskedNet().double()
    model = ec.GroupAveraged(net, G, keyword_actions={"mask": ec.actions.Image(G)})
    x, m = _images(size), _mask(size)
    with torch.no_grad():
        expected = sum(net(_turn(x, -j), mask=_turn(m, -j)) for j in range(4)) / 4
        _close(model(x, mask=m), expected, atol=1e-12)


def test_weighted_canonicalized_moves_a_declared_mask_with_each_pose():
    torch.manual_seed(0)
    net = MaskedNet().double()
    image = ec.actions.Image(G)
    model = ec.WeightedCanonicalized(net, _canon(), top_k=2, keyword_actions={"mask": image}).double().eval()
    x, m = _images(10, batch=4), _mask(10, batch=4)
    with torch.no_grad():
        poses, weights = model.weighted_poses(x)
        expected = sum(weights[:, j, None] * net(image(G.inverse(poses[:, j]), x), mask=image(G.inverse(poses[:, j]), m))
                       for j in range(2))
        _close(model(x, mask=m), expected, atol=1e-12)
    assert float(weights[:, 1].max()) > 0  # the second pose counts for some input


def test_symmetrized_moves_a_declared_mask_with_each_draw():
    torch.manual_seed(0)
    net = MaskedNet().double()
    image = ec.actions.Image(G)
    model = ec.Symmetrized(net, _canon(), samples=3, keyword_actions={"mask": image}).double().eval()
    x, m = _images(9), _mask(9)
    with torch.no_grad():
        logits = model.canonicalizer(x).logits
        poses = model.sample_poses(logits, _seeded(5))  # (B, 3): the draws forward makes with the same seed
        draws = [net(image(G.inverse(poses[:, j]), x), mask=image(G.inverse(poses[:, j]), m)) for j in range(3)]
        _close(model(x, mask=m, generator=_seeded(5)), sum(draws) / 3, atol=1e-12)
        p = torch.softmax(logits, dim=-1)
        expected = sum(p[:, h, None] * net(_turn(x, -h), mask=_turn(m, -h)) for h in range(4))
        _close(model.expected(x, mask=m), expected, atol=1e-12)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", ["canonicalized", "weighted", "expected", "averaged"])
def test_a_declared_mask_keeps_the_wrapper_invariant(kind, size):
    """``f(g·x, mask=g·m) = f(x, mask=m)``; undeclared, the mask stays put while the copies turn."""
    torch.manual_seed(0)
    net = MaskedNet()
    declared = _wrap(kind, net, keyword_actions={"mask": ec.actions.Image(G)})
    undeclared = _wrap(kind, net)
    x, m = _images(size), _mask(size)
    base = _call(kind, declared, x, mask=m)
    for k in (1, 2, 3):
        _close(_call(kind, declared, _turn(x, k), mask=_turn(m, k)), base)
    worst = max(float((_call(kind, undeclared, _turn(x, k), mask=_turn(m, k)) - _call(kind, undeclared, x, mask=m))
                      .abs().max()) for k in (1, 2, 3))
    assert worst > 1e-3


def test_frame_averaged_passes_and_moves_point_keywords():
    """Undeclared per-point weights are repeated for each frame; declared velocities turn with the points."""
    torch.manual_seed(0)
    net = PointNet().double()
    x, r = _points(), _rotations()
    w = torch.rand(BATCH, 12, 1, generator=_seeded(2), dtype=torch.float64)
    v = torch.randn(BATCH, 12, 3, generator=_seeded(3), dtype=torch.float64)
    frames = pca_frames(x, ec.SO3())  # (B, 4, 3, 3); F⁻¹·p = Fᵀ p, rows: x @ F
    plain = ec.FrameAveraged(net, ec.SO3())
    declared = ec.FrameAveraged(net, ec.SO3(), keyword_actions={"velocities": ec.actions.Vectors(ec.SO3())})
    with torch.no_grad():
        _close(plain(x, weights=w), sum(net(x @ frames[:, j], weights=w) for j in range(4)) / 4, atol=1e-12)
        _close(declared(x, velocities=v),
               sum(net(x @ frames[:, j], velocities=v @ frames[:, j]) for j in range(4)) / 4, atol=1e-12)
        _close(plain(x @ r.mT, weights=w), plain(x, weights=w), atol=1e-9)  # weights are invariant per point
        _close(declared(x @ r.mT, velocities=v @ r.mT), declared(x, velocities=v), atol=1e-9)
        assert float((plain(x @ r.mT, velocities=v @ r.mT) - plain(x, velocities=v)).abs().max()) > 1e-3


# --- what is repeated and what is passed as it is --------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_per_input_tensors_are_repeated_for_the_copies_and_other_values_passed_as_they_are(kind):
    recorder = Recorder()
    model = _wrap(kind, recorder)
    x = _input(kind)
    weight = torch.arange(1.0, BATCH + 1, dtype=torch.float64)[:, None]  # (B, 1): per input
    bias = torch.arange(CLASSES, dtype=torch.float64)  # (5,): not per input
    out = _call(kind, model, x, weight=weight, bias=bias, scale=2.0, tag="a")
    assert out.shape == (BATCH, 1)
    assert len(recorder.calls) == 1  # one predictor call on all copies
    got = recorder.calls[0]
    assert set(got) == {"weight", "bias", "scale", "tag"}  # generator, return_canonicalization are the wrapper's
    k = COPIES[kind]
    assert got["weight"].shape == (k * BATCH, 1)
    assert torch.equal(got["weight"], weight.repeat(k, 1))  # element-major: rows j·B … (j+1)·B − 1 are copy j
    assert torch.equal(got["bias"], bias)
    assert got["scale"] == 2.0 and got["tag"] == "a"


@pytest.mark.parametrize("kind", KINDS)
def test_a_per_input_offset_follows_its_input(kind):
    """``f(x, offset=o) = f(x) + o``: each copy of input ``b`` gets ``o[b]`` (weights sum to 1)."""
    torch.manual_seed(0)
    model = _wrap(kind, _predictor(kind))
    x = _input(kind)
    offset = torch.tensor([[10.0], [-20.0], [30.0]], dtype=torch.float64)
    _close(_call(kind, model, x, offset=offset), _call(kind, model, x) + offset, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_a_tensor_of_another_leading_size_is_passed_as_it_is(kind):
    torch.manual_seed(0)
    model = _wrap(kind, _predictor(kind))
    x = _input(kind)
    bias = torch.linspace(-2.0, 2.0, CLASSES, dtype=torch.float64)  # (5,), and B = 3
    _close(_call(kind, model, x, bias=bias), _call(kind, model, x) + bias, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_a_number_reaches_the_predictor_unchanged(kind):
    torch.manual_seed(0)
    model = _wrap(kind, _predictor(kind))
    x = _input(kind)
    _close(_call(kind, model, x, scale=2.0), 2 * _call(kind, model, x), atol=1e-12)


# --- keyword_actions: optional keywords, bad actions, predictors without keywords ------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_declared_keyword_that_a_call_does_not_pass_is_fine(kind):
    torch.manual_seed(0)
    net = _predictor(kind)
    action = ec.actions.Vectors(ec.SO3()) if kind == "frames" else ec.actions.Image(G)
    name = "velocities" if kind == "frames" else "mask"
    torch.manual_seed(1)
    declared = _wrap(kind, net, keyword_actions={name: action})
    torch.manual_seed(1)  # the same canonicalizer weights
    plain = _wrap(kind, net)
    x = _input(kind)
    _close(_call(kind, declared, x), _call(kind, plain, x), atol=0.0)


@pytest.mark.parametrize("bad", ["image", ec.actions.Image], ids=["str", "class"])
@pytest.mark.parametrize("kind", ["canonicalized", "weighted", "symmetrized", "averaged", "frames"])
def test_a_keyword_action_that_is_not_an_action_is_a_config_error(kind, bad):
    torch.manual_seed(0)
    with pytest.raises(ConfigError):
        _wrap(kind, _predictor(kind), keyword_actions={"mask": bad})


@pytest.mark.parametrize("kind", KINDS)
def test_a_predictor_without_the_keyword_still_raises_type_error(kind):
    torch.manual_seed(0)
    model = _wrap(kind, Plain())
    with pytest.raises(TypeError):
        _call(kind, model, _input(kind), colour=1)


def test_a_declared_keyword_that_is_not_a_per_input_tensor_is_a_shape_error() -> None:
    """A keyword argument declared in ``keyword_actions`` moves with ``x``, so it needs one row per input."""
    class Net(torch.nn.Module):
        def forward(self, x: torch.Tensor, mask: object = None) -> torch.Tensor:
            return x.flatten(1).sum(-1, keepdim=True)

    canon = ec.canonicalizers.GroupConv(ec.C(4), in_channels=1).eval()
    model = ec.Canonicalized(Net(), canon, keyword_actions={"mask": ec.actions.Image(ec.C(4))})
    x = torch.rand(3, 1, 9, 9)
    with pytest.raises(ec.errors.ShapeError, match="mask"):
        model(x, mask=torch.ones(5, 1, 9, 9))
    with pytest.raises(ec.errors.ShapeError, match="mask"):
        model(x, mask=1.0)


def test_a_keyword_action_of_another_group_is_a_group_mismatch() -> None:
    canon = ec.canonicalizers.GroupConv(ec.C(4), in_channels=1)
    with pytest.raises(ec.errors.GroupMismatchError, match="keyword 'mask'"):
        ec.Canonicalized(nn.Identity(), canon, keyword_actions={"mask": ec.actions.Image(ec.C(8))})
    with pytest.raises(ec.errors.GroupMismatchError, match="keyword 'mask'"):
        ec.GroupAveraged(nn.Identity(), ec.C(4), keyword_actions={"mask": ec.actions.Image(ec.D(4))})
