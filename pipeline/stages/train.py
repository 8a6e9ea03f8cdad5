"""Train stage: fit the classifier with Lightning, keep the best and last checkpoints, log per epoch."""

import logging
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.tuner import Tuner
from omegaconf import DictConfig

from pipeline import devices, plots
from pipeline.context import Context
from pipeline.cpu_share import loader_workers
from pipeline.data.balance import class_weights
from pipeline.data.datamodule import ImageDataModule
from pipeline.data.feature_cache import Layers
from pipeline.data.integrity import fingerprint, fingerprints
from pipeline.data.resized_cache import CACHED_SPLITS, ResizedImages, load_or_build, nbytes
from pipeline.data.transforms import Preprocess
from pipeline.errors import PipelineError
from pipeline.models.checkpoint_io import AtomicCheckpointIO, keep_weights_only
from pipeline.models.factory import check_image_size
from pipeline.models.head_fit import FittedHead, fit_head, load_into
from pipeline.models.losses import positive_weights
from pipeline.models.module import Classifier
from pipeline.models.trainer import build_trainer, fit, training_callbacks
from pipeline.plan import Plan
from pipeline.schema import plain
from pipeline.stages.frozen import split_features
from pipeline.stages.index import ensure_index, inspect_split
from pipeline.stages.planning import training_plan
from pipeline.sweeps.study import pruning_callback
from pipeline.tasks import MULTILABEL
from pipeline.tracking import Tracker

log = logging.getLogger("pipeline.train")


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
    log.info("LR finder suggests lr=%.3g", suggestion)
    return float(suggestion)


def loss_weights(index, balance: str) -> list[float] | None:
    """data.balance=class_weights: each class's weight in the loss, or each label's positive weight."""
    if balance != "class_weights":
        return None
    train, classes = index.split("train"), len(index.class_names)
    if index.task == MULTILABEL:
        return positive_weights([r.labels for r in train], classes)
    return class_weights([r.label for r in train], classes)


def build_classifier(cfg: DictConfig, ctx: Context, plan: Plan) -> Classifier:
    index = ctx.index
    return Classifier(
        model=plain(cfg.model),
        num_classes=len(index.class_names),
        class_names=index.class_names,
        preprocess=plan.preprocess.to_dict(),
        optimizer=plain(cfg.optimizer),
        scheduler=plain(cfg.scheduler),
        train=plain(cfg.train),
        finetune=dict(plan.finetune),
        class_weights=loss_weights(index, plan.balance),
        train_fingerprints=fingerprints(inspect_split(cfg, ctx, "train")),
        task=index.task,
    )


def run(cfg: DictConfig, ctx: Context, tracker: Tracker) -> Context:
    L.seed_everything(cfg.seed, verbose=False)
    ensure_index(cfg, ctx)
    plan = training_plan(cfg, ctx, tracker)
    classifier = build_classifier(cfg, ctx, plan)
    check_image_size(classifier.model, cfg.model.name, plan.preprocess.image_size)  # before the resized cache
    head = fit_head_first(cfg, ctx, classifier, plan, tracker) if plan.finetune.get("head_fit") else None
    if head is not None and plan.finetune["strategy"] == "linear_probe":
        return probe_done(ctx, classifier, head, plan.objective, tracker)
    datamodule = build_datamodule(cfg, ctx, plan.preprocess, plan.balance)
    ckpt_dir = ctx.output_dir / "checkpoints"
    best, callbacks = training_callbacks(
        plan.objective,
        plan.direction,
        dict(plan.finetune),
        cfg.train.early_stopping_patience,
        tracker,
        ckpt_dir,
        cfg.train.ema_decay,
    )
    pruning = pruning_callback(cfg, plan.objective)
    trainer = build_trainer(
        {**plain(cfg.trainer), "max_epochs": plan.max_epochs},
        [*callbacks, *ctx.callbacks, *filter(None, [pruning])],
        ctx.output_dir,
    )
    log_setup(tracker, trainer, classifier, datamodule, plan)
    if cfg.train.lr_find:
        classifier.hparams.optimizer["lr"] = find_lr(
            trainer, classifier, datamodule, cfg.train.lr_find_steps, tracker
        )
    ctx.pruned_epoch = fit_trial(trainer, classifier, datamodule, cfg.train.resume, pruning, tracker)
    if ctx.pruned_epoch is not None:
        return ctx
    ctx.ckpt_path = ckpt_dir / "best.ckpt"
    if cfg.train.ema_decay is not None and trainer.is_global_zero and ctx.ckpt_path.is_file():
        keep_weights_only(ctx.ckpt_path)
    record_result(trainer, classifier, best, plan.objective, tracker, ctx)
    return ctx


def fit_head_first(cfg: DictConfig, ctx: Context, classifier: Classifier, plan: Plan, tracker) -> FittedHead:
    """finetune.head_fit: the new head fitted on the frozen backbone's features of the train split, its
    strength chosen on val, loaded into the network before any epoch."""
    started = time.perf_counter()
    device = devices.of_trainer(cfg.trainer)
    layers = Layers(classifier.model, plan.preprocess.image_size).to(device)
    spec, parts = plain(cfg.model), {}
    for split in ("train", "val"):
        features, labels = split_features(cfg, ctx, layers, plan.preprocess, spec, split)
        parts[split] = (features[-1], labels)  # the penultimate features: what the head reads
    classes = len(ctx.index.class_names)
    head = fit_head(parts["train"], parts["val"], classes, plan.balance != "none", cfg.seed)
    load_into(classifier.model, head)
    seconds = time.perf_counter() - started
    scores = head.val_scores
    log.info(
        "head fitted on the frozen backbone's features of %d train images in %.1f s (L2 strength C=%g): "
        "val acc %.4f, loss %.4f",
        len(parts["train"][1]), seconds, head.strength, scores["val/acc"], scores["val/loss"],
    )  # fmt: skip
    tracker.log_metrics({"train/head_fit_s": seconds, "train/head_fit_c": head.strength})
    return head


