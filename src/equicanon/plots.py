"""Pictures of what a canonicalizer does: inputs beside their canonical forms, and the task
metric against the rotation of the input.

Needs matplotlib (``pip install "equicanon[plot]"``). ``equicanon plot`` draws both from a
training checkpoint; ``equicanon demo`` uses the same functions.

    >>> import tempfile, torch, equicanon as ec
    >>> from equicanon.plots import metric_by_angle, plot_canonical_forms, plot_metric_by_angle
    >>> canon = ec.canonicalizers.GroupConv(ec.C(4), in_channels=1)
    >>> model = ec.Canonicalized(ec.models.SmallCNN(classes=3, width=4), canon).eval()
    >>> x, y = torch.rand(4, 1, 16, 16), torch.randint(0, 3, (4,))
    >>> folder = tempfile.TemporaryDirectory()
    >>> plot_canonical_forms(x, model.canonicalizer(x).canonical, f"{folder.name}/forms.png").name
    'forms.png'
    >>> angles, scores = metric_by_angle(model, x, y, ec.actions.Image(ec.SO2()), "classification", angles=8)
    >>> angles.shape, scores.shape
    (torch.Size([8]), torch.Size([8]))
    >>> plot_metric_by_angle(angles, {"canonicalized": scores}, f"{folder.name}/accuracy.png").name
    'accuracy.png'
    >>> folder.cleanup()
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._optional import require_matplotlib
from .actions import Action, Image, Particles, Points
from .errors import ConfigError, ShapeError, check_choice
from .groups import SO2, SO3, Group

__all__ = ["plot_canonical_forms", "plot_rows", "metric_by_angle", "plot_metric_by_angle", "turn_about_axis"]


def _panel(ax: Any, sample: torch.Tensor, kind: str) -> None:
    # ax: a matplotlib Axes, or Axes3D for points (Any: matplotlib is an optional extra, imported when called)
    data = sample.detach().float().cpu()
    if kind == "image":
        picture = data[0] if data.shape[0] == 1 else data[:3].permute(1, 2, 0).clamp(0, 1)
        ax.imshow(picture.numpy(), cmap="gray")
    elif kind == "points":
        xs, ys, zs = data[:, 0].numpy(), data[:, 1].numpy(), data[:, 2].numpy()
        ax.scatter(xs, ys, zs, s=3, c=zs, cmap="viridis")
        ax.set_box_aspect((1, 1, 1))
    else:
        ax.imshow(data.numpy(), cmap="coolwarm", aspect="auto")
    ax.set_xticks([])
    ax.set_yticks([])
    if kind == "points":
        ax.set_zticks([])


def _save(plt: Any, fig: Any, path: str | Path) -> Path:  # matplotlib.pyplot and a Figure
    """Lay out ``fig``, write it to ``path`` as a PNG (creating folders), close it; return the path."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _kind(x: torch.Tensor, kind: str) -> str:
    if kind != "auto":
        return check_choice(kind, ("image", "points", "matrix"), "kind")
    if x.ndim == 4:
        return "image"
    if x.ndim == 3 and x.shape[-1] >= 3:
        return "points"
    if x.ndim == 3:
        return "matrix"
    raise ShapeError(f"cannot draw inputs of shape {tuple(x.shape)}: expected images (B, C, H, W), point clouds "
                     f"(B, N, 3+) or sets (B, N, d)")


def plot_canonical_forms(inputs: torch.Tensor, canonical: torch.Tensor, path: str | Path, *,
                         titles: Sequence[str] | None = None, kind: str = "auto",
                         title: str = "Inputs (top) and their canonical forms (bottom)") -> Path:
    """Draw each input above its canonical form and save a PNG.

    Args:
        inputs: ``(B, C, H, W)`` images, ``(B, N, 3+k)`` point clouds or particles (the first
            three columns are drawn as points), or ``(B, N, d)`` sets (drawn as matrices); at most 16.
        canonical: the canonical forms, of the same shape.
        path: the PNG to write (folders are created).
        titles: one caption per input (e.g. class and angle).
        kind: ``"auto"`` (from the shape), ``"image"``, ``"points"`` or ``"matrix"``.

    Returns:
        ``path``.
    """
    return plot_rows({"input": inputs, "canonical": canonical}, path, titles=titles, kind=kind, title=title)


