"""``equicanon fit | validate | test --config configs/X.yaml``: every config runs end to end (smoke sizes,
synthetic IDX files), checkpoints load back, and bad configs fail with equicanon's errors."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import pytest
import torch
import yaml

import equicanon as ec
from equicanon.errors import ConfigError

pytest.importorskip("lightning")
pytest.importorskip("jsonargparse")
from equicanon.cli import main
from equicanon.data import DataNotFoundError
from equicanon.training.cli import build_cli
from equicanon.training.data import FashionMNISTDataModule

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
_NO_QM9 = pytest.mark.skipif(importlib.util.find_spec("qm9pack") is None,
                             reason="qm9pack is not installed (pip install qm9pack)")
#: every config, the QM9 ones skipped where their data package is missing
RUNNABLE = [pytest.param(c, marks=_NO_QM9) if c.stem.startswith("qm9") else c for c in CONFIGS]


def test_there_are_configs() -> None:
    assert any(c.name == "rotated_fashion_mnist_c4.yaml" for c in CONFIGS)


@pytest.mark.parametrize("config", RUNNABLE, ids=lambda p: p.stem)
def test_config_fits_then_validates_and_tests_from_checkpoint(config: Path, fake_data: Path, tmp_path: Path, smoke,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    args = smoke(config, fake_data, tmp_path)
    assert main(["fit", *args, "--trainer.max_steps=2", "--trainer.max_epochs=1"]) == 0
    checkpoints = sorted(tmp_path.rglob("*.ckpt"))
    assert checkpoints, f"fit with {config.name} wrote no checkpoint under {tmp_path}"
    state = torch.load(checkpoints[0], map_location="cpu", weights_only=False)
    assert state["global_step"] == 2
    for stage in ("validate", "test"):
        assert main([stage, *args, f"--ckpt_path={checkpoints[0]}"]) == 0
    out = capsys.readouterr().out
    assert "test/acc_transformed" in out or "test/mse_transformed" in out
    if "canonicalizer:" in config.read_text():  # the pose metrics exist only where a canonicalizer gives poses
        assert "val/pose_agreement" in out


GROUP = "--model.model.init_args.canonicalizer.init_args.group"


def test_unknown_group_is_a_config_error_naming_close_matches(fake_data: Path, tmp_path: Path, smoke,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    args = [*smoke(ROOT / "configs" / "rotated_fashion_mnist_c4.yaml", fake_data, tmp_path), f"{GROUP}=S02"]
    assert main(["fit", *args]) == 2
    assert "did you mean 'SO2'" in capsys.readouterr().err


def _model(config: Path, root: Path) -> torch.nn.Module:
    """The model a config builds (seeded by its ``seed_everything``), without data or training."""
    args = ["--config", str(config), "--trainer.logger=false", f"--trainer.default_root_dir={root}"]
    return build_cli(args, run=False).model.model


def _same_parameters(built: torch.nn.Module, expected: torch.nn.Module) -> None:
    a, b = built.state_dict(), expected.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a), "same layout, other weights"


def _seed(seed: int = 0) -> None:
    torch.manual_seed(seed)


def _gconv(group: str, **kwargs: object) -> ec.canonicalizers.GroupConv:
    options = {"hidden": 16, "layers": 3, "kernel_size": 3, "crop": None, "resize": None, "temperature": 1.0,
               "gumbel": False, "padding": "zeros", "rotations": 8, "batch_norm": True, "filters": "auto",
               "pool": False, **kwargs}
    return ec.canonicalizers.GroupConv(group, 1, **options)  # type: ignore[arg-type]


def _cnn_config(group: str) -> torch.nn.Module:
    _seed()
    predictor = ec.models.SmallCNN(10, 1, 32, True)
    return ec.Canonicalized(predictor, _gconv(group))


def _contrastive_config() -> torch.nn.Module:
    _seed()
    predictor = ec.models.SmallCNN(10, 1, 32, True)
    network = ec.models.ConvEncoder(1, out_dim=64, hidden=16)
    return ec.Canonicalized(predictor, ec.canonicalizers.Contrastive("C4", network, in_channels=1, embed_dim=32))


def _points_config(group: str) -> torch.nn.Module:
    _seed()
    predictor = ec.models.PointEncoder(3, out_dim=10, hidden=128)
    return ec.Canonicalized(predictor, ec.canonicalizers.VectorNeurons(group, hidden=16, layers=2, k=8))


def _set_config() -> torch.nn.Module:
    _seed()
    predictor = ec.models.SetMLP(9, 4, 10, hidden=128, layers=2)
    return ec.Canonicalized(predictor, ec.canonicalizers.Sort("S9", 4, hidden=32, layers=2, temperature=1.0))


def _nbody_config() -> torch.nn.Module:
    _seed()
    predictor = ec.models.NBodyTransformer(1, width=64, depth=2, heads=4)
    canon = ec.canonicalizers.ParticleVectorNeurons("SE3", 1, hidden=32, layers=2)
    return ec.Canonicalized(predictor, canon, output=ec.actions.Points(ec.SE3()))


def _qm9_config() -> torch.nn.Module:
    _seed()
    predictor = ec.models.MoleculeTransformer(5, 3, width=64, depth=3, heads=4)
    canon = ec.canonicalizers.ParticleVectorNeurons("E3", 5, hidden=32, layers=2, batch_norm=True)
    return ec.Canonicalized(predictor, canon)


#: what each config builds, written with the library's classes (the settings its former per-task class had)
EXPECTED = {
    "rotated_fashion_mnist_c4": lambda: _cnn_config("C4"),
    "rotated_mnist_c4": lambda: _cnn_config("C4"),
    "rotated_mnist_c8_random": lambda: _cnn_config("C8"),
    "rotated_mnist_d4": lambda: _cnn_config("D4"),
    "contrastive_fashion_mnist_c4": _contrastive_config,
    "pointcloud_vn_so3": lambda: _points_config("SO3"),
    "pointcloud_vn_o3": lambda: _points_config("O3"),
    "set_sort_sn": _set_config,
    "nbody_se3": _nbody_config,
    "qm9_gap_canonicalized": _qm9_config,
}

#: configs without a canonicalizer (the QM9 baselines: tests/test_molecules_task.py checks what they build)
UNCANONICALIZED = {"qm9_gap_plain", "qm9_gap_augmented", "qm9_gap_frames"}


def test_every_config_is_checked_here_or_in_test_image_configs() -> None:
    assert {c.stem for c in CONFIGS} == {*EXPECTED, *UNCANONICALIZED, "pretrained_efficientnet_fashion_mnist_c8"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_builds_a_canonicalized_model_of_library_parts(name: str, tmp_path: Path) -> None:
    model = _model(ROOT / "configs" / f"{name}.yaml", tmp_path)
    assert type(model) is ec.Canonicalized
    _same_parameters(model, EXPECTED[name]())


def test_print_config_shows_every_canonicalizer_and_predictor_argument(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", str(ROOT / "configs" / "rotated_fashion_mnist_c4.yaml"), "--print_config"])
    assert stop.value.code in (0, None)
    model = yaml.safe_load(capsys.readouterr().out)["model"]["model"]
    assert model["class_path"] == "equicanon.Canonicalized"
    parts = model["init_args"]
    for key, path, cls in (("canonicalizer", "equicanon.canonicalizers.GroupConv", ec.canonicalizers.GroupConv),
                           ("predictor", "equicanon.models.SmallCNN", ec.models.SmallCNN)):
        assert parts[key]["class_path"] == path
        assert set(parts[key]["init_args"]) == set(inspect.signature(cls).parameters)
    assert parts["canonicalizer"]["init_args"]["group"] == "C4"


@pytest.mark.parametrize("name", ec.canonicalizers.available())
def test_every_canonicalizer_argument_is_a_config_key(name: str) -> None:
    from jsonargparse import ArgumentParser

    cls = ec.canonicalizers.entry(name).cls
    parser = ArgumentParser()
    parser.add_class_arguments(cls, "canonicalizer")  # jsonargparse leaves out arguments whose type it cannot read
    assert set(parser.get_defaults().canonicalizer.keys()) == set(inspect.signature(cls).parameters)


def test_missing_data_is_data_not_found(tmp_path: Path, capsys: pytest.CaptureFixture[str], smoke) -> None:
    dm = FashionMNISTDataModule(str(tmp_path / "empty"), train_size=8, val_size=8)
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        dm.setup("fit")
    args = smoke(CONFIGS[0], tmp_path / "empty", tmp_path)
    assert main(["fit", *args]) == 2
    assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().err


@pytest.mark.parametrize("rotate", [None, "SO2", "C4", "D4"])
def test_datamodule_splits_are_disjoint_and_rotated_as_asked(fake_data: Path, rotate: str | None) -> None:
    dm = FashionMNISTDataModule(str(fake_data), train_size=16, val_size=8, test_size=8, batch_size=4,
                                rotate=rotate)
    dm.setup(None)
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (4, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert len(dm.train_set) == 16 and len(dm.val_set) == 8 and len(dm.test_set) == 8  # type: ignore[arg-type]
    upright = ec.data.load_fashion_mnist("train", fake_data)[0][-8:, None].float() / 255
    val_x = dm.val_set.tensors[0]  # type: ignore[union-attr]
    assert torch.equal(val_x, upright) == (rotate is None)
    if rotate in ("C4", "D4"):  # exact index operations: the same pixel values, moved
        assert torch.equal(val_x.flatten(1).sort(dim=1).values, upright.flatten(1).sort(dim=1).values)
    with pytest.raises(ConfigError, match="did you mean"):
        FashionMNISTDataModule(rotate="C4x")


@pytest.mark.parametrize(("old", "new"), [("random", "'SO2'"), ("none", "null")])
def test_old_rotate_spellings_say_what_to_write_now(old: str, new: str) -> None:
    with pytest.raises(ConfigError, match=f"rotate: '{old}' is no longer accepted; write {new}"):
        FashionMNISTDataModule(rotate=old)
    with pytest.raises(ConfigError, match="not accepted here: expected a planar group"):
        FashionMNISTDataModule(rotate="SO3")
