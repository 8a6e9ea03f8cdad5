"""The Lightning Trainer the pipeline trains with: the `trainer` config passed through as written, plus the
callbacks and plugins the pipeline owns (checkpoints by the objective, MLflow epochs, fine-tuning, early
stopping, one line per epoch for log files; under DDP, the ranks' weights compared and SIGTERM taken in step).
"""

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, WeightAveraging
from lightning.pytorch.utilities.exceptions import SIGTERMException

from pipeline.errors import PipelineError
from pipeline.models.checkpoint_io import AtomicCheckpointIO
from pipeline.models.epoch_log import EpochLine
from pipeline.models.finetune import FinetuneSchedule
from pipeline.progress import interactive
from pipeline.ranks import leave_process_group_at_exit, ranks_run_this_job
from pipeline.signals import sigterm_sets_lightning_flag


class TrainEpochMetrics(Callback):
    """The module's train/loss and train/acc, logged when the epoch ends (Classifier.log_train_epoch). A
    callback, first in the list: Lightning runs the module's own on_train_epoch_end after the callbacks',
    which would leave the epoch line and the tracker without them."""

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        module.log_train_epoch()


class EpochMetricsToTracker(Callback):
    """Send each epoch's train and val metrics to the stage run, from rank 0 only. An epoch the run already
    holds (logged just before an interruption, then trained again from the previous last.ckpt when resuming)
    is not logged twice. `tracker`: pipeline.tracking.Tracker or anything with its two methods used here."""

    def __init__(self, tracker):
        self.tracker = tracker
        self.logged: set[int] = set()

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.logged = self.tracker.logged_epochs()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or trainer.current_epoch in self.logged:
            return
        metrics = {
            k: v.item() for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "val/"))
        }
        self.tracker.log_metrics(metrics, step=trainer.current_epoch)


class RanksInSync(Callback):
    """Under DDP, compare the ranks' weights when training ends: DDP averages gradients and broadcasts
    buffers, so every rank should hold the same model, and a difference (a layer outside DDP's reach, a
    parameter unfrozen after DDP wrapped the model, a rank that resumed from another checkpoint) would
    otherwise go unseen, as only rank 0's weights are saved. Each rank sends a digest (sum and sum of squares
    of every tensor); the largest difference from rank 0, relative to the digest's size, is logged as
    `train/rank_weight_diff`, and above `tolerance` it fails the run on every rank."""

    def __init__(self, tracker, tolerance: float = 1e-6):
        self.tracker, self.tolerance = tracker, tolerance

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.world_size < 2:
            return
        tensors = [t.detach().double() for t in module.state_dict().values() if t.is_floating_point()]
        digest = torch.stack([torch.stack([t.sum(), t.square().sum()]) for t in tensors])
        gathered = trainer.strategy.all_gather(digest)  # (world_size, tensors, 2), on every rank
        diff = ((gathered - gathered[0]).abs() / gathered[0].abs().clamp(min=1.0)).max().item()
        if trainer.is_global_zero:
            self.tracker.log_metrics({"train/rank_weight_diff": diff})
        if diff > self.tolerance:
            raise PipelineError(
                f"the {trainer.world_size} ranks ended training with different weights "
                f"(train/rank_weight_diff {diff:.3g} > {self.tolerance:g}): the saved model is rank 0's "
                "alone; a layer or parameter outside DDP's reach trained on its rank's data only"
            )


class StopRanksTogether(Callback):
    """With several ranks, SIGTERM (scancel, a time limit) only sets Lightning's flag, which the training loop
    broadcasts from rank 0 before every step, so the ranks stop at the same step with a SIGTERMException
    (the runs end KILLED; `fit` covers a rank stopping alone). Lightning's own handler also broadcasts from
    inside the signal handler and the pipeline's raises at once: either can leave one rank waiting in a
    collective the other never joins, both waiting until the scheduler's SIGKILL, the runs left RUNNING (seen
    with scancel on a two-node SLURM job). Set when training starts, after Lightning registers its handlers,
    which it restores at the end."""

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.world_size > 1:
            sigterm_sets_lightning_flag(trainer)


