"""A callback for subprocess tests: sleeps after every training batch, so a test can kill a run mid-epoch."""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl


class SlowDown(pl.Callback):
    """Sleep ``seconds`` after each training batch."""

    def __init__(self, seconds: float = 0.05) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        time.sleep(self.seconds)