def plot_rows(rows: Mapping[str, torch.Tensor], path: str | Path, *, titles: Sequence[str] | None = None,
              kind: str = "auto", title: str = "") -> Path:
    """Draw one row per entry of ``rows`` (label → samples of one shape), sample ``i`` in column ``i``; save a PNG.

    E.g. ``{"input": x, "canonical, no prior": a, "canonical, prior": b}`` for images ``(B, C, H, W)``;
    samples as in :func:`plot_canonical_forms`, at most 16 columns.
    """
    if not rows:
        raise ConfigError("rows: give at least one row of samples")
    first = next(iter(rows.values()))
    for label, samples in rows.items():
        if samples.shape != first.shape:
            raise ShapeError(f"rows differ in shape: {label!r} has {tuple(samples.shape)}, the first row "
                             f"{tuple(first.shape)}")
    if not 1 <= len(first) <= 16:
        raise ShapeError(f"draw 1 to 16 samples, got {len(first)}")
    if titles is not None and len(titles) != len(first):
        raise ConfigError(f"{len(titles)} titles for {len(first)} inputs")
    drawn = _kind(first, kind)
    plt = require_matplotlib()
    n, m = len(first), len(rows)
    fig = plt.figure(figsize=(1.5 * n + 0.9, 1.55 * m + 0.3))
    for row, (label, samples) in enumerate(rows.items()):
        for i in range(n):
            ax = fig.add_subplot(m, n, row * n + i + 1, projection="3d" if drawn == "points" else None)
            _panel(ax, samples[i], drawn)
            if row == 0 and titles is not None:
                ax.set_title(titles[i], fontsize=8)
            if i == 0 and drawn != "points":
                ax.set_ylabel(label, fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(plt, fig, path)


def turn_about_axis(group: Group, degrees: float, batch: int, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``batch`` copies of the element of ``group`` that turns by ``degrees``: in the plane for planar
    groups, about the z axis for 3-D groups (homogeneous, no translation, for SE3/E3).

    Raises:
        ConfigError: ``group`` has no rotations by arbitrary angles (e.g. S(n)).
    """
    angle = torch.full((batch,), math.radians(degrees), dtype=torch.float64)
    if group.kind == "planar":
        g = SO2().from_angle(angle)
    elif group.dim == 3 and not group.is_finite:
        c, s = torch.cos(angle), torch.sin(angle)
        g = torch.zeros(batch, 3, 3, dtype=torch.float64)
        g[:, 0, 0], g[:, 0, 1], g[:, 1, 0], g[:, 1, 1], g[:, 2, 2] = c, -s, s, c, 1.0
        if group.has_translations:
            homogeneous = torch.eye(4, dtype=torch.float64).repeat(batch, 1, 1)
            homogeneous[:, :3, :3] = g
            g = homogeneous
    else:
        raise ConfigError(f"{group} has no rotations by arbitrary angles to sweep; metric_by_angle needs a planar or 3-D group")
    return g.to(dtype)


def _sweep_action(action: Action) -> Action:
    """The action with its group widened to every rotation (SO2 for images, SO3/SE3 kept for points)."""
    group = action.group
    if isinstance(action, Image):
        return Image(SO2(), padding=action.padding, mode=action.mode)
    if isinstance(action, (Points, Particles)) and group is not None and not group.is_finite:
        return type(action)(group if group.dim == 3 else SO3())
    raise ConfigError(f"metric_by_angle turns images and point clouds; got {action!r}")


@torch.no_grad()
def metric_by_angle(model: nn.Module, x: torch.Tensor, y: torch.Tensor, action: Action, task: str = "classification", *,
                    angles: int = 24, batch: int = 256, output: Action | None = None,
                    progress: Callable[[int, int], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's accuracy (or MSE) on ``x`` turned by each of ``angles`` equally spaced angles.

    Images are turned in the plane (interpolated; multiples of 90° exact), point clouds and
    particles about the z axis.

    Args:
        model: maps ``x`` to logits ``(B, K)`` (classification) or predictions shaped like ``y``.
        x, y: inputs and targets (labels ``(B,)`` or regression targets).
        action: how turns act on ``x`` (e.g. the canonicalizer's action).
        task: ``"classification"`` or ``"regression"``.
        angles: number of angles in ``[0°, 360°)``.
        output: for regression, how turns act on targets (e.g. ``Points(SE3())``); default: invariant targets.
        progress: called as ``progress(done, angles)`` after each angle.

    Returns:
        ``degrees (angles,)`` and ``scores (angles,)`` float64: accuracy in ``[0, 1]`` or MSE.
    """
    check_choice(task, ("classification", "regression"), "task")
    if len(x) != len(y):
        raise ShapeError(f"{len(x)} inputs but {len(y)} targets")
    sweep = _sweep_action(action)
    target_action = None if output is None else _sweep_action(output) if output.group is not None else None
    assert sweep.group is not None
    degrees = torch.arange(angles, dtype=torch.float64) * (360.0 / angles)
    was_training = model.training
    model.eval()
    scores = []
    try:
        for k, angle in enumerate(degrees.tolist()):
            total, count = 0.0, 0
            for i in range(0, len(x), batch):
                xb, yb = x[i:i + batch], y[i:i + batch]
                g = turn_about_axis(sweep.group, angle, len(xb), dtype=xb.dtype).to(xb.device)
                prediction = model(sweep(g, xb))
                if task == "classification":
                    total += float((prediction.argmax(dim=1) == yb).sum())
                else:
                    moved = target_action(g, yb) if target_action is not None else yb
                    total += float(F.mse_loss(prediction, moved.to(prediction.dtype), reduction="sum")) / moved[0].numel()
                count += len(xb)
            scores.append(total / count)
            if progress is not None:
                progress(k + 1, angles)
    finally:
        model.train(was_training)
    return degrees, torch.tensor(scores, dtype=torch.float64)


def plot_metric_by_angle(degrees: torch.Tensor, scores: Mapping[str, torch.Tensor | Sequence[float]], path: str | Path, *,
                         ylabel: str = "accuracy (%)", percent: bool = True,
                         title: str = "Test accuracy against rotation angle") -> Path:
    """Line plot of one or more models' metric against the input's rotation; saves a PNG.

    Args:
        degrees: ``(A,)`` angles (bin centres).
        scores: ``{name: (A,) values}`` (``nan`` for empty bins); multiplied by 100 when ``percent``.
        path: the PNG to write.
    """
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    xs = torch.as_tensor(degrees, dtype=torch.float64).tolist()
    for name, values in scores.items():
        ys = torch.as_tensor(values, dtype=torch.float64)
        if ys.shape != (len(xs),):
            raise ShapeError(f"{name}: {tuple(ys.shape)} scores for {len(xs)} angles")
        ax.plot(xs, (100 * ys if percent else ys).tolist(), marker="o", ms=3, label=name)
    ax.set_xlabel("rotation of the test input (degrees)")
    ax.set_ylabel(ylabel)
    ax.set_xticks(range(0, 361, 45))
    if percent:
        ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    return _save(plt, fig, path)
