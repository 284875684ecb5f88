"""Molecules (QM9) as padded, variable-size batches: the training step, the Lightning module and the configs.

- ``step`` / ``fit`` / ``CanonicalizationModule`` take batches ``(x, y, mask)`` (or ``(x, y, {name: value})``): the
  mask reaches the canonicalizer and the predictor as ``mask=``, keyword tensors declared in ``keyword_actions``
  move with ``x`` under ``transform="group"``; a bad third entry is a typed error;
- ``ec.models.MoleculeTransformer(x, mask=m)`` ignores the padding rows (their content and how many there are);
  behind ``ParticleVectorNeurons(E3())`` (``Canonicalized``) and in ``FrameAveraged`` it is E(3)-invariant with a
  mask (``assert_invariant``, float64 and float32);
- ``QM9DataModule`` (where ``qm9pack`` is installed): a seeded split, batches ``(x (B, N, 11), y (B, T), mask)``,
  targets standardised by the training split, errors for unknown targets and splits that do not fit; each of the
  four ``configs/qm9_gap_*.yaml`` trains for one epoch on a few hundred molecules through the CLI.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import equicanon as ec
from equicanon.data import pad_sets
from equicanon.errors import ConfigError, DTypeError, ShapeError
from equicanon.testing import assert_invariant
from equicanon.training import fit, step

ROOT = Path(__file__).resolve().parents[1]
HAS_QM9 = importlib.util.find_spec("qm9pack") is not None
needs_qm9 = pytest.mark.skipif(not HAS_QM9, reason="qm9pack is not installed (pip install qm9pack)")
F64 = torch.float64


def _molecules(sizes: list[int], dtype: torch.dtype = F64, seed: int = 0) -> list[torch.Tensor]:
    """Random molecules in the particle layout: position, zero velocity, one-hot element (5)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in sizes:
        pos = torch.randn(n, 3, generator=g, dtype=F64) * torch.tensor([2.0, 1.4, 0.8], dtype=F64)
        onehot = nn.functional.one_hot(torch.randint(0, 5, (n,), generator=g), 5).to(F64)
        out.append(torch.cat([pos, torch.zeros(n, 3, dtype=F64), onehot], dim=-1).to(dtype))
    return out


