"""Serialization: state_dict round trips for every registered canonicalizer, torch.save/load of whole
Canonicalized models, and torch.export of inference models (the same outputs, the same invariance)."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import equicanon as ec
from equicanon.canonicalizers.base import available, entry
from equicanon.models import ConvEncoder

CASES = [pytest.param(case, id=f"{name}:{case.name}") for name in available() for case in entry(name).test_cases()]


def _input(case: ec.canonicalizers.RegistryCase, seed: int, batch: int = 2, size: int = 8) -> torch.Tensor:
    shape = (batch, *(size if s == "size" else int(s) for s in case.input_shape[1:]))
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _same(a: ec.canonicalizers.Canonicalization, b: ec.canonicalizers.Canonicalization) -> bool:
    return torch.equal(a.canonical, b.canonical) and torch.equal(a.pose, b.pose)


def _trained_a_little(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """One training-mode pass, so batch-norm running statistics differ from their initial values."""
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


@pytest.mark.parametrize("case", CASES)
def test_state_dict_round_trip_gives_identical_results(case: ec.canonicalizers.RegistryCase) -> None:
    torch.manual_seed(0)
    source = _trained_a_little(case.make(), _input(case, 1, batch=4))
    torch.manual_seed(1)
    target = case.make().eval()
    x = _input(case, 2)
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    target.load_state_dict(torch.load(buffer, weights_only=True))
    assert _same(target(x), source(x))


def _canonicalized() -> ec.Canonicalized:
    torch.manual_seed(0)
    canon = ec.canonicalizers.GroupConv(ec.C(4), 1, hidden=4, kernel_size=3)
    predictor = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    return ec.Canonicalized(predictor, canon)


def _images(seed: int, batch: int = 3) -> torch.Tensor:
    return torch.randn(batch, 1, 12, 12, generator=torch.Generator().manual_seed(seed))


def test_whole_canonicalized_model_survives_torch_save_and_load(tmp_path) -> None:
    model = _trained_a_little(_canonicalized(), _images(0, 8))
    path = tmp_path / "model.pt"
    torch.save(model, path)
    loaded = torch.load(path, weights_only=False)
    assert isinstance(loaded, ec.Canonicalized) and loaded.group == ec.C(4)
    x = _images(1)
    assert torch.equal(loaded(x), model(x))
    ec.testing.assert_invariant(loaded, ec.C(4), ec.actions.Image(ec.C(4)), x)


def test_contrastive_with_a_lazy_reference_round_trips_through_state_dict() -> None:
    """A reference drawn on the first call (feature size unknown until then) is restored into a fresh module."""
    torch.manual_seed(0)
    source = ec.canonicalizers.Contrastive(ec.C(4), nn.Sequential(ConvEncoder(1, out_dim=8, hidden=4))).eval()
    assert source.reference.numel() == 0  # nn.Sequential has no out_dim: the size is found on the first call
    x = _images(2)
    expected = source(x)
    fresh = ec.canonicalizers.Contrastive(ec.C(4), nn.Sequential(ConvEncoder(1, out_dim=8, hidden=4))).eval()
    fresh.load_state_dict(source.state_dict())
    assert _same(fresh(x), expected)


def _export(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """``torch.export`` of an inference model (eval mode, no gradients): its graph as a module."""
    model.eval()
    with torch.no_grad():
        return torch.export.export(model, (x,)).module()


class _Poses(nn.Module):
    """A canonicalizer's ``(canonical, pose)`` as a tuple of tensors, for export."""

    def __init__(self, canon: nn.Module) -> None:
        super().__init__()
        self.canon = canon

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        result = self.canon(x)
        return result.canonical, result.pose


def test_torch_export_of_a_canonicalized_model_gives_the_same_outputs_and_stays_invariant() -> None:
    model = _trained_a_little(_canonicalized(), _images(0, 8))
    exported = _export(model, _images(1))
    group, action = ec.C(4), ec.actions.Image(ec.C(4))
    with torch.no_grad():
        for seed in (2, 3):  # new inputs of the traced shape: argmax and gather are in the graph, not baked in
            x = _images(seed)
            assert torch.equal(exported(x), model(x))
        x = _images(4)
        for g in group.elements():
            moved = action(g.expand(3), x)
            torch.testing.assert_close(exported(moved), exported(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["contrastive", "sort"])
def test_torch_export_of_other_discrete_canonicalizers(name: str) -> None:
    case = entry(name).test_cases()[1]  # D(4) conv_encoder; S(5)
    torch.manual_seed(0)
    model = _Poses(case.make())
    exported = _export(model, _input(case, 0))
    with torch.no_grad():
        x = _input(case, 5)
        for a, b in zip(exported(x), model(x), strict=True):
            assert torch.equal(a, b)
