"""Train stage: fit the classifier with Lightning, keep the best and last checkpoints, log per epoch."""

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from pipeline.context import Context
from pipeline.data.balance import class_weights
from pipeline.data.datamodule import ImageDataModule
from pipeline.models.module import Classifier
from pipeline.stages._shared import ensure_index, ensure_preprocess, model_mean_std, model_spec
from pipeline.tracking import Tracker


class EpochMetricsToTracker(Callback):
    """Send each epoch's train and val metrics to the stage run, from rank 0 only."""

    def __init__(self, tracker: Tracker):
        self.tracker = tracker

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = {
            k: v.item() for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "val/"))
        }
        self.tracker.log_metrics(metrics, step=trainer.current_epoch)


def run(cfg: DictConfig, ctx: Context, tracker: Tracker) -> Context:
    L.seed_everything(cfg.seed, verbose=False)
    index = ensure_index(cfg, ctx)
    spec = model_spec(cfg)
    preprocess = ensure_preprocess(cfg, ctx, model_mean_std(spec))
    balance = cfg.data.balance
    datamodule = ImageDataModule(
        index,
        preprocess,
        list(cfg.augment.train),
        cfg.data.batch_size,
        cfg.data.num_workers,
        balance,
        cfg.seed,
    )
    train_labels = [r.label for r in index.split("train")]
    classifier = Classifier(
        model=spec,
        num_classes=len(index.class_names),
        class_names=index.class_names,
        preprocess=preprocess.to_dict(),
        optimizer=OmegaConf.to_container(cfg.optimizer),
        scheduler=OmegaConf.to_container(cfg.scheduler),
        label_smoothing=cfg.train.label_smoothing,
        class_weights=class_weights(train_labels, len(index.class_names))
        if balance == "class_weights"
        else None,
    )
    ckpt_dir = ctx.output_dir / "checkpoints"
    best = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor="val/acc",
        mode="max",
        save_weights_only=True,
        auto_insert_metric_name=False,
    )
    last = ModelCheckpoint(dirpath=ckpt_dir, filename="last")
    t = cfg.trainer
    trainer = L.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        precision=t.precision,
        max_epochs=t.max_epochs,
        limit_train_batches=t.limit_train_batches,
        limit_val_batches=t.limit_val_batches,
        log_every_n_steps=t.log_every_n_steps,
        enable_progress_bar=t.enable_progress_bar,
        deterministic=t.deterministic,
        callbacks=[best, last, EpochMetricsToTracker(tracker)],
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
            "train.images_per_epoch": len(datamodule.train_set),
        }
    )
    trainer.fit(classifier, datamodule=datamodule)

    ctx.ckpt_path = ckpt_dir / "best.ckpt"
    metrics = {"train/best_val_acc": float(best.best_model_score), "train/epochs": trainer.current_epoch}
    tracker.log_metrics(metrics, headline=True)
    tracker.log_artifact(ctx.ckpt_path, "checkpoints")
    ctx.metrics.update(metrics)
    return ctx
