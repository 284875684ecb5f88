"""Structured predictions and merge options of the wrappers.

Every wrapper (``Canonicalized``, ``WeightedCanonicalized``, ``Symmetrized``, ``GroupAveraged``,
``FrameAveraged``) takes a predictor ``p`` that returns a tensor, a tuple or list, a dict or a dataclass (nested
too) and returns the same structure, tensor by tensor:

- ``GroupAveraged``: ``f(x)[key] = (1/|G|) Σ_g g ⋆_key p(g⁻¹·x)[key]``, ``⋆_key`` the key's output action
  (``output={key: action}``, ``output=(action, ...)`` by position, or one action for every tensor);
- ``Canonicalized``: ``f(x)[key] = h(x) ⋆_key p(h(x)⁻¹·x)[key]``;
- ``WeightedCanonicalized``: ``f(x)[key] = Σ_j w_j(x) · g_j ⋆_key p(g_j⁻¹·x)[key]``;
- ``Symmetrized``: the dict's ``"logits"`` is what the logits-only predictor gives for the same draws;
- ``FrameAveraged``: ``f(x)[key] = mean_F F ⋆_key p(F⁻¹·x)[key]`` over the PCA frames ``F``.

So with ``Trivial`` on ``"logits"`` and ``Image(C(4))`` on ``"mask"``: ``f(g·x)["logits"] = f(x)["logits"]`` and
``f(g·x)["mask"] = g·f(x)["mask"]`` (checked with ``torch.rot90`` on odd and even sizes, in float64); with
``Vectors(SO3())`` on ``"forces"``: ``f(x Rᵀ)["forces"] = f(x)["forces"] Rᵀ``. Plain values (strings, ints) come
from the first copy; a dict of actions missing a key is a ``ConfigError`` naming it; a set is a ``DTypeError``.

Merges (``GroupAveraged`` / ``FrameAveraged``, every floating tensor after mapping back), over the copies
``y_g = g ⋆ p(g⁻¹·x)``: ``"mean"``: ``mean_g y_g``; ``"softmax"``: ``mean_g softmax(y_g)``; ``"geometric"``:
``softmax(mean_g log_softmax(y_g))``; ``"max"``: ``max_g y_g`` (softmax over the last axis). Each equals its hand
computation over the four ``rot90`` copies, is invariant, and an unknown name is a ``ConfigError`` listing the four.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

import equicanon as ec
from equicanon.adapt import pca_frames
from equicanon.canonicalizers import Canonicalization, GroupConv
from equicanon.errors import ConfigError, DTypeError

G = ec.C(4)
SIZES = [9, 10]  # odd and even
CLASSES = 5
MERGES = ["mean", "softmax", "geometric", "max"]
IMAGE_WRAPPERS = ["canonicalized", "weighted", "symmetrized", "averaged"]
ATOL = 1e-10


def _turn(x: torch.Tensor, k: int) -> torch.Tensor:
    """``k`` quarter turns of the last two axes: the action of element ``k`` of C(4) on images."""
    return torch.rot90(x, k, dims=(-2, -1))


def _images(size: int, batch: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 1, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _close(actual: torch.Tensor, expected: torch.Tensor, atol: float = ATOL) -> None:
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


class DictNet(nn.Module):
    """``{"logits": (B, 5), "mask": (B, 1, H, W)}`` from random 3x3 convolutions and a position-weighted pool:
    neither invariant nor equivariant."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.dense = nn.Conv2d(4, 1, 3, padding=1)
        self.head = nn.Linear(4, CLASSES)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = torch.tanh(self.conv(x))
        h, w = x.shape[-2:]
        ramp = (torch.linspace(0.5, 1.5, h, dtype=x.dtype)[:, None] * torch.linspace(1.0, 2.0, w, dtype=x.dtype))
        return {"logits": self.head((f * ramp).mean(dim=(2, 3))), "mask": self.dense(f)}