def _junk(x: torch.Tensor, mask: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.where(mask[..., None], x, torch.randn(x.shape, generator=g, dtype=x.dtype) * 50)


class Recorder(nn.Module):
    """A masked-mean predictor that records the keyword arguments it was called with."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(11, 2)
        self.calls: list[dict[str, Any]] = []

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        self.calls.append({"mask": mask, **kwargs})
        w = torch.ones(x.shape[:2], dtype=x.dtype) if mask is None else mask.to(x.dtype)
        return (self.lin(x) * w[..., None]).sum(1) / w.sum(1, keepdim=True)


# --- MoleculeTransformer --------------------------------------------------------------------------------------

def test_molecule_transformer_ignores_padding() -> None:
    items = _molecules([7, 3, 5])
    torch.manual_seed(0)
    net = ec.models.MoleculeTransformer(features=5, outputs=3, width=16, depth=2, heads=2).double().eval()
    ref = torch.cat([net(m[None]) for m in items])  # each molecule alone, no padding
    for length, seed in ((7, 1), (10, 2), (16, 3)):
        x, mask = pad_sets(items, length=length)
        out = net(_junk(x, mask, seed), mask=mask)
        torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-10)
    assert net(x, mask=mask).shape == (3, 3)


def test_molecule_transformer_errors() -> None:
    net = ec.models.MoleculeTransformer(features=5, width=8, heads=2)
    with pytest.raises(ShapeError):
        net(torch.randn(2, 4, 9))
    with pytest.raises(DTypeError, match="bool"):
        net(torch.randn(2, 4, 11), mask=torch.ones(2, 4))
    with pytest.raises(ConfigError, match="divisible"):
        ec.models.MoleculeTransformer(width=10, heads=4)


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("wrapper", ["canonicalized", "frames"])
def test_invariant_with_a_mask(dtype: torch.dtype, wrapper: str) -> None:
    x, mask = pad_sets(_molecules([9, 4, 6], dtype=dtype), length=11)
    torch.manual_seed(0)
    net = ec.models.MoleculeTransformer(features=5, outputs=2, width=16, depth=1, heads=2).to(dtype)
    group = ec.E3()
    if wrapper == "canonicalized":
        canon = ec.canonicalizers.ParticleVectorNeurons(group, features=5, hidden=8, layers=2)
        model: nn.Module = ec.Canonicalized(net, canon).to(dtype).eval()
    else:
        model = ec.FrameAveraged(net, group, input=ec.actions.Particles(group)).eval()
    # the checker's default tolerances for the dtype (float32: 1e-5; seen: up to 1.5e-7 over 5 seeds)
    assert_invariant(lambda v: model(v, mask=mask), group, ec.actions.Particles(group), x, dtype=None)


# --- batches (x, y, mask) in the step, fit and the Lightning module -------------------------------------------

def test_step_passes_the_mask_to_canonicalizer_and_predictor() -> None:
    x, mask = pad_sets(_molecules([5, 3]), length=6)
    y = torch.randn(2, 2, dtype=F64)
    pred = Recorder().double()
    canon = ec.canonicalizers.ParticleVectorNeurons(ec.SE3(), features=5, hidden=8, layers=1).double()
    model = ec.Canonicalized(pred, canon)
    out = step(model, (x, y, mask), task_loss="mse", transform="group", generator=torch.Generator().manual_seed(0))
    assert out.loss.ndim == 0 and torch.equal(pred.calls[-1]["mask"], mask)
    # the canonicalizer saw the mask: the padded rows do not change the loss
    again = step(model.eval(), (_junk(x, mask, 1), y, {"mask": mask}), task_loss="mse", transform=None)
    first = step(model, (x, y, mask), task_loss="mse", transform=None)
    torch.testing.assert_close(again.loss, first.loss, atol=1e-10, rtol=1e-10)
    plain = Recorder().double()
    step(plain, (x, y, {"mask": mask, "scale": 2.0}), task_loss="mse", transform=None)
    assert torch.equal(plain.calls[-1]["mask"], mask) and plain.calls[-1]["scale"] == 2.0


def test_step_moves_keyword_arguments_declared_with_an_action() -> None:
    class Side(nn.Module):
        def forward(self, x: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
            return (x * side).mean(dim=(1, 2, 3))[:, None].expand(-1, 3)

    x = torch.rand(4, 1, 8, 8, dtype=F64)
    canon = ec.canonicalizers.GroupConv(ec.C(4), in_channels=1, hidden=4).double()
    action = ec.actions.Image(ec.C(4))
    model = ec.Canonicalized(Side(), canon, keyword_actions={"side": action})
    y = torch.randint(0, 3, (4,))
    out = step(model, (x, y, {"side": x.clone()}), transform="group", generator=torch.Generator().manual_seed(3))
    assert torch.isfinite(out.loss)
    with pytest.raises(ConfigError, match="keyword_actions"):
        step(model, (x, y, {"side": x.clone()}), transform="angle", generator=torch.Generator().manual_seed(3))


def test_bad_third_entry_is_a_typed_error() -> None:
    x = torch.randn(2, 4, 11)
    with pytest.raises(DTypeError, match="third entry"):
        step(Recorder(), (x, torch.randn(2, 2), [1, 2]), task_loss="mse", transform=None)
    with pytest.raises(DTypeError, match="triple"):
        step(Recorder(), (x, torch.randn(2, 2), x, x), task_loss="mse", transform=None)


def test_fit_draws_masks_with_their_inputs() -> None:
    x, mask = pad_sets(_molecules([6, 2, 4, 5], dtype=torch.float32), length=6)
    y = torch.randn(4, 2)
    pred = Recorder()
    logs = fit(pred, (x, y, mask), steps=3, batch_size=4, task_loss="mse", transform=None, seed=0)
    assert len(logs) == 3
    for call in pred.calls:
        # every drawn row keeps its own mask: the rows with 2 real atoms are those of molecule 1
        assert call["mask"].shape == (4, 6) and set(call["mask"].sum(1).tolist()) <= {6, 2, 4, 5}
    loader = [(x[:2], y[:2], mask[:2]), (x[2:], y[2:], {"mask": mask[2:]})]
    pred.calls.clear()
    fit(pred, loader, steps=2, task_loss="mse", transform=None)
    assert torch.equal(pred.calls[0]["mask"], mask[:2]) and torch.equal(pred.calls[1]["mask"], mask[2:])


def test_lightning_module_validates_masked_batches() -> None:
    pytest.importorskip("lightning")
    from equicanon.training import CanonicalizationModule

    x, mask = pad_sets(_molecules([6, 3, 5, 4], dtype=torch.float32), length=7)
    y = torch.randn(4, 2)
    torch.manual_seed(0)
    net = ec.models.MoleculeTransformer(features=5, outputs=2, width=16, depth=1, heads=2)
    canon = ec.canonicalizers.ParticleVectorNeurons(ec.E3(), features=5, hidden=8, layers=1)
    module = CanonicalizationModule(ec.Canonicalized(net, canon), task="regression", transform=None, pose_atol=1e-4)
    module.eval()
    metrics = module._evaluate((x, y, mask), 0, "val")
    # invariant regression: the error on moved molecules equals the error as given (float32)
    torch.testing.assert_close(metrics["val/mse_transformed"], metrics["val/mse_upright"], atol=1e-3, rtol=1e-3)
    assert float(metrics["val/pose_agreement"]) == 1.0
    module.train()
    loss = module.losses((x, y, mask))["loss"]
    assert loss.ndim == 0 and torch.isfinite(loss)


# --- QM9DataModule and the configs -----------------------------------------------------------------------------

@needs_qm9
def test_qm9_data_module_split_and_batches() -> None:
    from equicanon.training import QM9DataModule

    data = QM9DataModule(["gap", "dipole"], limit=300, train_size=200, val_size=40, test_size=60, batch_size=16)
    data.setup()
    x, y, mask = next(iter(data.val_dataloader()))
    assert x.shape[0] == 16 and x.shape[2] == 11 and y.shape == (16, 2) and mask.shape == x.shape[:2]
    assert mask.dtype == torch.bool and bool(mask.any(1).all())
    assert bool((x[~mask] == 0).all()) and bool((x[..., 3:6] == 0).all())  # zero padding, zero velocities
    onehot = x[..., 6:][mask]
    assert torch.equal(onehot.sum(-1), torch.ones(len(onehot)))
    train_y = data.train_set.tensors[1].double()
    torch.testing.assert_close(train_y.mean(0), torch.zeros(2, dtype=F64), atol=1e-6, rtol=0)
    torch.testing.assert_close(train_y.std(0), torch.ones(2, dtype=F64), atol=1e-6, rtol=0)
    assert data.units == ["eV", "D"] and float(data.mean[0]) > 1.0  # the gap in eV, several eV
    torch.testing.assert_close(data.unstandardize(torch.zeros(1, 2)), data.mean[None].float())
    again = QM9DataModule(["gap", "dipole"], limit=300, train_size=200, val_size=40, test_size=60)
    again.setup("test")
    assert torch.equal(again.test_set.tensors[0], data.test_set.tensors[0])  # the same seeded split
    other = QM9DataModule(["gap", "dipole"], limit=300, train_size=200, val_size=40, test_size=60, seed=1)
    other.setup("test")
    assert not torch.equal(other.test_set.tensors[1], data.test_set.tensors[1])


@needs_qm9
def test_qm9_data_module_errors() -> None:
    from equicanon.training import QM9DataModule

    with pytest.raises(ConfigError, match="targets"):
        QM9DataModule(["mass"])
    with pytest.raises(ConfigError, match="only 50 molecules"):
        QM9DataModule(limit=50, train_size=40, val_size=10, test_size=10).setup()
    with pytest.raises(ConfigError, match="setup"):
        QM9DataModule(limit=50).unstandardize(torch.zeros(1, 1))


@needs_qm9
@pytest.mark.parametrize("name", ["plain", "augmented", "canonicalized", "frames"])
def test_qm9_config_trains_in_smoke_mode(name: str, tmp_path: Path) -> None:
    pytest.importorskip("lightning")
    from equicanon.training.cli import build_cli

    cli = build_cli(["--config", str(ROOT / "configs" / f"qm9_gap_{name}.yaml"), "--trainer.max_epochs", "1",
                     "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
                     "--trainer.logger", "false", "--data.init_args.limit", "240", "--data.init_args.train_size",
                     "160", "--data.init_args.val_size", "40", "--data.init_args.test_size", "40",
                     "--data.init_args.batch_size", "40"], run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    metrics = cli.trainer.callback_metrics
    assert torch.isfinite(metrics["val/mse_upright"]) and torch.isfinite(metrics["val/mse_transformed"])
    if name in ("canonicalized", "frames"):  # exactly invariant (float32 rounding)
        torch.testing.assert_close(metrics["val/mse_transformed"], metrics["val/mse_upright"], atol=1e-3, rtol=1e-3)
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file() or any(tmp_path.rglob("*.ckpt"))
