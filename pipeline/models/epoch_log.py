"""One line per training epoch, for logs that are files: a progress bar only reaches a file at its end."""

import logging
import time

import lightning as L
from lightning.pytorch.callbacks import Callback

from pipeline.progress import duration

log = logging.getLogger("pipeline.train")


class EpochLine(Callback):
    """`[train] epoch 3/12: train/loss 0.41, val/loss 0.30, val/acc 0.9412, lr 1.2e-03, 88 img/s,
    elapsed 1m12s, ETA 3m40s`, logged by rank 0 when an epoch's validation is done."""

    SHOWN = ("train/loss", "val/loss", "val/acc", "val/bal_acc", "val/map")

    def __init__(self):
        self.fit_start = self.epoch_start = self.train_seconds = 0.0
        self.images = 0
        self.first_epoch = 0

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.fit_start = time.perf_counter()
        self.first_epoch = trainer.current_epoch  # later than 0 when resuming

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.epoch_start = time.perf_counter()
        self.images = 0
        self.train_seconds = 0.0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.images += len(batch[1])
        self.train_seconds = time.perf_counter() - self.epoch_start

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        epoch, total = trainer.current_epoch + 1, trainer.max_epochs
        elapsed = time.perf_counter() - self.fit_start
        per_epoch = elapsed / (epoch - self.first_epoch)
        parts = [f"{name} {metrics[name].item():.4f}" for name in self.SHOWN if name in metrics]
        if "train/lr" in metrics:
            parts.append(f"lr {metrics['train/lr'].item():.2e}")
        if self.train_seconds > 0:
            parts.append(f"{self.images * trainer.world_size / self.train_seconds:.0f} img/s")
        parts.append(f"elapsed {duration(elapsed)}")
        if epoch < total:
            parts.append(f"ETA {duration(per_epoch * (total - epoch))}")
        log.info(f"epoch {epoch}/{total}: " + ", ".join(parts))
