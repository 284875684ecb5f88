"""Real photos (scikit-image's bundled ones), square crops masked to a disk, and colour jitter.

The photos of experiment 2 of docs/adaptation.md: nothing is downloaded, the images ship with
``scikit-image``. Crops are masked to their inscribed disk, so a rotation by any angle keeps the
content and shows no padding (:func:`disk_mask`); :class:`ColorJitter` is a training-time
augmentation that never rotates.

    >>> import torch
    >>> photo = torch.rand(3, 40, 60)
    >>> crops, owner = random_crops([photo], 2, 16, 0.5, torch.Generator().manual_seed(0))
    >>> crops.shape, owner.tolist()
    (torch.Size([2, 3, 16, 16]), [0, 0])
    >>> bool((crops == disk_mask(crops)).all())
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, MissingDependencyError, check_positive_int, check_shape

__all__ = ["load_photos", "disk_mask", "random_crops", "ColorJitter"]


def load_photos(names: Sequence[str]) -> list[torch.Tensor]:
    """scikit-image's bundled photos as RGB tensors ``(3, H, W)`` in ``[0, 1]`` (grey ones repeated to RGB).

    ``names`` are functions of ``skimage.data`` (``"astronaut"``, ``"chelsea"``, ``"coffee"``, ...);
    ``"motorcycle"`` is the left image of ``skimage.data.stereo_motorcycle()``. Nothing is downloaded.

    Raises:
        MissingDependencyError: scikit-image is not installed.
        ConfigError: ``skimage.data`` has no photo of that name.
    """
    try:
        from skimage import data
    except ImportError as err:
        raise MissingDependencyError("the photos come from scikit-image: pip install scikit-image") from err
    photos = []
    for name in names:
        loader = getattr(data, "stereo_motorcycle" if name == "motorcycle" else name, None)
        if loader is None:
            raise ConfigError(f"skimage.data has no photo {name!r}")
        array = np.asarray(loader()[0] if name == "motorcycle" else loader())
        image = torch.from_numpy(array.astype(np.float32) / (255.0 if array.dtype == np.uint8 else 1.0))
        image = image[..., None].expand(-1, -1, 3) if image.ndim == 2 else image[..., :3]
        photos.append(image.permute(2, 0, 1).contiguous())
    return photos


def disk_mask(images: torch.Tensor) -> torch.Tensor:
    """``images (B, C, S, S)`` with the pixels outside the inscribed disk set to 0 (a new tensor).

    The disk is centred on the grid centre, so it is symmetric under 90° turns and flips, and a
    rotation by any angle maps it into itself: rotated masked images need no padding.
    """
    check_shape(images, "B C S S")
    size = images.shape[-1]
    coord = torch.arange(size, dtype=images.dtype, device=images.device) - (size - 1) / 2
    inside = coord[:, None] ** 2 + coord[None, :] ** 2 <= (size / 2) ** 2
    return images * inside


def random_crops(photos: Sequence[torch.Tensor], count: int, size: int, min_scale: float,
                 generator: torch.Generator, *, centre_first: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` square crops of each photo, side ``U(min_scale, 1)`` times its short side, resized to ``size``.

    Args:
        photos: images ``(3, H, W)`` in ``[0, 1]``.
        count: crops per photo.
        size: side of the crops after resizing (bilinear, antialiased when shrinking).
        min_scale: smallest crop side, as a fraction of the photo's short side, in ``(0, 1]``.
        generator: draws the sides and positions (three numbers per crop).
        centre_first: crop 0 of each photo is its centre square of full short side.

    Returns:
        crops ``(len(photos) * count, 3, size, size)``, masked to the disk (:func:`disk_mask`), and the
        index of each crop's photo ``(len(photos) * count,)``.
    """
    check_positive_int(count, "count")
    if not 0 < min_scale <= 1:
        raise ConfigError(f"min_scale must be in (0, 1], got {min_scale!r}")
    crops, owner = [], []
    for index, photo in enumerate(photos):
        h, w = photo.shape[-2:]
        for k in range(count):
            u = torch.rand(3, generator=generator).tolist()
            side = min(h, w) if centre_first and k == 0 else round(min(h, w) * (min_scale + (1 - min_scale) * u[0]))
            top, left = ((h - side) // 2, (w - side) // 2) if centre_first and k == 0 else \
                (int(u[1] * (h - side + 1)), int(u[2] * (w - side + 1)))
            patch = photo[None, :, top:top + side, left:left + side]
            crops.append(F.interpolate(patch, size=(size, size), mode="bilinear", align_corners=False,
                                       antialias=side > size))
            owner.append(index)
    return disk_mask(torch.cat(crops).clamp(0, 1)), torch.tensor(owner)


class ColorJitter:
    """Training-time augmentation ``augment(x, generator)`` (e.g. for :func:`equicanon.training.fit`); never rotates.

    Per image: brightness, contrast (about the image mean) and saturation (about its grey version)
    factors ``U(1 - a, 1 + a)``, a left-right mirror with probability 1/2 (``hflip``), then the disk mask
    again (contrast shifts would light up the corners). Four numbers per image from ``generator``.

    Shapes: ``x: (B, 3, S, S)`` in ``[0, 1]`` to a new tensor of the same shape.
    """

    def __init__(self, brightness: float, contrast: float, saturation: float, hflip: bool) -> None:
        self.amounts = (float(brightness), float(contrast), float(saturation))
        self.hflip = bool(hflip)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Jittered, maybe mirrored, masked copies of ``x (B, 3, S, S)``."""
        b = x.shape[0]
        draws = torch.rand(b, 4, generator=generator).to(x)
        f = 1 + (2 * draws[:, :3] - 1) * torch.tensor(self.amounts).to(x)
        out = x * f[:, 0, None, None, None]
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = mean + (out - mean) * f[:, 1, None, None, None]
        grey = out.mean(dim=1, keepdim=True)
        out = grey + (out - grey) * f[:, 2, None, None, None]
        if self.hflip:
            out = torch.where(draws[:, 3, None, None, None] < 0.5, out.flip(-1), out)
        return disk_mask(out.clamp(0, 1))
