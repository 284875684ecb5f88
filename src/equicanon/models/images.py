"""Plain image networks: a small classifier, a small feature encoder and a U-Net.

None of them is equivariant: they are the kind of network equicanon wraps.

    >>> SmallCNN(classes=10, in_channels=1)(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    >>> ConvEncoder(3, out_dim=16)(torch.rand(2, 3, 20, 24)).shape
    torch.Size([2, 16])
    >>> UNet(width=4, classes=3)(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 3, 28, 28])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, check_floating, check_positive_int, check_shape

__all__ = ["SmallCNN", "ConvEncoder", "UNet", "LeNet"]


class SmallCNN(nn.Sequential):
    """A small CNN classifier: three 3x3 conv blocks (batch norm, ReLU), two 2x2 max pools,
    global average pooling and a linear layer.

    The predictor of the demo and of the image configs. An ``nn.Sequential``, so its
    ``state_dict`` keys are ``"0.weight"``, ``"1.weight"``, ...

    Args:
        classes: output logits.
        in_channels: input image channels.
        width: channels of the first block (the others have twice as many).
        batch_norm: batch normalisation after every convolution; ``False`` puts an identity there
            (e.g. DDP on CPU, where ``SyncBatchNorm`` is unavailable).

    Shapes: ``(B, in_channels, H, W)`` (``H, W >= 4``) to logits ``(B, classes)``.
    """

    def __init__(self, classes: int = 10, in_channels: int = 1, width: int = 32, batch_norm: bool = True) -> None:
        classes = check_positive_int(classes, "classes")
        in_channels = check_positive_int(in_channels, "in_channels")
        width = check_positive_int(width, "width")
        if not isinstance(batch_norm, bool):
            raise ConfigError(f"batch_norm must be true or false, got {batch_norm!r}")

        def block(cin: int, cout: int) -> list[nn.Module]:
            norm: nn.Module = nn.BatchNorm2d(cout) if batch_norm else nn.Identity()
            return [nn.Conv2d(cin, cout, 3, padding=1), norm, nn.ReLU()]

        super().__init__(
            *block(in_channels, width), nn.MaxPool2d(2), *block(width, 2 * width), nn.MaxPool2d(2),
            *block(2 * width, 2 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, classes),
        )
        self.classes = classes
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, classes)`` of images ``x: (B, in_channels, H, W)``."""
        check_shape(x, "B C H W", C=self.in_channels)
        check_floating(x)
        return super().forward(x)


class ConvEncoder(nn.Module):
    """A small feature network: three 3x3 convolutions (ReLU), a 4x4 adaptive average pool, a linear layer.

    The default network ``φ`` of :class:`~equicanon.canonicalizers.Contrastive` for images.
    No batch norm and no dropout, so each sample's output depends on that sample only.

    Args:
        in_channels: channels of the input images.
        out_dim: size ``d`` of the output features (the attribute ``out_dim``).
        hidden: channels of the first convolution (the others have twice as many).

    Shapes: ``(N, in_channels, H, W)`` (any ``H, W >= 1``) to ``(N, out_dim)``. The convolutions run in the
    channels-last memory format whatever the input's, where oneDNN's convolutions and their backward avoid
    layout copies (Contrastive's cost with it: ``benchmarks/performance.py``, sections 3 and 4).
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
        """Features ``(N, out_dim)`` of images ``x: (N, in_channels, H, W)``."""
        check_shape(x, "N C H W", C=self.in_channels)
        return self.head(self.features(x.contiguous(memory_format=torch.channels_last)))


class LeNet(nn.Sequential):
    """A LeNet-style classifier: two 3x3 conv layers (ReLU, 2x2 max pool), a hidden dense layer, a linear layer.

    The predictor of the identity-metric experiment (experiments/figure2.py). An ``nn.Sequential``
    (``state_dict`` keys ``"0.weight"``, ``"3.weight"``, ...). Unlike :class:`SmallCNN` it has no
    global pooling: the dense layer sees the whole ``size / 4`` map.

    Args:
        classes: output logits.
        in_channels: input image channels.
        size: side of the (square) input images, divisible by 4.
        width: channels of the first convolution (the second has twice as many).
        hidden: units of the hidden dense layer.

    Shapes: ``(B, in_channels, size, size)`` to logits ``(B, classes)``.
    """

    def __init__(self, classes: int = 10, in_channels: int = 1, size: int = 28, width: int = 16,
                 hidden: int = 64) -> None:
        classes, in_channels = check_positive_int(classes, "classes"), check_positive_int(in_channels, "in_channels")
        width, hidden = check_positive_int(width, "width"), check_positive_int(hidden, "hidden")
        if check_positive_int(size, "size", minimum=4) % 4:
            raise ConfigError(f"LeNet needs an image side divisible by 4, got {size}")
        super().__init__(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * width * (size // 4) ** 2, hidden), nn.ReLU(), nn.Linear(hidden, classes),
        )
        self.classes, self.in_channels, self.size = classes, in_channels, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, classes)`` of images ``x: (B, in_channels, size, size)``."""
        check_shape(x, "B C H W", C=self.in_channels, H=self.size, W=self.size)
        check_floating(x)
        return super().forward(x)


def _unet_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class UNet(nn.Module):
    """A plain U-Net for dense prediction: images ``(B, in_channels, H, W)`` to logits ``(B, classes, H, W)``.

    Two 2x2 max-pool levels (``width``, ``2 width``, ``4 width`` channels, two 3x3 convolutions
    with batch norm each), transposed-convolution upsampling and skip connections; 66k
    parameters at ``width=12`` with one input channel and 11 classes.

    Args:
        width: channels of the first level.
        classes: logits per pixel (default 11: background and the 10 Fashion-MNIST classes of
            the segmentation experiment).
        in_channels: input image channels.

    Raises:
        ConfigError: (in forward) ``H`` or ``W`` is not divisible by 4.
    """

    def __init__(self, width: int = 16, classes: int = 11, in_channels: int = 1) -> None:
        super().__init__()
        w = check_positive_int(width, "width")
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.classes = check_positive_int(classes, "classes")
        self.enc1, self.enc2, self.bottom = _unet_block(in_channels, w), _unet_block(w, 2 * w), _unet_block(2 * w, 4 * w)
        self.up2, self.dec2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2), _unet_block(4 * w, 2 * w)
        self.up1, self.dec1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2), _unet_block(2 * w, w)
        self.head = nn.Conv2d(w, self.classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, classes, H, W)`` of images ``x: (B, in_channels, H, W)``."""
        sizes = check_shape(x, "B C H W", C=self.in_channels)
        if sizes["H"] % 4 or sizes["W"] % 4:
            raise ConfigError(f"UNet needs heights and widths divisible by 4, got {sizes['H']}x{sizes['W']}")
        a = self.enc1(x)
        b = self.enc2(F.max_pool2d(a, 2))
        c = self.bottom(F.max_pool2d(b, 2))
        d = self.dec2(torch.cat([self.up2(c), b], dim=1))
        return self.head(self.dec1(torch.cat([self.up1(d), a], dim=1)))
