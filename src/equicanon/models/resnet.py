"""ResNets in plain torch (He et al., 2016): predictors for the adaptation experiments and benchmarks.

Deliberately *not* equivariant: these are the kind of network equicanon wraps. torchvision
is not needed (and not required by equicanon); :func:`resnet50` has the layout and the
parameter count (25.6M with 1000 classes) of torchvision's ``resnet50``.

    >>> net = resnet_small(classes=10, in_channels=1)
    >>> net(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ConfigError, check_floating, check_positive_int, check_shape

__all__ = ["ResNet", "resnet50", "resnet_small"]


class _Block(nn.Module):
    """Basic (two 3x3) or bottleneck (1x1, 3x3, 1x1 with expansion 4) residual block."""

    def __init__(self, c_in: int, width: int, stride: int, bottleneck: bool) -> None:
        super().__init__()
        c_out = width * 4 if bottleneck else width
        if bottleneck:
            layers = [nn.Conv2d(c_in, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                      nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                      nn.Conv2d(width, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
        else:
            layers = [nn.Conv2d(c_in, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                      nn.Conv2d(width, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out)]
        self.body = nn.Sequential(*layers)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        self.out_channels = c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    """A ResNet classifier: stem, stages of residual blocks, global average pool, linear head.

    Args:
        depths: blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-50.
        widths: channels per stage (bottleneck blocks output 4x as many).
        classes: output logits.
        in_channels: input image channels.
        bottleneck: bottleneck blocks (ResNet-50 and deeper) instead of basic blocks.
        stem: ``"imagenet"`` (7x7 stride-2 convolution and 3x3 max pool, for 224 px inputs) or
            ``"small"`` (one 3x3 convolution, for 28-32 px inputs).

    Shapes: ``(B, in_channels, H, W)`` to logits ``(B, classes)``; every stage after the first halves ``H, W``.
    """

    def __init__(self, depths: Sequence[int], widths: Sequence[int], *, classes: int = 1000, in_channels: int = 3,
                 bottleneck: bool = False, stem: str = "imagenet") -> None:
        super().__init__()
        if len(depths) == 0 or len(depths) != len(widths):
            raise ConfigError(f"depths and widths need one entry per stage, got {list(depths)} and {list(widths)}")
        for d in depths:
            check_positive_int(d, "depths")
        for w in widths:
            check_positive_int(w, "widths")
        self.in_channels = check_positive_int(in_channels, "in_channels")
        check_positive_int(classes, "classes")
        w0 = widths[0]
        if stem == "imagenet":
            self.stem = nn.Sequential(nn.Conv2d(in_channels, w0, 7, 2, 3, bias=False), nn.BatchNorm2d(w0),
                                      nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        elif stem == "small":
            self.stem = nn.Sequential(nn.Conv2d(in_channels, w0, 3, 1, 1, bias=False), nn.BatchNorm2d(w0),
                                      nn.ReLU(inplace=True))
        else:
            raise ConfigError(f"stem must be 'imagenet' or 'small', got {stem!r}")
        blocks: list[nn.Module] = []
        c = w0
        for i, (depth, width) in enumerate(zip(depths, widths, strict=True)):
            for j in range(depth):
                block = _Block(c, width, 2 if (i > 0 and j == 0) else 1, bottleneck)
                blocks.append(block)
                c = block.out_channels
        self.stages = nn.Sequential(*blocks)
        self.head = nn.Linear(c, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, D)`` of images ``(B, in_channels, H, W)``."""
        check_shape(x, "B C H W", C=self.in_channels)
        check_floating(x)
        return self.stages(self.stem(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, classes)`` of images ``(B, in_channels, H, W)``."""
        return self.head(self.features(x))


def resnet50(classes: int = 1000, in_channels: int = 3) -> ResNet:
    """ResNet-50 (bottleneck blocks ``(3, 4, 6, 3)``, widths 64-512, ImageNet stem): 25.6M parameters."""
    return ResNet((3, 4, 6, 3), (64, 128, 256, 512), classes=classes, in_channels=in_channels, bottleneck=True)


def resnet_small(classes: int = 10, in_channels: int = 1, width: int = 16) -> ResNet:
    """A ResNet-20-style network for 28-32 px images: 3 stages of 3 basic blocks, ``width``-``4·width`` channels."""
    w = check_positive_int(width, "width")
    return ResNet((3, 3, 3), (w, 2 * w, 4 * w), classes=classes, in_channels=in_channels, stem="small")