class Reshaped(nn.Module):
    """The :class:`DictNet` prediction rebuilt by ``make`` (as a tuple, a dataclass, a nested dict, ...)."""

    def __init__(self, net: nn.Module, make) -> None:
        super().__init__()
        self.net = net
        self.make = make

    def forward(self, x: torch.Tensor):
        return self.make(self.net(x))


@dataclass
class Out:
    logits: torch.Tensor
    extra: torch.Tensor


MIXED = {"logits": ec.actions.Trivial(), "mask": ec.actions.Image(G)}


def _canon() -> GroupConv:
    return GroupConv(G, in_channels=1, hidden=4, kernel_size=3)


def _wrap(kind: str, predictor: nn.Module, output=None, canon: GroupConv | None = None) -> nn.Module:
    """A float64 wrapper in eval mode, of ``kind`` (one of ``IMAGE_WRAPPERS``), around ``predictor``."""
    canon = _canon() if canon is None else canon
    if kind == "canonicalized":
        model = ec.Canonicalized(predictor, canon, output=output)
    elif kind == "weighted":
        model = ec.WeightedCanonicalized(predictor, canon, output=output, top_k=2)
    elif kind == "symmetrized":
        model = ec.Symmetrized(predictor, canon, output=output, samples=3)
    else:
        model = ec.GroupAveraged(predictor, G, output=output)
    return model.double().eval()


def _call(kind: str, model: nn.Module, x: torch.Tensor):
    """The wrapper's prediction (``Symmetrized``: a seeded 3-draw estimate)."""
    with torch.no_grad():
        if kind == "symmetrized":
            return model(x, generator=torch.Generator().manual_seed(0))
        return model(x)


def _exact(kind: str, model: nn.Module):
    """The wrapper as an exactly equivariant function (``Symmetrized``: its expectation)."""
    return model.expected if kind == "symmetrized" else model


