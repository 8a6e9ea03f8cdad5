"""Value checks the schema's types cannot express (ranges, choices), run before any MLflow run starts, so a
bad value costs a second, not a data pass. Each failure is one PipelineError line naming the key."""

import pickle
from pathlib import Path

from omegaconf import DictConfig

from pipeline.errors import PipelineError
from pipeline.recipe import finetune_recipe
from pipeline.schema import FINETUNE_STRATEGIES, OPTIMIZERS, QUANTIZE_MODES, SCHEDULERS

CHOICES = {
    "data.on_corrupt": ("skip", "fail"),
    "data.on_leakage": ("warn", "fail", "drop"),
    "data.balance": ("auto", "none", "class_weights", "weighted_sampler", "oversample", "undersample"),
    "train.monitor": ("auto", "val/acc", "val/bal_acc", "val/f1_macro", "val/loss"),
    "finetune.strategy": FINETUNE_STRATEGIES,
    "optimizer.name": OPTIMIZERS,
    "scheduler.name": SCHEDULERS,
    "trainer.gradient_clip_algorithm": ("norm", "value"),
    "export.quantize": QUANTIZE_MODES,
}
POSITIVE = (
    "optimizer.lr",
    "data.batch_size",
    "data.image_size",
    "data.imbalance_threshold",
    "trainer.max_epochs",
    "trainer.num_nodes",
    "export.calibration_images",
    "finetune.first_stage_lr_factor",
)
NON_NEGATIVE = (
    "optimizer.weight_decay",
    "optimizer.momentum",
    "data.num_workers",
    "model.drop_rate",
    "model.drop_path_rate",
    "train.label_smoothing",
    "train.mixup_alpha",
    "train.cutmix_alpha",
    "finetune.backbone_lr_factor",
    "finetune.unfreeze_epoch",
)
FRACTIONS = ("data.val_fraction", "data.test_fraction", "train.mix_prob")


def check_config(cfg: DictConfig) -> None:
    for key, allowed in CHOICES.items():
        value = _get(cfg, key)
        if value not in allowed:
            raise PipelineError(f"{key}={value!r} is not one of {list(allowed)}")
    for key in POSITIVE:
        if _get(cfg, key) is not None and _get(cfg, key) <= 0:  # None where the schema allows it
            raise PipelineError(f"{key} must be > 0, got {_get(cfg, key)}")
    for key in NON_NEGATIVE:
        if _get(cfg, key) < 0:
            raise PipelineError(f"{key} must be >= 0, got {_get(cfg, key)}")
    for key in FRACTIONS:
        if not 0 <= _get(cfg, key) <= 1:
            raise PipelineError(f"{key} must be within [0, 1], got {_get(cfg, key)}")
    if cfg.data.val_fraction + cfg.data.test_fraction >= 1:
        raise PipelineError("data.val_fraction + data.test_fraction must leave images for training")
    if cfg.train.label_smoothing >= 1:
        raise PipelineError(f"train.label_smoothing must be < 1, got {cfg.train.label_smoothing}")
    if "train" in cfg.stages:
        check_training(cfg)


def check_training(cfg: DictConfig) -> None:
    mixing = cfg.train.mixup_alpha > 0 or cfg.train.cutmix_alpha > 0
    if mixing and cfg.data.batch_size % 2:
        raise PipelineError(f"mixup/cutmix need an even data.batch_size, got {cfg.data.batch_size}")
    if cfg.finetune.strategy == "gradual" and "ddp" in str(cfg.trainer.strategy):
        raise PipelineError(
            "finetune=gradual cannot run under DDP (DDP registers the trainable parameters once); "
            "use finetune=full with finetune.backbone_lr_factor < 1"
        )
    if cfg.train.resume:
        check_resumable(Path(cfg.train.resume), cfg)


def check_resumable(path: Path, cfg: DictConfig) -> None:
    """A run continues only with the model, optimizer, schedule and strategy that wrote the checkpoint."""
    if not path.is_file():
        raise PipelineError(f"train.resume: checkpoint not found: {path}")
    try:
        import torch  # only when resuming: the rest of this module runs before heavy imports

        saved = torch.load(path, map_location="cpu", weights_only=True)["hyper_parameters"]
    except (RuntimeError, KeyError, EOFError, OSError, pickle.UnpicklingError) as err:
        raise PipelineError(f"train.resume: {path} is not a checkpoint this pipeline wrote") from err
    resolved = finetune_recipe({**cfg.finetune}, {**cfg.model}, "ddp" in str(cfg.trainer.strategy))
    now = {
        "model": cfg.model.name,
        "optimizer": cfg.optimizer.name,
        "scheduler": cfg.scheduler.name,
        "finetune": resolved["strategy"],
    }
    then = {
        "model": saved["model"]["name"],
        "optimizer": saved["optimizer"].get("name"),
        "scheduler": (saved.get("scheduler") or {}).get("name"),
        "finetune": (saved.get("finetune") or {}).get("strategy", "full"),
    }
    differ = [f"{k} {then[k]} (now {now[k]})" for k in now if then[k] != now[k]]
    if differ:
        raise PipelineError(f"train.resume: {path} was trained with another setup: {', '.join(differ)}")


def _get(cfg: DictConfig, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node