def probe_done(ctx: Context, classifier: Classifier, head: FittedHead, objective: str, tracker) -> Context:
    """A linear probe whose head is fitted: the best checkpoint is the network as it is, with no epoch run."""
    ctx.ckpt_path = ctx.output_dir / "checkpoints" / "best.ckpt"
    checkpoint = {
        "state_dict": classifier.state_dict(),
        "hyper_parameters": dict(classifier.hparams),
        "pytorch-lightning_version": L.__version__,
        "epoch": 0,
        "global_step": 0,
    }
    AtomicCheckpointIO().save_checkpoint(checkpoint, ctx.ckpt_path)
    metrics = {
        f"train/best_{objective.replace('/', '_')}": head.val_scores[objective],
        "train/epochs": 0,
        "train/trainable_parameters": head.weight.size + head.bias.size,
        "train/last_val_acc": head.val_scores["val/acc"],
    }
    tracker.log_metrics(metrics, headline=True)
    tracker.log_artifact(ctx.ckpt_path, "checkpoints")
    ctx.metrics.update(metrics)
    ctx.metrics[objective] = head.val_scores[objective]
    return ctx


def resized_images(cfg: DictConfig, ctx: Context, preprocess: Preprocess) -> ResizedImages | None:
    """The train and val images decoded and resized once (pipeline.data.resized_cache), or None to decode
    them each epoch: data.resized_cache=never, or auto and larger than data.resized_cache_mb."""
    records = [r for split in CACHED_SPLITS for r in ctx.index.split(split)]
    size = nbytes(len(records), preprocess.image_size)
    mode = cfg.data.resized_cache
    if mode == "never" or (mode == "auto" and size > cfg.data.resized_cache_mb * 2**20):
        if mode == "auto":
            log.info(
                "resized images would take %.0f MB, above data.resized_cache_mb=%d: decoding each epoch",
                size / 2**20,
                cfg.data.resized_cache_mb,
            )
        return None
    content = {info.path: fingerprint(info) for info in inspect_split(cfg, ctx, None)}
    paths = [r.path for r in records]
    folder = Path(cfg.data.cache_dir) / "resized"
    return load_or_build(paths, [content[p] for p in paths], preprocess, folder, cfg.data.inspect_workers)


def build_datamodule(cfg: DictConfig, ctx: Context, preprocess, balance: str) -> ImageDataModule:
    """The training batches, from the resized cache when it holds the images at this size."""
    resized = resized_images(cfg, ctx, preprocess)
    workers = loader_workers(cfg.data.num_workers, resized is not None)
    augment = list(cfg.augment.train)
    return ImageDataModule(
        ctx.index, preprocess, augment, cfg.data.batch_size, workers, balance, cfg.seed, resized
    )


def fit_trial(trainer: L.Trainer, classifier, datamodule, resume: str | None, pruning, tracker) -> int | None:
    """Train; the epoch after which a sweep's pruner stopped it (optuna.TrialPruned, raised from within
    Lightning on one process, after fit under DDP), else None."""
    if pruning is None:
        fit(trainer, classifier, datamodule, resume)
        return None
    import optuna

    try:
        fit(trainer, classifier, datamodule, resume)
        pruning.check_pruned()
    except optuna.TrialPruned:
        log.info("pruned by the sweep after epoch %d: this trial stops here", trainer.current_epoch)
        tracker.log_metrics({"train/pruned_epoch": trainer.current_epoch}, headline=True)
        tracker.set_tags({"optuna.state": "PRUNED"})
        return trainer.current_epoch
    return None


def log_setup(tracker: Tracker, trainer, classifier, datamodule, plan: Plan):
    """What the run resolved at start: sizes, device, preprocessing and the choices `auto` made."""
    tracker.log_params(
        {
            "train.num_parameters": sum(p.numel() for p in classifier.parameters()),
            "train.accelerator": type(trainer.accelerator).__name__,
            "train.devices": trainer.num_devices,
            "train.num_nodes": trainer.num_nodes,
            "train.world_size": trainer.world_size,  # processes training together: devices x nodes under DDP
            "train.preprocess": classifier.hparams.preprocess,
            "train.balance": plan.balance,
            "train.objective": plan.objective,
            "train.images_per_epoch": len(datamodule.train_set),
            "train.finetune": plan.finetune["strategy"],
        }
    )


def record_result(
    trainer: L.Trainer, classifier: Classifier, best: ModelCheckpoint, objective: str, tracker, ctx: Context
) -> None:
    """The best checkpoint's score (also under the objective's own name, for sweepers when no validate stage
    follows), the epochs run and the last epoch's val accuracy."""
    if best.best_model_score is None:
        raise PipelineError("training ended before any validation: no best checkpoint was written")
    score = float(best.best_model_score)
    metrics = {
        f"train/best_{objective.replace('/', '_')}": score,
        "train/epochs": trainer.current_epoch,
        "train/trainable_parameters": sum(p.numel() for p in classifier.parameters() if p.requires_grad),
    }
    for name in ("val/acc", "val/map"):  # absent when a resumed run had no epoch left to train (acc: one
        if name in trainer.callback_metrics:  # label an image; map: several)
            metrics[f"train/last_{name.replace('/', '_')}"] = float(trainer.callback_metrics[name])
    tracker.log_metrics(metrics, headline=True)
    tracker.log_artifact(ctx.ckpt_path, "checkpoints")
    ctx.metrics.update(metrics)
    ctx.metrics[objective] = score