def _copies(net: nn.Module, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """``p(g⁻¹·x)`` for the four elements ``g`` of C(4) (``g⁻¹·x = rot90(x, -g)``)."""
    with torch.no_grad():
        return [net(_turn(x, -j)) for j in range(4)]


# --- the known bug: GroupAveraged of a dict predictor ------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_group_averaged_of_a_dict_predictor_is_the_mean_over_the_four_quarter_turns(size):
    """Was an AttributeError ("'dict' object has no attribute 'reshape'"); now a dict of per-key means."""
    torch.manual_seed(0)
    net = DictNet().double()
    x = _images(size)
    with torch.no_grad():
        out = ec.GroupAveraged(net, G)(x)
    copies = _copies(net, x)
    assert type(out) is dict and list(out) == ["logits", "mask"]
    for key in ("logits", "mask"):
        _close(out[key], sum(c[key] for c in copies) / 4)
    assert out["logits"].shape == (3, CLASSES) and out["mask"].shape == (3, 1, size, size)


@pytest.mark.parametrize("size", SIZES)
def test_group_averaged_of_a_dict_predictor_is_invariant(size):
    torch.manual_seed(0)
    net = DictNet().double()
    model = ec.GroupAveraged(net, G)
    x = _images(size)
    with torch.no_grad():
        assert float((net(_turn(x, 1))["logits"] - net(x)["logits"]).abs().max()) > 1e-3  # p alone is not
        base = model(x)
        for k in (1, 2, 3):
            moved = model(_turn(x, k))
            for key in ("logits", "mask"):  # Trivial on every tensor: both keys are invariant
                _close(moved[key], base[key])
    ec.testing.assert_invariant(lambda t: model(t)["logits"], G, ec.actions.Image(G), x)


# --- one action per key: invariant logits, equivariant masks ------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_group_averaged_maps_each_key_back_by_its_own_action(size):
    torch.manual_seed(0)
    net = DictNet().double()
    model = ec.GroupAveraged(net, G, output=MIXED)
    x = _images(size)
    copies = _copies(net, x)
    with torch.no_grad():
        out = model(x)
        _close(out["logits"], sum(c["logits"] for c in copies) / 4)
        _close(out["mask"], sum(_turn(c["mask"], j) for j, c in enumerate(copies)) / 4)
        for k in (1, 2, 3):
            moved = model(_turn(x, k))
            _close(moved["logits"], out["logits"])
            _close(moved["mask"], _turn(out["mask"], k))
        assert float((_turn(net(x)["mask"], 1) - net(_turn(x, 1))["mask"]).abs().max()) > 1e-3  # p alone is not


@pytest.mark.parametrize("size", SIZES)
def test_canonicalized_maps_each_key_back_by_the_pose(size):
    torch.manual_seed(0)
    net = DictNet().double()
    model = _wrap("canonicalized", net, output=MIXED)
    x = _images(size, batch=4)
    with torch.no_grad():
        out, res = model(x, return_canonicalization=True)
        assert isinstance(res, Canonicalization) and type(out) is dict
        assert bool((res.pose != 0).any())  # some image is turned: the mapping back is not the identity
        raw = net(res.canonical)
        _close(out["logits"], raw["logits"])
        _close(out["mask"], ec.actions.Image(G)(res.pose, raw["mask"]))
        for k in (1, 2, 3):
            moved = model(_turn(x, k))
            _close(moved["logits"], out["logits"])
            _close(moved["mask"], _turn(out["mask"], k))


@pytest.mark.parametrize("kind", ["weighted", "symmetrized"])
def test_the_averaging_canonicalizers_map_each_key_back(kind):
    """``WeightedCanonicalized`` and ``Symmetrized.expected``: logits invariant, masks equivariant."""
    torch.manual_seed(0)
    model = _wrap(kind, DictNet(), output=MIXED)
    f = _exact(kind, model)
    x = _images(9)
    with torch.no_grad():
        out = f(x)
        assert type(out) is dict and list(out) == ["logits", "mask"]
        for k in (1, 2, 3):
            moved = f(_turn(x, k))
            _close(moved["logits"], out["logits"])
            _close(moved["mask"], _turn(out["mask"], k))


def test_weighted_canonicalized_of_a_dict_is_the_weighted_sum_of_its_keys():
    torch.manual_seed(0)
    net = DictNet().double()
    model = _wrap("weighted", net, output=MIXED)
    image = ec.actions.Image(G)
    x = _images(10, batch=4)
    with torch.no_grad():
        poses, weights = model.weighted_poses(x)
        assert poses.shape == (4, 2) and weights.shape == (4, 2)
        logits = torch.zeros(4, CLASSES, dtype=torch.float64)
        mask = torch.zeros(4, 1, 10, 10, dtype=torch.float64)
        for j in range(2):
            pred = net(image(G.inverse(poses[:, j]), x))
            logits = logits + weights[:, j, None] * pred["logits"]
            mask = mask + weights[:, j, None, None, None] * image(poses[:, j], pred["mask"])
        out = model(x)
    assert float(weights[:, 1].max()) > 0  # the second pose counts for some input
    _close(out["logits"], logits)
    _close(out["mask"], mask)


def test_symmetrized_of_a_dict_gives_the_logits_of_the_tensor_predictor():
    torch.manual_seed(0)
    net = DictNet().double()
    logits_only = Reshaped(net, lambda d: d["logits"])
    canon = _canon().double().eval()
    structured = ec.Symmetrized(net, canon, samples=3).double().eval()
    plain = ec.Symmetrized(logits_only, canon, samples=3).double().eval()
    x = _images(9)
    with torch.no_grad():
        out = structured(x, generator=torch.Generator().manual_seed(0))
        expected = plain(x, generator=torch.Generator().manual_seed(0))
        assert type(out) is dict and list(out) == ["logits", "mask"]
        _close(out["logits"], expected, atol=1e-12)
        assert out["mask"].shape == (3, 1, 9, 9)
        mean = structured.expected(x)
        assert type(mean) is dict and list(mean) == ["logits", "mask"]
        _close(mean["logits"], plain.expected(x), atol=1e-12)


# --- dataclasses, tuples, lists, nesting ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", IMAGE_WRAPPERS)
def test_a_dataclass_prediction_comes_back_as_the_dataclass(kind):
    torch.manual_seed(0)
    predictor = Reshaped(DictNet(), lambda d: Out(logits=d["logits"], extra=d["mask"]))
    model = _wrap(kind, predictor, output={"logits": ec.actions.Trivial(), "extra": ec.actions.Image(G)})
    x = _images(9)
    out = _call(kind, model, x)
    assert type(out) is Out
    assert out.logits.shape == (3, CLASSES) and out.extra.shape == (3, 1, 9, 9)
    f = _exact(kind, model)
    with torch.no_grad():
        base, moved = f(x), f(_turn(x, 1))
    assert type(base) is Out
    _close(moved.logits, base.logits)
    _close(moved.extra, _turn(base.extra, 1))


def test_group_averaged_of_a_dataclass_is_the_mean_of_its_fields():
    torch.manual_seed(0)
    net = DictNet().double()
    predictor = Reshaped(net, lambda d: Out(logits=d["logits"], extra=d["mask"]))
    x = _images(10)
    with torch.no_grad():
        out = ec.GroupAveraged(predictor, G, output=ec.actions.Trivial())(x)
    copies = _copies(net, x)
    assert type(out) is Out
    _close(out.logits, sum(c["logits"] for c in copies) / 4)
    _close(out.extra, sum(c["mask"] for c in copies) / 4)


@pytest.mark.parametrize("output", ["one", "per position", "none"])
@pytest.mark.parametrize("kind", IMAGE_WRAPPERS)
def test_a_tuple_prediction_comes_back_as_a_tuple(kind, output):
    """``output=(Trivial(), Trivial())``, ``output=Trivial()`` and the default give the same tuple."""
    torch.manual_seed(0)
    net = DictNet().double()
    predictor = Reshaped(net, lambda d: (d["logits"], d["mask"].flatten(1)))
    outputs = {"one": ec.actions.Trivial(), "per position": (ec.actions.Trivial(), ec.actions.Trivial()),
               "none": None}
    canon = _canon()
    model = _wrap(kind, predictor, output=outputs[output], canon=canon)
    reference = _wrap(kind, Reshaped(net, lambda d: d["logits"]), canon=canon)
    x = _images(9)
    out = _call(kind, model, x)
    assert type(out) is tuple and len(out) == 2
    assert out[0].shape == (3, CLASSES) and out[1].shape == (3, 81)
    _close(out[0], _call(kind, reference, x), atol=1e-12)


def test_group_averaged_of_a_tuple_is_the_mean_of_each_position():
    torch.manual_seed(0)
    net = DictNet().double()
    predictor = Reshaped(net, lambda d: (d["logits"], d["mask"]))
    model = ec.GroupAveraged(predictor, G, output=(ec.actions.Trivial(), ec.actions.Image(G)))
    x = _images(9)
    copies = _copies(net, x)
    with torch.no_grad():
        logits, mask = model(x)
        _close(logits, sum(c["logits"] for c in copies) / 4)
        _close(mask, sum(_turn(c["mask"], j) for j, c in enumerate(copies)) / 4)
        moved = model(_turn(x, 3))
    _close(moved[0], logits)
    _close(moved[1], _turn(mask, 3))


def test_a_list_prediction_comes_back_as_a_list():
    torch.manual_seed(0)
    net = DictNet().double()
    predictor = Reshaped(net, lambda d: [d["logits"], d["mask"]])
    model = ec.GroupAveraged(predictor, G, output=[ec.actions.Trivial(), ec.actions.Image(G)])
    x = _images(10)
    copies = _copies(net, x)
    with torch.no_grad():
        out = model(x)
    assert type(out) is list and len(out) == 2
    _close(out[0], sum(c["logits"] for c in copies) / 4)
    _close(out[1], sum(_turn(c["mask"], j) for j, c in enumerate(copies)) / 4)


def _nested(d: dict[str, torch.Tensor]) -> dict:
    return {"head": {"logits": d["logits"], "pair": (2 * d["logits"], d["logits"].exp())}, "mask": d["mask"]}


def test_a_nested_prediction_keeps_its_structure_and_averages_every_tensor():
    torch.manual_seed(0)
    net = DictNet().double()
    model = ec.GroupAveraged(Reshaped(net, _nested), G)
    x = _images(9)
    copies = [_nested(c) for c in _copies(net, x)]
    with torch.no_grad():
        out = model(x)
    assert list(out) == ["head", "mask"] and list(out["head"]) == ["logits", "pair"]
    assert type(out["head"]["pair"]) is tuple and len(out["head"]["pair"]) == 2
    _close(out["head"]["logits"], sum(c["head"]["logits"] for c in copies) / 4)
    _close(out["head"]["pair"][0], sum(c["head"]["pair"][0] for c in copies) / 4)
    _close(out["head"]["pair"][1], sum(c["head"]["pair"][1] for c in copies) / 4)
    _close(out["mask"], sum(c["mask"] for c in copies) / 4)


@pytest.mark.parametrize("kind", ["canonicalized", "averaged"])
def test_a_top_level_action_applies_to_every_tensor_of_its_part(kind):
    """``{"head": Trivial(), "mask": Image(C(4))}`` for a prediction whose ``"head"`` is itself a dict."""
    torch.manual_seed(0)
    model = _wrap(kind, Reshaped(DictNet(), _nested), output={"head": ec.actions.Trivial(), "mask": ec.actions.Image(G)})
    x = _images(10)
    with torch.no_grad():
        base, moved = model(x), model(_turn(x, 1))
    _close(moved["head"]["logits"], base["head"]["logits"])
    _close(moved["head"]["pair"][0], base["head"]["pair"][0])
    _close(moved["head"]["pair"][1], base["head"]["pair"][1])
    _close(moved["mask"], _turn(base["mask"], 1))


@pytest.mark.parametrize("kind", IMAGE_WRAPPERS)
def test_plain_values_in_a_prediction_are_passed_through(kind):
    torch.manual_seed(0)
    predictor = Reshaped(DictNet(), lambda d: {"logits": d["logits"], "name": "net", "count": 3})
    model = _wrap(kind, predictor)
    out = _call(kind, model, _images(9))
    assert type(out) is dict and list(out) == ["logits", "name", "count"]
    assert out["name"] == "net" and out["count"] == 3 and type(out["count"]) is int
    assert out["logits"].shape == (3, CLASSES)


# --- errors ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("structure", ["dict", "dataclass"])
@pytest.mark.parametrize("kind", IMAGE_WRAPPERS)
def test_a_dict_of_actions_missing_a_key_is_a_config_error_naming_it(kind, structure):
    torch.manual_seed(0)
    if structure == "dict":
        predictor, output, missing = DictNet(), {"logits": ec.actions.Trivial()}, "mask"
    else:
        predictor = Reshaped(DictNet(), lambda d: Out(logits=d["logits"], extra=d["mask"]))
        output, missing = {"extra": ec.actions.Image(G)}, "logits"
    model = _wrap(kind, predictor, output=output)
    with pytest.raises(ConfigError, match=missing):
        _call(kind, model, _images(9))


@pytest.mark.parametrize("kind", IMAGE_WRAPPERS)
def test_a_set_prediction_is_a_dtype_error(kind):
    torch.manual_seed(0)
    model = _wrap(kind, Reshaped(DictNet(), lambda d: {d["logits"]}))
    with pytest.raises(DTypeError):
        _call(kind, model, _images(9))


# --- FrameAveraged: energies and forces ------------------------------------------------------------------------------


class PointNet(nn.Module):
    """``{"energy": (B, 1), "forces": (B, N, 3)}`` from an MLP on raw coordinates: neither invariant nor equivariant."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 8)
        self.energy = nn.Linear(8, 1)
        self.force = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = torch.tanh(self.embed(x))
        return {"energy": self.energy(h).sum(dim=1), "forces": self.force(h)}


class PointLogits(nn.Module):
    """Class logits ``(B, 5)`` of a point cloud from an MLP on raw coordinates; not invariant."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 8)
        self.head = nn.Linear(8, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.embed(x)).mean(dim=1))


