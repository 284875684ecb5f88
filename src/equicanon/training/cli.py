"""``equicanon fit | validate | test --config configs/X.yaml``: Lightning's CLI over
:class:`~equicanon.training.CanonicalizationModule` and :class:`~equicanon.training.data.FashionMNISTDataModule`.

Every option of the config can be overridden on the command line, e.g.
``equicanon fit --config configs/rotated_fashion_mnist_c4.yaml --trainer.max_epochs=1 --data.data_dir=/data``;
``equicanon validate --config ... --ckpt_path runs/.../last.ckpt`` evaluates a checkpoint.
The model is given in the config as ``model.model: {class_path: ..., init_args: ...}``: an
:class:`equicanon.Canonicalized` whose ``predictor`` (e.g. :class:`equicanon.models.SmallCNN`) and
``canonicalizer`` (e.g. :class:`equicanon.canonicalizers.GroupConv` with ``group: C4``) are given
the same way, or any plain ``nn.Module``.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ..errors import EquicanonError
from .checkpoint import READ_ERRORS, AtomicCheckpointIO, read_error
from .module import CanonicalizationModule

__all__ = ["SUBCOMMANDS", "EquicanonCLI", "main", "build_cli"]

SUBCOMMANDS = ("fit", "validate", "test")


class EquicanonCLI(LightningCLI):
    """Lightning's CLI with atomic checkpoints (:class:`~equicanon.training.checkpoint.AtomicCheckpointIO`)
    unless the config sets a checkpoint plugin of its own, and a clear
    :class:`~equicanon.training.checkpoint.CorruptCheckpointError` for an unreadable ``--ckpt_path``."""

    def _parse_ckpt_path(self) -> None:
        # Lightning reads the checkpoint's hyperparameters here, before the trainer exists: a truncated file
        # would surface as torch's zip-reader error; name the file instead.
        try:
            super()._parse_ckpt_path()
        except READ_ERRORS as e:
            path = self.config[self.config.subcommand].get("ckpt_path")
            error = read_error(path, e)
            if error is e:
                raise
            raise error from e

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> pl.Trainer:
        trainer = super()._instantiate_trainer(config, callbacks)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer


def build_cli(args: list[str] | None = None, *, run: bool = True) -> LightningCLI:
    """Run the Lightning CLI for ``args`` (``["fit", "--config", "x.yaml", ...]``; default ``sys.argv[1:]``)
    and return it. With ``run=False`` it only builds the model, data module and trainer (``args`` without
    a subcommand)."""
    kwargs: dict[str, Any] = {"seed_everything_default": 0, "save_config_kwargs": {"overwrite": True}, "run": run}
    return EquicanonCLI(CanonicalizationModule, pl.LightningDataModule, subclass_mode_data=True, args=args, **kwargs)


def _equicanon_cause(error: BaseException) -> EquicanonError | None:
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, EquicanonError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def main(args: list[str] | None = None) -> int:
    """``equicanon fit|validate|test ...``; returns the exit status.

    Raises:
        ConfigError (or another :class:`~equicanon.errors.EquicanonError`): a config value is invalid,
            e.g. an unknown group name; jsonargparse's wrapping of it is taken off.
    """
    try:
        build_cli(None if args is None else list(args))
    except (ValueError, TypeError) as e:
        cause = None if isinstance(e, EquicanonError) else _equicanon_cause(e)  # ours already: as it is
        if cause is None:
            raise
        raise cause from e
    return 0
