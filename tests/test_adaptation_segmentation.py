"""Experiment 3 of the pretrained adaptation study (benchmarks/adaptation_segmentation.py): dense outputs.

The segmentation labels and metrics, the evaluation of rotated images against their own ground truth,
the equivariance of a canonicalized U-Net whose logit maps are mapped back through the pose, and the
script's quick run, config and missing-data error.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import equicanon as ec
from equicanon.data.mnist import DataNotFoundError
from equicanon.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _load_script():  # benchmarks/ is not a package: import the script as a module
    name = "adaptation_segmentation"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


seg = _load_script()


def _have_fashion_mnist() -> bool:
    try:
        ec.data.load_fashion_mnist("test")
    except DataNotFoundError:
        return False
    return True


needs_data = pytest.mark.skipif(not _have_fashion_mnist(), reason="Fashion-MNIST files absent: "
                                "`sudo apt-get install dataset-fashion-mnist` (or set EQUICANON_DATA)")


# --- labels and metrics -------------------------------------------------------------------------------------

def test_labels_are_class_plus_one_above_the_threshold() -> None:
    images = torch.tensor([[[0.0, 0.1, 0.2], [0.5, 0.15, 1.0]]]).reshape(1, 1, 2, 3).repeat(2, 1, 1, 1)
    labels = seg.segmentation_labels(images, torch.tensor([0, 9]), threshold=0.15)
    assert labels.dtype == torch.int64
    assert labels[0].tolist() == [[0, 0, 1], [1, 0, 1]]
    assert labels[1].tolist() == [[0, 0, 10], [10, 0, 10]]


def test_padding_centres_the_item() -> None:
    items = torch.full((1, 28, 28), 255, dtype=torch.uint8)
    padded = seg.pad_images(items, 36)
    assert padded.shape == (1, 1, 36, 36) and padded.dtype == torch.float32
    assert padded[0, 0, 4:32, 4:32].eq(1).all() and padded.sum() == 28 * 28
    assert torch.equal(padded, torch.rot90(padded, 1, (-2, -1)))  # centred: a quarter turn keeps it
    with pytest.raises(ConfigError, match="evenly"):
        seg.pad_images(items, 35)


def test_scores_from_a_known_confusion() -> None:
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 0]])
    assert seg.scores(seg.confusion_matrix(target, target, 3)) == {"miou": 1.0, "pixel_acc": 1.0, "fg_acc": 1.0}
    pred = torch.tensor([[0, 0, 1, 2], [2, 2, 2, 0]])  # one pixel of class 1 called 2
    s = seg.scores(seg.confusion_matrix(pred, target, 3))
    # IoU: class 0: 3/3, class 1: 1/2, class 2: 3/4; pixels: 7/8; item pixels: 4/5
    assert s["miou"] == pytest.approx((1 + 0.5 + 0.75) / 3)
    assert s["pixel_acc"] == pytest.approx(7 / 8) and s["fg_acc"] == pytest.approx(4 / 5)


class _Oracle(nn.Module):
    """Logits of the true labels of whatever image it sees (every image here is of class ``cls``)."""

    def __init__(self, cls: int) -> None:
        super().__init__()
        self.cls = cls

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        labels = seg.segmentation_labels(x, torch.full((x.shape[0],), self.cls), 0.15)
        return nn.functional.one_hot(labels, seg.CLASSES).permute(0, 3, 1, 2).float()


def test_evaluation_compares_each_rotated_image_with_its_own_labels() -> None:
    gen = torch.Generator().manual_seed(0)
    images = seg.pad_images((torch.rand(6, 28, 28, generator=gen) * 255).to(torch.uint8), 32)
    classes = torch.full((6,), 4)
    group = ec.C(8)
    perfect = seg.evaluate(_Oracle(4), images, classes, group, 0.15, batch_size=4)
    assert [r["degrees"] for r in perfect["per_element"]] == [45.0 * k for k in range(8)]
    assert all(r["miou"] == 1.0 and r["pixel_acc"] == 1.0 for r in perfect["per_element"])
    wrong_class = seg.summarize(seg.evaluate(_Oracle(3), images, classes, group, 0.15))
    assert wrong_class["fg_acc_all"] == 0.0 and wrong_class["pixel_acc_all"] < 1.0
    assert wrong_class["miou_90"] == pytest.approx(1 / 3)  # background right; classes 4 and 5 have IoU 0


# --- equivariance of the dense model ------------------------------------------------------------------------

def _tiny_unet() -> nn.Module:
    torch.manual_seed(0)
    return seg.UNet(width=4)


@pytest.mark.parametrize("n", [4, 8])
def test_canonicalized_unet_maps_masks_back_through_the_pose(n: int) -> None:
    """f(g·x) = g⋆f(x) for the script's model, untrained, exactly on quarter turns (float64)."""
    group = ec.C(n)
    model = ec.adapt_pretrained(_tiny_unet(), group, in_channels=1, output=ec.actions.Image(group), crop=None,
                                resize=None, hidden=2, layers=2, kernel_size=3)
    x = torch.randn(2, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    quarter_turns = torch.arange(0, n, n // 4)
    report = ec.testing.assert_equivariant(model, group, ec.actions.Image(group), ec.actions.Image(group), x,
                                           elements=quarter_turns)
    assert report.max_error < 1e-9
    # the bare U-Net is not equivariant: the canonicalizer is what makes the wrapper so
    bare = ec.testing.equivariance_error(_tiny_unet().eval(), group, ec.actions.Image(group), ec.actions.Image(group),
                                         x, elements=quarter_turns)
    assert not bare.passed


# --- the script ---------------------------------------------------------------------------------------------

def test_config_states_the_experiment() -> None:
    config = yaml.safe_load(seg.CONFIG.read_text())
    assert config["adapt"]["group"] == 8 and config["adapt"]["transform_inputs"] is True
    assert config["data"]["size"] == 36 and config["baseline"]["enabled"] is True
    full = seg.load_config()
    assert full["adapt"]["steps"] >= 100 and full["unet"]["steps"] >= 500
    quick = seg.load_config(quick=True, overrides=[seg.parse_assignment("adapt.steps=1")])
    assert quick["adapt"]["steps"] == 1 and quick["unet"]["steps"] < full["unet"]["steps"]
    with pytest.raises(ConfigError, match=r"unknown setting adapt\.'step'"):
        seg.load_config(overrides=[seg.parse_assignment("adapt.step=1")])
    with pytest.raises(ConfigError, match="threshold"):
        seg.load_config(overrides=[{"data": {"threshold": 2}}])


def test_missing_data_exits_with_the_loaders_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert seg.main(["--quick", "--data-dir", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte.gz not found" in err and "dataset-fashion-mnist" in err
    assert not (tmp_path / "out").exists()


@needs_data
def test_quick_run_writes_tables_json_and_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert seg.main(["--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    record = json.loads((tmp_path / "segmentation.json").read_text())
    assert (tmp_path / "segmentation.png").stat().st_size > 10_000
    assert record["group"] == "C(8)" and set(record["results"]) == {"unet", "canonicalized", "augmented"}
    for key, result in record["results"].items():
        rows = result["per_element"]
        assert [r["degrees"] for r in rows] == [45.0 * k for k in range(8)]
        assert all(0 <= r[m] <= 1 for r in rows for m in ("miou", "pixel_acc", "fg_acc"))
        assert ("pose_acc" in rows[0]) == (key == "canonicalized")
        assert result["summary"]["miou_upright"] == rows[0]["miou"]
    assert record["table"] in printed and "| (b) U-Net + canonicalizer with prior" in printed
    assert record["config"]["adapt"]["steps"] == 2  # the quick section was applied