FORCES = {"energy": ec.actions.Trivial(), "forces": ec.actions.Vectors(ec.SO3())}


def _points(batch: int = 3, n: int = 12, seed: int = 0) -> torch.Tensor:
    """Point clouds ``(B, N, 3)`` with well separated principal variances (stable PCA frames)."""
    gen = torch.Generator().manual_seed(seed)
    scale = torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)
    return torch.randn(batch, n, 3, generator=gen, dtype=torch.float64) * scale


def _rotations(batch: int = 3, seed: int = 1) -> torch.Tensor:
    return ec.SO3().sample(batch, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_frame_averaged_of_a_dict_is_the_mean_over_the_frames():
    torch.manual_seed(0)
    net = PointNet().double()
    x = _points()
    frames = pca_frames(x, ec.SO3())  # (B, 4, 3, 3)
    with torch.no_grad():
        out = ec.FrameAveraged(net, ec.SO3(), output=FORCES)(x)
        copies = [net(x @ frames[:, j]) for j in range(4)]  # F⁻¹·x: every point p as Fᵀ p
    assert type(out) is dict and list(out) == ["energy", "forces"]
    _close(out["energy"], sum(c["energy"] for c in copies) / 4)
    _close(out["forces"], sum(c["forces"] @ frames[:, j].mT for j, c in enumerate(copies)) / 4)


def test_frame_averaged_energies_are_invariant_and_forces_equivariant():
    torch.manual_seed(0)
    net = PointNet().double()
    model = ec.FrameAveraged(net, ec.SO3(), output=FORCES)
    x, r = _points(), _rotations()
    with torch.no_grad():
        base, moved = model(x), model(x @ r.mT)
        assert float((net(x @ r.mT)["energy"] - net(x)["energy"]).abs().max()) > 1e-3  # p alone is not
    _close(moved["energy"], base["energy"], atol=1e-9)
    _close(moved["forces"], base["forces"] @ r.mT, atol=1e-9)


def test_frame_averaged_structure_and_errors():
    torch.manual_seed(0)
    net = PointNet().double()
    x = _points()
    with torch.no_grad():
        pair = ec.FrameAveraged(Reshaped(net, lambda d: (d["energy"], d["forces"])), ec.SO3(),
                                output=(ec.actions.Trivial(), ec.actions.Vectors(ec.SO3())))(x)
        whole = ec.FrameAveraged(net, ec.SO3(), output=FORCES)(x)
        assert type(pair) is tuple and len(pair) == 2
        _close(pair[0], whole["energy"], atol=1e-12)
        _close(pair[1], whole["forces"], atol=1e-12)
        with pytest.raises(ConfigError, match="forces"):
            ec.FrameAveraged(net, ec.SO3(), output={"energy": ec.actions.Trivial()})(x)
        with pytest.raises(DTypeError):
            ec.FrameAveraged(Reshaped(net, lambda d: {d["energy"]}), ec.SO3())(x)


# --- merges ---------------------------------------------------------------------------------------------------------


def _merged(copies: torch.Tensor, merge: str) -> torch.Tensor:
    """The merge of mapped predictions ``(copies, B, ...)`` written out."""
    if merge == "mean":
        return copies.mean(dim=0)
    if merge == "softmax":
        return copies.softmax(dim=-1).mean(dim=0)
    if merge == "geometric":
        return copies.log_softmax(dim=-1).mean(dim=0).softmax(dim=-1)
    return copies.amax(dim=0)


@pytest.mark.parametrize("merge", MERGES)
def test_group_averaged_merge_is_the_hand_computation_over_the_quarter_turns(merge):
    torch.manual_seed(0)
    net = DictNet().double()
    logits = Reshaped(net, lambda d: d["logits"])
    x = _images(9)
    copies = torch.stack([c["logits"] for c in _copies(net, x)])  # (4, B, K)
    with torch.no_grad():
        out = ec.GroupAveraged(logits, G, merge=merge)(x)
    _close(out, _merged(copies, merge), atol=1e-12)
    if merge in ("softmax", "geometric"):  # probabilities
        assert bool((out >= 0).all())
        _close(out.sum(dim=-1), torch.ones(3, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("merge", MERGES)
def test_every_merge_is_invariant(merge, size):
    torch.manual_seed(0)
    model = ec.GroupAveraged(Reshaped(DictNet(), lambda d: d["logits"]), G, merge=merge).double()
    x = _images(size)
    with torch.no_grad():
        base = model(x)
        for k in (1, 2, 3):
            _close(model(_turn(x, k)), base)


def test_the_default_merge_is_the_mean():
    torch.manual_seed(0)
    predictor = Reshaped(DictNet(), lambda d: d["logits"]).double()
    x = _images(10)
    with torch.no_grad():
        _close(ec.GroupAveraged(predictor, G)(x), ec.GroupAveraged(predictor, G, merge="mean")(x), atol=0.0)


@pytest.mark.parametrize("merge", ["softmax", "max"])
def test_a_merge_applies_to_every_tensor_of_a_structured_prediction(merge):
    """Each tensor is merged after mapping back: ``"max"`` of the turned-back masks is equivariant."""
    torch.manual_seed(0)
    net = DictNet().double()
    model = ec.GroupAveraged(net, G, output=MIXED, merge=merge)
    x = _images(9)
    copies = _copies(net, x)
    with torch.no_grad():
        out = model(x)
    assert type(out) is dict and list(out) == ["logits", "mask"]
    _close(out["logits"], _merged(torch.stack([c["logits"] for c in copies]), merge), atol=1e-12)
    masks = torch.stack([_turn(c["mask"], j) for j, c in enumerate(copies)])
    _close(out["mask"], _merged(masks, merge), atol=1e-12)
    if merge == "max":
        with torch.no_grad():
            moved = model(_turn(x, 1))
        _close(moved["logits"], out["logits"])
        _close(moved["mask"], _turn(out["mask"], 1))


@pytest.mark.parametrize("merge", MERGES)
def test_frame_averaged_merge_is_the_hand_computation_over_the_frames(merge):
    torch.manual_seed(0)
    net = PointLogits().double()
    model = ec.FrameAveraged(net, ec.SO3(), merge=merge)
    x, r = _points(), _rotations()
    frames = pca_frames(x, ec.SO3())
    with torch.no_grad():
        copies = torch.stack([net(x @ frames[:, j]) for j in range(4)])
        out = model(x)
        moved = model(x @ r.mT)
    _close(out, _merged(copies, merge), atol=1e-12)
    _close(moved, out, atol=1e-9)  # invariant


@pytest.mark.parametrize("wrapper", ["averaged", "frames"])
def test_an_unknown_merge_is_a_config_error_listing_the_options(wrapper):
    with pytest.raises(ConfigError) as info:
        if wrapper == "averaged":
            ec.GroupAveraged(DictNet(), G, merge="median")
        else:
            ec.FrameAveraged(PointNet(), ec.SO3(), merge="median")
    message = str(info.value)
    assert "median" in message
    for name in MERGES:
        assert name in message