class BestCheckpoint(ModelCheckpoint):
    """The checkpoint with the best `monitor`; of equal scores, the one with the lower val/loss. Lightning
    keeps the first of equal scores, and a small val split scores in coarse steps (24 images: 0.042 apart),
    so scores tie while the loss still falls, and the first of them is often a half-trained model."""

    TIE_BREAKER = "val/loss"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.best_tie_breaker: float | None = None  # the val/loss of the checkpoint kept

    def check_monitor_top_k(self, trainer: L.Trainer, current: torch.Tensor | None = None) -> bool:
        """Whether `current` makes the new best checkpoint; Lightning saves it exactly when this says so
        (pinned by tests/test_training.py), so the tie-breaker of the checkpoint kept is recorded here."""
        loss = trainer.callback_metrics.get(self.TIE_BREAKER)
        better = super().check_monitor_top_k(trainer, current)
        if not better:
            tied = (
                current is not None
                and self.best_model_score is not None
                and bool(current == self.best_model_score)
            )
            lower = (
                loss is not None and self.best_tie_breaker is not None and float(loss) < self.best_tie_breaker
            )
            better = trainer.strategy.reduce_boolean_decision(tied and lower)
        if better:
            self.best_tie_breaker = None if loss is None else float(loss)
        return better

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "best_tie_breaker": self.best_tie_breaker}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.best_tie_breaker = state_dict.get("best_tie_breaker")


def ema_with_warmup(decay: float):
    """An exponential moving average whose decay grows as (1 + n) / (10 + n) after n updates, up to `decay`
    (TensorFlow's num_updates rule): a fixed 0.999 would keep a small folder's few hundred steps near the
    starting weights. torch's get_ema_multi_avg_fn has no warm-up, hence this one function; it updates in
    place (an out-of-place average per tensor cost ResNet-18 several times as long a step)."""

    @torch.no_grad()
    def average(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged) -> None:
        n = float(num_averaged)
        weight = 1 - min(decay, (1 + n) / (10 + n))
        for mean, value in zip(averaged, current, strict=True):
            if mean.is_floating_point():
                mean.lerp_(value, weight)
            else:  # batch norm's step counter
                mean.copy_(value)

    return average


class WeightEMA(WeightAveraging):
    """Lightning's weight averaging with that EMA, updated after every optimizer step: validation, the best
    checkpoint and the trained model use the averaged weights, less swayed by the last batches."""

    def __init__(self, decay: float):
        super().__init__(multi_avg_fn=ema_with_warmup(decay))


def fit(
    trainer: L.Trainer, module: L.LightningModule, datamodule: L.LightningDataModule, ckpt_path: str | None
) -> None:
    """trainer.fit, where an error after SIGTERM is the interrupt it follows. Besides the broadcast before
    each step, every rank checks its own flag at the ends of batches and epochs, so a rank that got the signal
    a moment sooner can stop there alone, and the next collective fails on the others ("Connection closed by
    peer"): the run was stopped, not broken, and ends KILLED, not FAILED, to be resumed."""
    try:
        with ranks_run_this_job():
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except Exception as err:
        if trainer.received_sigterm:
            raise SIGTERMException(f"stopped by SIGTERM ({err})") from err
        raise
    finally:
        leave_process_group_at_exit()


def training_callbacks(
    objective: str,
    mode: str,
    finetune: dict[str, Any],
    early_stopping_patience: int | None,
    tracker,
    ckpt_dir: Path,
    ema_decay: float | None = None,
) -> tuple[ModelCheckpoint, list[Callback]]:
    """The best checkpoint (by `objective` in `mode` max|min, ties by val/loss), and every callback: the train
    metrics of each epoch, it, the last checkpoint, metrics to the tracker, fine-tuning, early stopping on
    `objective` given a patience, the weights' moving average given a decay. The best checkpoint holds weights
    only, unless they are averaged: Lightning puts the average in a checkpoint's state_dict only when it saves
    callbacks too."""
    best = BestCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor=objective,
        mode=mode,
        save_weights_only=ema_decay is None,
        auto_insert_metric_name=False,
    )
    averaging = [] if ema_decay is None else [WeightEMA(ema_decay)]  # before RanksInSync, which checks it
    callbacks = [
        TrainEpochMetrics(),
        best,
        ModelCheckpoint(dirpath=ckpt_dir, filename="last"),
        EpochMetricsToTracker(tracker),
        *averaging,
        RanksInSync(tracker),
        StopRanksTogether(),
        FinetuneSchedule(finetune["strategy"], finetune["unfreeze_epoch"], finetune["freeze_batchnorm"]),
    ]
    if early_stopping_patience is not None:
        callbacks.append(EarlyStopping(objective, mode=mode, patience=early_stopping_patience))
    return best, callbacks


def build_trainer(options: dict[str, Any], callbacks: list[Callback], output_dir: Path) -> L.Trainer:
    """lightning.Trainer(**options) with the pipeline's own parts: atomic checkpoint files, no Lightning
    logger (MLflow records through the tracker), and Lightning's live progress bar only on a terminal; a log
    file gets EpochLine's one line per epoch instead."""
    bar = bool(options.get("enable_progress_bar", True)) and interactive()
    return L.Trainer(
        **{**options, "enable_progress_bar": bar},
        callbacks=[*callbacks, *([] if bar else [EpochLine()])],
        plugins=[AtomicCheckpointIO()],
        logger=False,
        default_root_dir=output_dir,
        enable_model_summary=False,
    )
