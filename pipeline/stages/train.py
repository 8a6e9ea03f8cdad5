"""Train stage: fit the classifier with Lightning, keep the best and last checkpoints, log per epoch."""

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.tuner import Tuner
from omegaconf import DictConfig, OmegaConf

from pipeline import plots
from pipeline.context import Context
from pipeline.data.balance import class_weights
from pipeline.data.datamodule import ImageDataModule
from pipeline.data.integrity import fingerprints
from pipeline.errors import PipelineError
from pipeline.models.checkpoint_io import AtomicCheckpointIO
from pipeline.models.epoch_log import EpochLine
from pipeline.models.finetune import FinetuneSchedule
from pipeline.models.module import Classifier
from pipeline.progress import interactive
from pipeline.recipe import describe_finetune, imbalance_recipe
from pipeline.stages._shared import (
    ensure_index,
    ensure_preprocess,
    finetune_plan,
    inspect_split,
    model_spec,
    pretrained_preprocess,
)
from pipeline.tracking import Tracker


class EpochMetricsToTracker(Callback):
    """Send each epoch's train and val metrics to the stage run, from rank 0 only. An epoch the run already
    holds (logged just before an interruption, then trained again from the previous last.ckpt when resuming)
    is not logged twice."""

    def __init__(self, tracker: Tracker):
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


def find_lr(trainer: L.Trainer, classifier: Classifier, datamodule, steps: int, tracker: Tracker) -> float:
    """Lightning's LR range test; its suggestion replaces optimizer.lr. Every layer trains while it sweeps."""
    finder = Tuner(trainer).lr_find(classifier, datamodule=datamodule, num_training=steps, update_attr=False)
    suggestion = finder.suggestion() if finder is not None else None
    if suggestion is None:
        steps = len(finder.results["lr"]) if finder else 0
        raise PipelineError(
            f"the LR finder got no suggestion from {steps} steps (too few batches for train.lr_find_steps "
            "in max_epochs, or a loss that never fell); set optimizer.lr by hand"
        )
    fig = finder.plot(suggest=True)
    tracker.log_figure(fig, "plots/lr_find.png")
    plots.close(fig)
    tracker.log_metrics({"train/lr_found": suggestion})
    print(f"[train] LR finder suggests lr={suggestion:.3g}")
    return float(suggestion)


def training_callbacks(
    cfg: DictConfig, finetune: dict, monitor: str, tracker: Tracker, ckpt_dir: Path
) -> list[Callback]:
    """Best (weights only, by `monitor`) and last checkpoints first, then logging, fine-tuning, early stop."""
    mode = "min" if monitor == "val/loss" else "max"
    best = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor=monitor,
        mode=mode,
        save_weights_only=True,
        auto_insert_metric_name=False,
    )
    callbacks = [
        best,
        ModelCheckpoint(dirpath=ckpt_dir, filename="last"),
        EpochMetricsToTracker(tracker),
        FinetuneSchedule(finetune["strategy"], finetune["unfreeze_epoch"], finetune["freeze_batchnorm"]),
    ]
    if cfg.train.early_stopping_patience is not None:
        callbacks.append(EarlyStopping(monitor, mode=mode, patience=cfg.train.early_stopping_patience))
    return callbacks


def run(cfg: DictConfig, ctx: Context, tracker: Tracker) -> Context:
    L.seed_everything(cfg.seed, verbose=False)
    index = ensure_index(cfg, ctx)
    spec = model_spec(cfg)
    finetune = finetune_plan(cfg)
    print(f"[train] {finetune['strategy']}: {describe_finetune(finetune, cfg.optimizer.lr)}")
    preprocess = ensure_preprocess(cfg, ctx, pretrained_preprocess(spec))
    train_labels = [r.label for r in index.split("train")]
    balance, monitor, chosen = imbalance_recipe(
        cfg.data.balance,
        cfg.train.monitor,
        list(index.counts()["train"].values()),
        cfg.data.imbalance_threshold,
    )
    if chosen:
        print(f"[train] {chosen}")
    datamodule = ImageDataModule(
        index,
        preprocess,
        list(cfg.augment.train),
        cfg.data.batch_size,
        cfg.data.num_workers,
        balance,
        cfg.seed,
    )
    classifier = Classifier(
        model=spec,
        num_classes=len(index.class_names),
        class_names=index.class_names,
        preprocess=preprocess.to_dict(),
        optimizer=OmegaConf.to_container(cfg.optimizer),
        scheduler=OmegaConf.to_container(cfg.scheduler),
        train=OmegaConf.to_container(cfg.train),
        finetune=finetune,
        class_weights=class_weights(train_labels, len(index.class_names))
        if balance == "class_weights"
        else None,
        train_fingerprints=fingerprints(inspect_split(cfg, index, "train")),
    )
    ckpt_dir = ctx.output_dir / "checkpoints"
    callbacks = training_callbacks(cfg, finetune, monitor, tracker, ckpt_dir)
    best = callbacks[0]
    t = cfg.trainer
    progress_bar = t.enable_progress_bar and interactive()
    if not progress_bar:
        callbacks.append(EpochLine())
    trainer = L.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        precision=t.precision,
        num_nodes=t.num_nodes,
        max_epochs=t.max_epochs,
        limit_train_batches=t.limit_train_batches,
        limit_val_batches=t.limit_val_batches,
        log_every_n_steps=t.log_every_n_steps,
        enable_progress_bar=progress_bar,
        deterministic=t.deterministic,
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=t.gradient_clip_val,
        gradient_clip_algorithm=t.gradient_clip_algorithm,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        logger=False,
        default_root_dir=ctx.output_dir,
        enable_model_summary=False,
    )
    tracker.log_params(
        {
            "train.num_parameters": sum(p.numel() for p in classifier.parameters()),
            "train.accelerator": type(trainer.accelerator).__name__,
            "train.devices": trainer.num_devices,
            "train.preprocess": preprocess.to_dict(),
            "train.balance": balance,
            "train.monitor": monitor,
            "train.images_per_epoch": len(datamodule.train_set),
            "train.finetune": finetune["strategy"],
        }
    )
    if cfg.train.lr_find:
        classifier.hparams.optimizer["lr"] = find_lr(
            trainer, classifier, datamodule, cfg.train.lr_find_steps, tracker
        )
    trainer.fit(classifier, datamodule=datamodule, ckpt_path=cfg.train.resume)

    ctx.ckpt_path = ckpt_dir / "best.ckpt"
    if best.best_model_score is None:
        raise PipelineError("training ended before any validation: no best checkpoint was written")
    trainable = sum(p.numel() for p in classifier.parameters() if p.requires_grad)
    metrics = {
        f"train/best_{monitor.replace('/', '_')}": float(best.best_model_score),
        "train/epochs": trainer.current_epoch,
        "train/trainable_parameters": trainable,
    }
    if "val/acc" in trainer.callback_metrics:  # absent when a resumed run had no epoch left to train
        metrics["train/last_val_acc"] = float(trainer.callback_metrics["val/acc"])
    tracker.log_metrics(metrics, headline=True)
    tracker.log_artifact(ctx.ckpt_path, "checkpoints")
    ctx.metrics.update(metrics)
    return ctx
