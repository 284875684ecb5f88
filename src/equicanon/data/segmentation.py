"""Semantic segmentation of Fashion-MNIST items: padded images and per-pixel labels by thresholding.

The task of experiment 3 of docs/adaptation.md: the label of a pixel is the item's class + 1 where
the image is above ``threshold`` (after /255), else 0 (background): 11 classes. Thresholding is
rotation-equivariant, so the labels of a rotated image are :func:`segmentation_labels` of that
rotated image; naming the item is what a plain network trained upright cannot do rotated.
The scores are those of semantic segmentation, from a confusion matrix summed over pixels
(:func:`confusion_matrix`, :func:`segmentation_scores`: mIoU, pixel and foreground accuracy).

    >>> import torch
    >>> items = torch.full((2, 28, 28), 200, dtype=torch.uint8)
    >>> images = pad_images(items, 36)
    >>> images.shape
    torch.Size([2, 1, 36, 36])
    >>> segmentation_labels(images, torch.tensor([0, 9]), 0.15).unique().tolist()
    [0, 1, 10]
    >>> labels = torch.tensor([[0, 1], [2, 2]])
    >>> segmentation_scores(confusion_matrix(labels, labels, classes=3))
    {'miou': 1.0, 'pixel_acc': 1.0, 'fg_acc': 1.0}
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from ..errors import ConfigError, check_shape
from .mnist import FASHION_MNIST_CLASSES, load_fashion_mnist

__all__ = ["SEGMENTATION_CLASSES", "pad_images", "segmentation_labels", "load_fashion_mnist_segmentation",
           "confusion_matrix", "segmentation_scores"]

#: label names of the task: background, then the 10 Fashion-MNIST classes
SEGMENTATION_CLASSES = ("background", *FASHION_MNIST_CLASSES)


def pad_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 items ``(N, H, W)`` as float images ``(N, 1, size, size)`` in [0, 1], zero-padded evenly."""
    check_shape(images, "N H W", name="images")
    h, w = images.shape[-2:]
    if size < max(h, w) or (size - h) % 2 or (size - w) % 2:
        raise ConfigError(f"cannot pad {h}x{w} images evenly to {size}x{size}")
    top, left = (size - h) // 2, (size - w) // 2
    return F.pad(images.float()[:, None] / 255.0, (left, size - w - left, top, size - h - top))


def segmentation_labels(images: torch.Tensor, classes: torch.Tensor, threshold: float) -> torch.Tensor:
    """Per-pixel labels ``(B, H, W)`` int64 of images ``(B, 1, H, W)``: ``class + 1`` above ``threshold``, else 0."""
    check_shape(images, "B 1 H W", name="images")
    check_shape(classes, "B", name="classes", B=images.shape[0])
    return torch.where(images[:, 0] > threshold, classes[:, None, None] + 1, 0)


def load_fashion_mnist_segmentation(split: str, size: int, count: int | None = None,
                                    data_dir: str | os.PathLike[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` (all: ``None``) Fashion-MNIST items of ``split``, upright and padded to ``size``.

    Returns images ``(N, 1, size, size)`` in [0, 1] and their classes ``(N,)`` int64; the labels of any
    (rotated) image are :func:`segmentation_labels` of it. ``data_dir``: see
    :func:`~equicanon.data.load_fashion_mnist`.
    """
    images, classes = load_fashion_mnist(split, data_dir)
    count = len(images) if count is None else count
    return pad_images(images[:count], size), classes[:count]


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, classes: int = len(SEGMENTATION_CLASSES)) -> torch.Tensor:
    """Counts ``(classes, classes)`` int64 of labels of equal shape: entry ``[t, p]`` = pixels of true label ``t``
    predicted ``p``."""
    if pred.shape != target.shape:
        raise ConfigError(f"predicted labels {tuple(pred.shape)} and targets {tuple(target.shape)} differ in shape")
    flat = target.reshape(-1).long() * classes + pred.reshape(-1).long()
    return torch.bincount(flat, minlength=classes * classes).reshape(classes, classes)


def segmentation_scores(confusion: torch.Tensor) -> dict[str, float]:
    """Scores of a confusion matrix ``(K, K)`` (label 0 = background).

    Returns ``{"miou", "pixel_acc", "fg_acc"}``: the mean over classes present in target or prediction of
    TP / (TP + FP + FN); the share of all pixels labelled right; the share of non-background pixels
    labelled right (NaN where there are none).
    """
    check_shape(confusion, "K K", name="confusion")
    c = confusion.double()
    tp = c.diag()
    union = c.sum(0) + c.sum(1) - tp
    present = union > 0
    fg_total = c[1:].sum()
    return {"miou": float((tp[present] / union[present]).mean()) if bool(present.any()) else float("nan"),
            "pixel_acc": float(tp.sum() / c.sum()),
            "fg_acc": float(tp[1:].sum() / fg_total) if fg_total > 0 else float("nan")}
