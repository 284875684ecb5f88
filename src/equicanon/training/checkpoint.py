"""Checkpoints that are never half-written.

:class:`AtomicCheckpointIO` writes each checkpoint to a temporary file in the target's
own folder, flushes it to disk, and renames it over the target (``os.replace``, atomic
on POSIX and Windows). A run killed at any moment, SIGKILL included, leaves either the
previous checkpoint or the new one, never a truncated file. ``equicanon fit`` uses it
unless the config names another checkpoint plugin.

:class:`ResumeCheckpoint` keeps ``last.ckpt`` current: every ``every_n_train_steps`` steps
and when training ends, so ``equicanon fit ... --ckpt_path last`` resumes a killed run
and the finished run's ``last.ckpt`` is its final state.

A checkpoint that cannot be read (truncated, not a checkpoint, or missing) raises
:class:`CorruptCheckpointError` / :class:`CheckpointNotFoundError` naming the file, instead of
torch's zip-archive or unpickling errors.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ..errors import EquicanonError, check_positive_int

__all__ = ["AtomicCheckpointIO", "ResumeCheckpoint", "atomic_torch_save", "load_checkpoint_file",
           "CorruptCheckpointError", "CheckpointNotFoundError", "read_error", "READ_ERRORS"]


class CorruptCheckpointError(EquicanonError, ValueError):
    """A checkpoint file exists but is truncated, corrupt or not a Lightning checkpoint."""


class CheckpointNotFoundError(EquicanonError, FileNotFoundError):
    """A checkpoint file named by ``--ckpt_path`` (or ``ckpt_path=``) does not exist."""


_ADVICE = ("resume from an older checkpoint (equicanon writes last.ckpt atomically, so the last one it wrote is "
           "whole), or start again without --ckpt_path")


def load_checkpoint_file(path: str | os.PathLike[str], map_location: Any = None,
                         weights_only: bool | None = None) -> dict[str, Any]:
    """``torch.load`` of a Lightning checkpoint with errors that name the file and say what to do.

    Raises:
        CheckpointNotFoundError: ``path`` does not exist.
        CorruptCheckpointError: the file cannot be unpickled (truncated, overwritten, another format)
            or holds something other than a checkpoint dictionary with a ``state_dict``.
    """
    target = Path(path)
    if not target.is_file():
        where = "is a folder, not a file" if target.is_dir() else "does not exist"
        raise CheckpointNotFoundError(f"checkpoint {target} {where}; pass the path of a .ckpt file "
                                      "(or --ckpt_path last to resume the newest last.ckpt)")
    try:
        checkpoint = torch.load(target, map_location=map_location, weights_only=weights_only)
    except READ_ERRORS as e:
        raise read_error(target, e) from e
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        what = (f"a dict with keys {sorted(map(str, checkpoint))[:8]}" if isinstance(checkpoint, dict)
                else type(checkpoint).__name__)
        raise CorruptCheckpointError(f"{target} is not a Lightning checkpoint: expected a dict with a 'state_dict' "
                                     f"entry, got {what}")
    return checkpoint


#: what ``torch.load`` raises on a truncated or foreign file
READ_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, AttributeError, ImportError,
               IndexError, KeyError)


def read_error(path: str | os.PathLike[str], error: BaseException) -> BaseException:
    """The error to raise for ``torch.load(path)`` failing with ``error``: a :class:`CorruptCheckpointError`
    naming the file, or ``error`` itself when the file is whole but refused by ``weights_only`` loading."""
    if isinstance(error, pickle.UnpicklingError) and "Unsupported global" in str(error):
        return error  # a whole file holding classes that weights_only loading refuses: torch's message says what to do
    size = Path(path).stat().st_size if Path(path).is_file() else 0
    return CorruptCheckpointError(f"cannot read checkpoint {path} ({size} bytes): the file is truncated or corrupt "
                                  f"({type(error).__name__}: {_first_line(error)}); {_ADVICE}")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__


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

    def load_checkpoint(self, path: _PATH, map_location: Callable[..., Any] | Any | None = lambda storage, loc: storage,
                        weights_only: bool | None = None) -> dict[str, Any]:
        """Lightning's loader for remote paths; local files through :func:`load_checkpoint_file` (clear errors)."""
        if "://" in str(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        return load_checkpoint_file(path, map_location=map_location, weights_only=weights_only)


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

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        """Every ``every_n_train_steps`` steps, and at the step that reaches ``max_steps``: save ``last.ckpt``.

        The final step is saved here, inside its epoch, rather than in ``on_train_end``: there Lightning has
        already counted the unfinished epoch as completed, and a run resumed from that checkpoint (with a
        larger ``max_steps``) would shuffle the rest of the epoch as the next epoch's data.
        """
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if 0 < trainer.max_steps <= trainer.global_step and self._last_global_step_saved != trainer.global_step:
            self._save_last(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Save the final state to ``last.ckpt`` unless the last step is saved already (one extra write at most)."""
        super().on_train_end(trainer, pl_module)
        if trainer.global_step > 0 and self._last_global_step_saved != trainer.global_step:
            self._save_last(trainer)

    def _save_last(self, trainer: pl.Trainer) -> None:
        if self.dirpath is not None:
            trainer.save_checkpoint(os.path.join(self.dirpath, self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION))
            self._last_global_step_saved = trainer.global_step
