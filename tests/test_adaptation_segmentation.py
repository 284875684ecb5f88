"""The library parts of experiment 3 of docs/adaptation.md (experiments/adaptation_segmentation.py): dense outputs.

The segmentation task (``equicanon.data.segmentation``: padding, labels by thresholding, the confusion
matrix and its scores) and the equivariance of a canonicalized ``ec.models.UNet`` whose logit maps are
mapped back through the pose. The script itself runs with ``--quick`` in tests/test_experiments.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import equicanon as ec
from equicanon.data import SEGMENTATION_CLASSES, load_fashion_mnist_segmentation, pad_images, segmentation_labels
from equicanon.data.segmentation import confusion_matrix, segmentation_scores
from equicanon.errors import ConfigError, ShapeError

CLASSES = len(SEGMENTATION_CLASSES)


def test_labels_are_class_plus_one_above_the_threshold() -> None:
    images = torch.tensor([[[0.0, 0.1, 0.2], [0.5, 0.15, 1.0]]]).reshape(1, 1, 2, 3).repeat(2, 1, 1, 1)
    labels = segmentation_labels(images, torch.tensor([0, 9]), threshold=0.15)
    assert labels.dtype == torch.int64
    assert labels[0].tolist() == [[0, 0, 1], [1, 0, 1]]
    assert labels[1].tolist() == [[0, 0, 10], [10, 0, 10]]
    assert SEGMENTATION_CLASSES[0] == "background" and CLASSES == 11
    with pytest.raises(ShapeError):
        segmentation_labels(images, torch.tensor([0, 9, 1]), threshold=0.15)


def test_padding_centres_the_item() -> None:
    items = torch.full((1, 28, 28), 255, dtype=torch.uint8)
    padded = pad_images(items, 36)
    assert padded.shape == (1, 1, 36, 36) and padded.dtype == torch.float32
    assert padded[0, 0, 4:32, 4:32].eq(1).all() and padded.sum() == 28 * 28
    assert torch.equal(padded, torch.rot90(padded, 1, (-2, -1)))  # centred: a quarter turn keeps it
    with pytest.raises(ConfigError, match="evenly"):
        pad_images(items, 35)


def test_the_loader_pads_the_first_items(fake_data: Path) -> None:
    images, classes = load_fashion_mnist_segmentation("test", 32, 5, fake_data)
    raw, raw_classes = ec.data.load_fashion_mnist("test", fake_data)
    assert images.shape == (5, 1, 32, 32) and torch.equal(classes, raw_classes[:5])
    assert torch.equal(images, pad_images(raw[:5], 32))
    assert len(load_fashion_mnist_segmentation("test", 28, None, fake_data)[0]) == len(raw)


def test_scores_from_a_known_confusion() -> None:
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 0]])
    assert segmentation_scores(confusion_matrix(target, target, 3)) == {"miou": 1.0, "pixel_acc": 1.0, "fg_acc": 1.0}
    pred = torch.tensor([[0, 0, 1, 2], [2, 2, 2, 0]])  # one pixel of class 1 called 2
    confusion = confusion_matrix(pred, target, 3)
    assert confusion.tolist() == [[3, 0, 0], [0, 1, 1], [0, 0, 3]]
    s = segmentation_scores(confusion)
    # IoU: class 0: 3/3, class 1: 1/2, class 2: 3/4; pixels: 7/8; item pixels: 4/5
    assert s["miou"] == pytest.approx((1 + 0.5 + 0.75) / 3)
    assert s["pixel_acc"] == pytest.approx(7 / 8) and s["fg_acc"] == pytest.approx(4 / 5)
    background_only = segmentation_scores(confusion_matrix(torch.zeros(4), torch.zeros(4), 3))
    assert background_only["miou"] == 1.0 and background_only["fg_acc"] != background_only["fg_acc"]  # NaN
    with pytest.raises(ConfigError, match="differ in shape"):
        confusion_matrix(pred, target[:1], 3)


class _Oracle(nn.Module):
    """Logits of the true labels of whatever image it sees (every image here is of class ``cls``)."""

    def __init__(self, cls: int) -> None:
        super().__init__()
        self.cls = cls

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        labels = segmentation_labels(x, torch.full((x.shape[0],), self.cls), 0.15)
        return nn.functional.one_hot(labels, CLASSES).permute(0, 3, 1, 2).float()


@pytest.mark.parametrize("n", [4, 8])
def test_canonicalized_unet_maps_masks_back_through_the_pose(n: int) -> None:
    """f(g·x) = g⋆f(x) for the experiment's model, untrained, exactly on quarter turns (float64)."""
    group = ec.C(n)

    def unet() -> nn.Module:
        torch.manual_seed(0)
        return ec.models.UNet(width=4, classes=CLASSES)

    model = ec.adapt_pretrained(unet(), group, in_channels=1, output=ec.actions.Image(group),
                                canonicalizer_args={"crop": None, "resize": None, "hidden": 2, "layers": 2,
                                                    "kernel_size": 3})
    x = torch.randn(2, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    quarter_turns = torch.arange(0, n, n // 4)
    report = ec.testing.assert_equivariant(model, group, ec.actions.Image(group), ec.actions.Image(group), x,
                                           elements=quarter_turns)
    assert report.max_error < 1e-9
    # the bare U-Net is not equivariant: the canonicalizer is what makes the wrapper so
    bare = ec.testing.equivariance_error(unet().eval(), group, ec.actions.Image(group), ec.actions.Image(group),
                                         x, elements=quarter_turns)
    assert not bare.passed


def test_an_oracle_wrapped_by_the_canonicalizer_segments_rotated_items_by_their_own_labels() -> None:
    """The experiment scores each rotated image against the labels of that rotated image: an oracle is perfect."""
    gen = torch.Generator().manual_seed(0)
    images = pad_images((torch.rand(6, 28, 28, generator=gen) * 255).to(torch.uint8), 32)
    group = ec.C(4)  # every pose a quarter turn: moving the image and mapping the masks back are exact
    model = ec.adapt_pretrained(_Oracle(4), group, in_channels=1, output=ec.actions.Image(group),
                                canonicalizer_args={"crop": None, "resize": 16, "hidden": 2, "layers": 2,
                                                    "kernel_size": 3}).eval()
    for k in range(4):
        x = ec.actions.Image(group)(torch.full((6,), k), images)
        with torch.no_grad():
            logits = model(x)
        truth = segmentation_labels(x, torch.full((6,), 4), 0.15)
        assert segmentation_scores(confusion_matrix(logits.argmax(1), truth, CLASSES))["pixel_acc"] == 1.0
