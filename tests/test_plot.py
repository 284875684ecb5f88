"""Plots: canonical forms and metric-against-angle pictures, and ``equicanon plot`` from a checkpoint."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import equicanon as ec
from equicanon.errors import ConfigError, ShapeError
from equicanon.plots import metric_by_angle, plot_canonical_forms, plot_metric_by_angle, turn_about_axis

pytest.importorskip("matplotlib")


def test_turns_are_the_named_rotations() -> None:
    g = turn_about_axis(ec.C(4), 90.0, 2, dtype=torch.float64)
    torch.testing.assert_close(g, ec.SO2().from_angle(torch.full((2,), math.pi / 2, dtype=torch.float64)))
    r = turn_about_axis(ec.SO3(), 30.0, 1, dtype=torch.float64)
    torch.testing.assert_close(r[0] @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64),
                               torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    assert ec.SO3().check(r) is not None
    h = turn_about_axis(ec.SE3(), 30.0, 1, dtype=torch.float64)
    torch.testing.assert_close(h[0, :3, :3], r[0])
    assert torch.equal(h[0, :3, 3], torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ConfigError, match="no rotations by arbitrary angles"):
        turn_about_axis(ec.S(4), 30.0, 1)


def test_metric_by_angle_of_an_invariant_point_model_is_flat() -> None:
    torch.manual_seed(0)
    canon = ec.canonicalizers.VectorNeurons(ec.SO3(), hidden=4, k=4)
    head = nn.Sequential(nn.Flatten(), nn.Linear(3 * 10, 3))
    model = ec.Canonicalized(head, canon).double()
    x, y = torch.randn(6, 10, 3, dtype=torch.float64), torch.randint(3, (6,))
    calls: list[tuple[int, int]] = []
    degrees, scores = metric_by_angle(model, x, y, ec.actions.Points(ec.SO3()), angles=5,
                                      progress=lambda done, total: calls.append((done, total)))
    assert degrees.tolist() == [0.0, 72.0, 144.0, 216.0, 288.0]
    assert torch.all(scores == scores[0]) and 0.0 <= float(scores[0]) <= 1.0
    assert calls[-1] == (5, 5) and len(calls) == 5
    plain_degrees, plain = metric_by_angle(head.double(), x, y, ec.actions.Points(ec.SO3()), angles=5)
    assert plain_degrees.equal(degrees) and plain.shape == (5,)


def test_metric_by_angle_regression_moves_targets_and_checks_input() -> None:
    model = nn.Identity()
    x = torch.randn(4, 6, 3, dtype=torch.float64)
    _, mse = metric_by_angle(model, x, x, ec.actions.Points(ec.SE3()), "regression", angles=3,
                             output=ec.actions.Points(ec.SE3()))
    torch.testing.assert_close(mse, torch.zeros(3, dtype=torch.float64))  # identity is equivariant: targets move along
    with pytest.raises(ShapeError, match="4 inputs but 3 targets"):
        metric_by_angle(model, x, x[:3], ec.actions.Points(ec.SO3()), angles=3)
    with pytest.raises(ConfigError, match="turns images and point clouds"):
        metric_by_angle(model, x, x, ec.actions.Set(ec.S(6)), angles=3)


@pytest.mark.parametrize("shape", [(3, 1, 12, 12), (2, 3, 9, 9), (3, 20, 3), (2, 5, 2)])
def test_plot_canonical_forms_writes_a_png_for_each_kind_of_input(tmp_path: Path, shape: tuple[int, ...]) -> None:
    x = torch.rand(shape)
    path = plot_canonical_forms(x, x.flip(1), tmp_path / "sub" / "forms.png", titles=[f"#{i}" for i in range(len(x))])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_errors_are_typed(tmp_path: Path) -> None:
    with pytest.raises(ShapeError, match="differ in shape"):
        plot_canonical_forms(torch.rand(2, 1, 5, 5), torch.rand(2, 1, 6, 6), tmp_path / "a.png")
    with pytest.raises(ShapeError, match="1 to 16"):
        plot_canonical_forms(torch.rand(17, 1, 5, 5), torch.rand(17, 1, 5, 5), tmp_path / "a.png")
    with pytest.raises(ConfigError, match="2 titles for 1 inputs"):
        plot_canonical_forms(torch.rand(1, 1, 5, 5), torch.rand(1, 1, 5, 5), tmp_path / "a.png", titles=["a", "b"])
    with pytest.raises(ShapeError, match="3 angles"):
        plot_metric_by_angle(torch.tensor([0.0, 1.0, 2.0]), {"m": [0.5, 0.5]}, tmp_path / "b.png")


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning", "ignore:.*LeafSpec")
def test_equicanon_plot_draws_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_data: Path,
                                          smoke) -> None:
    pytest.importorskip("lightning")
    from equicanon.cli import main

    config = Path(__file__).resolve().parents[1] / "configs" / "rotated_fashion_mnist_c4.yaml"
    args = smoke(config, fake_data, tmp_path / "run")
    assert main(["fit", *args, "--trainer.max_steps=2", "--trainer.max_epochs=1"]) == 0
    (ckpt,) = (tmp_path / "run").rglob("last.ckpt")
    out = tmp_path / "plots"
    overrides = [a for a in args if a.startswith("--data.")]
    assert main(["plot", "--config", str(config), "--ckpt_path", str(ckpt), "--out", str(out), "--angles", "4",
                 "--samples", "5", *overrides]) == 0
    assert (out / "canonical_forms.png").is_file() and (out / "metric_by_angle.png").is_file()
    result = json.loads((out / "metric_by_angle.json").read_text())
    assert result["degrees"] == [0.0, 90.0, 180.0, 270.0] and result["metric"] == "accuracy"
    # the C4-canonicalized model is exactly invariant to quarter turns: one accuracy at every angle
    assert len(set(result["scores"])) == 1 and 0.0 <= result["scores"][0] <= 1.0
    assert main(["plot", "--config", str(config), "--ckpt_path", str(tmp_path / "nope.ckpt"), *overrides]) == 2
    assert "nope.ckpt not found" in capsys.readouterr().err
