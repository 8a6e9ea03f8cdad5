"""Resolving a run's plan (pipeline.plan): image size and preprocessing, epochs, fine-tuning recipe,
balancing, the objective and its direction, from the config and the training split the data stage inspected;
each `auto` said in one line."""

import logging
from types import MappingProxyType
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from pipeline.context import Context
from pipeline.data.stats import channel_mean_std
from pipeline.errors import PipelineError
from pipeline.plan import Plan, takes_steps
from pipeline.recipe import (
    AUTO,
    auto_epochs,
    auto_image_size,
    describe_finetune,
    finetune_recipe,
    imbalance_recipe,
    multilabel_recipe,
    objective_direction,
)
from pipeline.schema import MULTILABEL_ONLY, plain
from pipeline.stages.index import ensure_index, inspect_split
from pipeline.tasks import MULTILABEL

if TYPE_CHECKING:
    from pipeline.data.transforms import Preprocess

log = logging.getLogger("pipeline.train")  # the training plan: quiet with train in later trials


def training_plan(cfg: DictConfig, ctx: Context, tracker) -> Plan:
    """The run's plan: resolved by the first stage that trains or checks training, then the same for all."""
    if ctx.plan is None:
        ctx.plan = resolve_plan(cfg, ctx)
        tracker.log_resolved(ctx.plan.logged())
    return ctx.plan


def resolve_plan(cfg: DictConfig, ctx: Context) -> Plan:
    """Each choice once, each `auto` said in one line."""
    index = ensure_index(cfg, ctx)
    spec = plain(cfg.model)
    preprocess = resolve_preprocess(cfg, ctx, pretrained_preprocess(spec))
    max_epochs = cfg.trainer.get("max_epochs")
    if max_epochs == AUTO:
        max_epochs = auto_epochs(preprocess.image_size)
        log.info("trainer.max_epochs=auto: %d at %d px", max_epochs, preprocess.image_size)
    finetune = finetune_recipe(plain(cfg.finetune), spec)
    if index.task == MULTILABEL:
        finetune = without_head_fit(finetune)
    averaged = cfg.train.ema_decay and takes_steps(finetune)
    ema = f"; weights averaged (train.ema_decay {cfg.train.ema_decay:g})" if averaged else ""
    log.info("%s: %s%s", finetune["strategy"], describe_finetune(finetune, cfg.optimizer.lr), ema)
    balance, objective = balance_and_objective(cfg, index)
    return Plan(
        preprocess=preprocess,
        max_epochs=max_epochs,
        finetune=MappingProxyType(finetune),
        balance=balance,
        objective=objective,
        direction=objective_direction(objective, cfg.objective_mode),
    )


def balance_and_objective(cfg: DictConfig, index) -> tuple[str, str]:
    """data.balance and objective for the index's training split and task, `auto` said in a line."""
    counts, threshold = list(index.counts()["train"].values()), cfg.data.imbalance_threshold
    if index.task == MULTILABEL:
        return multilabel_recipe(cfg.data.balance, cfg.objective, counts, threshold)
    balance, objective, chosen = imbalance_recipe(cfg.data.balance, cfg.objective, counts, threshold)
    if chosen:
        log.info(chosen)
    if objective in MULTILABEL_ONLY:
        raise PipelineError(f"objective={objective} scores several labels an image; {index.root} has one")
    return balance, objective


def without_head_fit(finetune: dict) -> dict:
    """finetune.head_fit fits a head of one label an image: several labels train their head with the
    network."""
    if finetune.get("head_fit"):
        log.info("finetune.head_fit is for one label an image: the multi-label head trains with the network")
    return {**finetune, "head_fit": False}


def resolve_preprocess(cfg: DictConfig, ctx: Context, pretrained: dict | None) -> "Preprocess":
    """Size, resize, crop and normalization; an `auto` image size from the training images' sizes."""
    from pipeline.data.transforms import resolve_preprocess as resolve  # albumentations, torch: not for data

    image_size = cfg.data.image_size
    if ctx.dataset_mean_std is None or image_size == AUTO:
        train = inspect_split(cfg, ctx, "train")
        ctx.dataset_mean_std = ctx.dataset_mean_std or channel_mean_std(train)
        if image_size == AUTO:
            image_size, line = auto_image_size([min(i.width, i.height) for i in train if i.ok])
            log.info(line)
    augment = plain(cfg.augment)
    overrides = {key: augment[key] for key in ("mean", "std", "interpolation", "crop_pct")}
    return resolve(image_size, overrides, pretrained, ctx.dataset_mean_std)


def pretrained_preprocess(spec: dict) -> dict | None:
    """The pretrained data config when the model starts from pretrained weights, else None."""
    from pipeline.models.factory import pretrained_data_config

    return pretrained_data_config(spec["name"]) if spec["pretrained"] or spec["weights"] else None
