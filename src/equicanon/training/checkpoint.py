"""Checkpoints that are never half-written.

:class:`AtomicCheckpointIO` writes each checkpoint to a temporary file in the target's
own folder, flushes it to disk, and renames it over the target (``os.replace``, atomic
on POSIX and Windows). A run killed at any moment, SIGKILL included, leaves either the
previous checkpoint or the new one, never a truncated file. ``equicanon fit`` uses it
unless the config names another checkpoint plugin.

:class:`ResumeCheckpoint` keeps ``last.ckpt`` current: every ``every_n_train_steps`` steps
and when training ends, so ``equicanon fit ... --ckpt_path last`` resumes a killed run
and the finished run's ``last.ckpt`` is its final state.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ..errors import check_positive_int

__all__ = ["AtomicCheckpointIO", "ResumeCheckpoint", "atomic_torch_save"]


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save(obj, path)``, atomically: a temporary file beside ``path``, fsync, then rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(target.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows cannot open folders
        return
    try:
        os.fsync(dir_fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on folders
        pass
    finally:
        os.close(dir_fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO for local paths that writes atomically (see the module docstring).

    Use: ``Trainer(plugins=[AtomicCheckpointIO()])``; remote paths (``s3://``...) fall back
    to Lightning's own writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint takes no storage_options, got {storage_options!r}")
        atomic_torch_save(checkpoint, path)


class ResumeCheckpoint(ModelCheckpoint):
    """Write ``last.ckpt`` every ``every_n_train_steps`` optimisation steps and at the end of training.

    Lightning's ``ModelCheckpoint(every_n_train_steps=n, save_last=True)`` alone leaves
    ``last.ckpt`` up to ``n − 1`` steps behind a finished run; this one also saves the
    final step. Keeps no other files (use a second ``ModelCheckpoint`` for the best model).

    Args:
        every_n_train_steps: steps between saves.
        dirpath: folder (default: the logger's ``checkpoints`` folder, as ``ModelCheckpoint``).
    """

    def __init__(self, every_n_train_steps: int = 100, dirpath: str | None = None) -> None:
        super().__init__(dirpath=dirpath, every_n_train_steps=check_positive_int(every_n_train_steps, "every_n_train_steps"),
                         save_top_k=0, save_last=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Save the final state to ``last.ckpt`` (one extra write at most, per run)."""
        super().on_train_end(trainer, pl_module)
        if trainer.global_step > 0 and self.dirpath is not None:
            trainer.save_checkpoint(os.path.join(self.dirpath, self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION))
