"""``equicanon plot --config X.yaml --ckpt_path C.ckpt``: the demo's pictures for a trained checkpoint.

Builds the model and data module from the config (as ``equicanon fit`` does), loads the
checkpoint's weights, and draws, from the test split:

- ``canonical_forms.png`` — test inputs beside their canonical forms (images, point clouds,
  particles or sets);
- ``metric_by_angle.png`` and ``metric_by_angle.json`` — accuracy (or MSE) of the model on the
  test inputs turned by equally spaced angles (images in the plane, point clouds about z).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from ..actions import Image, Particles, Points
from ..data import DataNotFoundError
from ..errors import ConfigError, check_positive_int
from ..plots import metric_by_angle, plot_canonical_forms, plot_metric_by_angle
from .cli import build_cli
from .module import CanonicalizationModule

__all__ = ["plot_checkpoint"]


def _progress(done: int, total: int) -> None:
    print(f"\r  angles: {done}/{total}", end="\n" if done == total else "", flush=True, file=sys.stderr)


def plot_checkpoint(config: str | Path, ckpt_path: str | Path, out: str | Path = "equicanon-plots", *,
                    samples: int = 8, angles: int = 24, overrides: list[str] | None = None,
                    verbose: bool = True) -> dict[str, Any]:
    """Draw the pictures of the module docstring for a checkpoint of ``config``; return what was measured.

    Args:
        config: the YAML config the checkpoint was trained with.
        ckpt_path: a Lightning checkpoint (``.ckpt``) of that config.
        out: folder for the PNGs and ``metric_by_angle.json``.
        samples: test inputs drawn beside their canonical forms (1 to 16).
        angles: equally spaced angles of the sweep (0 skips it).
        overrides: further ``--key=value`` options, as for ``equicanon fit`` (e.g. ``--data.data_dir=...``).

    Returns:
        ``{"files": [...], "degrees": [...], "scores": [...], "metric": "accuracy" | "mse"}``
        (``degrees``/``scores`` empty when the inputs cannot be turned, e.g. sets).
    """
    samples = check_positive_int(samples, "samples")
    angles = check_positive_int(angles, "angles", minimum=0)
    path = Path(ckpt_path)
    if not path.is_file():
        raise DataNotFoundError(f"checkpoint {path} not found; train one with `equicanon fit --config {config}`")
    cli = build_cli(["--config", str(config), *(overrides or [])], run=False)
    module = cli.model
    if not isinstance(module, CanonicalizationModule):  # pragma: no cover - build_cli always makes one
        raise ConfigError(f"expected a CanonicalizationModule, got {type(module).__name__}")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if "state_dict" not in state:
        raise ConfigError(f"{path} is not a Lightning checkpoint (no 'state_dict')")
    module.load_state_dict(state["state_dict"])
    module.eval()
    data = cli.datamodule
    data.setup("test")
    x, y = data.test_set.tensors[:2]
    out = Path(out)
    files: list[str] = []
    canon = module.canonicalizer
    if canon is not None:
        shown = x[:min(samples, 16)]
        with torch.no_grad():
            canonical = canon(shown).canonical
        titles = [f"label {int(v)}" for v in y[:len(shown)]] if module.task == "classification" else None
        files.append(str(plot_canonical_forms(shown, canonical, out / "canonical_forms.png", titles=titles)))
    result: dict[str, Any] = {"files": files, "degrees": [], "scores": [],
                              "metric": "accuracy" if module.task == "classification" else "mse"}
    action = module.val_action
    if angles and isinstance(action, (Image, Points, Particles)):
        output = getattr(module.model, "output", None) if module.task == "regression" else None
        degrees, scores = metric_by_angle(module.model, x, y, action, module.task, angles=angles, output=output,
                                          progress=_progress if verbose else None)
        accuracy = module.task == "classification"
        files.append(str(plot_metric_by_angle(degrees, {type(module.model).__name__: scores}, out / "metric_by_angle.png",
                                              ylabel="accuracy (%)" if accuracy else "MSE", percent=accuracy,
                                              title=f"Test {result['metric']} against rotation angle")))
        result.update(degrees=degrees.tolist(), scores=scores.tolist())
        (out / "metric_by_angle.json").write_text(json.dumps(result, indent=2) + "\n")
        files.append(str(out / "metric_by_angle.json"))
    if verbose:
        for f in files:
            print(f"wrote {f}")
    return result
