"""Sanity stage: check the training pipeline on one batch before training; a failure stops the run.

Each check is a row of the verdict table (sanity_verdict.json); an augmentation preview is logged too.
"""

import logging

import lightning as L
import torch
from omegaconf import DictConfig

from pipeline import devices, plots
from pipeline.checks import (
    gradient_flow,
    input_statistics,
    loss_at_init,
    no_batch_mixing,
    overfit_one_batch,
)
from pipeline.context import Context
from pipeline.data.datamodule import ImageDataModule
from pipeline.errors import PipelineError
from pipeline.models.factory import check_image_size, create_model_from_spec
from pipeline.models.finetune import freeze_backbone
from pipeline.models.losses import task_loss
from pipeline.schema import plain
from pipeline.stages.index import ensure_index
from pipeline.stages.planning import training_plan
from pipeline.tracking import Tracker

log = logging.getLogger("pipeline.sanity")


def _one_batch(datamodule: ImageDataModule, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    loader = torch.utils.data.DataLoader(datamodule.train_set, batch_size=size, shuffle=True)
    return next(iter(loader))


def _augmentation_preview(datamodule: ImageDataModule, preprocess, class_names, per_class: int = 6):
    """Training images as the model sees them (augmented), un-normalized for display."""
    mean = torch.tensor(preprocess.mean).view(3, 1, 1)
    std = torch.tensor(preprocess.std).view(3, 1, 1)
    shown: dict[str, list] = {name: [] for name in class_names}
    for i in range(len(datamodule.train_set)):
        label = datamodule.train_set.records[i].label  # multi-label: the image's rarest label
        if len(shown[class_names[label]]) < per_class:
            x, _ = datamodule.train_set[i]
            shown[class_names[label]].append((x * std + mean).clamp(0, 1).permute(1, 2, 0).numpy())
        if all(len(v) == per_class for v in shown.values()):
            break
    return shown


def step_checks(cfg: DictConfig, model, x: torch.Tensor, y: torch.Tensor, strategy: str, task: str) -> list:
    """Can training's steps move this model: every layer overfits one batch, before any freezing (a frozen
    backbone's features need far more steps to separate one batch, so a head alone would fail by chance);
    then, frozen as training starts, the gradients reach every trainable parameter, and no sample's output
    depends on another's (a zero-initialized head, as a probe's starts, gives no output to judge that by)."""
    s, loss = cfg.sanity, task_loss(task)
    results = [overfit_one_batch(model, x, y, s.overfit_steps, s.overfit_lr, s.overfit_target_loss, loss)]
    if strategy in ("linear_probe", "gradual"):
        freeze_backbone(model, cfg.finetune.freeze_batchnorm)
    # after the overfit steps: zero-initialized residual gammas (timm's default) have moved by then
    return [*results, gradient_flow(model, x, y, loss), no_batch_mixing(model, x)]


def run(cfg: DictConfig, ctx: Context, tracker: Tracker) -> Context:
    L.seed_everything(cfg.seed, verbose=False)
    index = ensure_index(cfg, ctx)
    plan = training_plan(cfg, ctx, tracker)
    preprocess = plan.preprocess
    model = create_model_from_spec(plain(cfg.model), len(index.class_names))
    check_image_size(model, cfg.model.name, preprocess.image_size)
    datamodule = ImageDataModule(index, preprocess, list(cfg.augment.train), cfg.data.batch_size, 0)
    device = devices.of_trainer(cfg.trainer)  # the checks run where training will
    log.info("checks on %s", device)
    tracker.log_params({"sanity.device": str(device)})
    model = model.to(device)
    x, y = (t.to(device) for t in _one_batch(datamodule, cfg.sanity.overfit_batch_size))

    num_classes = len(index.class_names)
    train_counts = list(index.counts()["train"].values())
    model.train()
    results = [
        input_statistics(*_one_batch(datamodule, cfg.data.batch_size), num_classes, train_counts),
        loss_at_init(model, x, y, num_classes, cfg.sanity.init_loss_tolerance, index.task),
    ]
    if plan.takes_steps:
        results += step_checks(cfg, model, x, y, plan.finetune["strategy"], index.task)
    else:
        log.info("no training step to check: the probe's head is fitted on the frozen backbone's features")
    for r in results:
        log.info("%s %s: %s", "PASS" if r.passed else "FAIL", r.name, r.message)
    tracker.log_dict({"checks": [r.to_dict() for r in results]}, "sanity_verdict.json")
    fig = plots.sample_grid(_augmentation_preview(datamodule, preprocess, index.class_names))
    tracker.log_figure(fig, "plots/augmentation_preview.png")
    plots.close(fig)
    tracker.log_metrics({f"sanity/{r.name}": r.value for r in results})
    passed = all(r.passed for r in results)
    tracker.log_metrics({"sanity/passed": float(passed)}, headline=True)
    ctx.metrics["sanity/passed"] = float(passed)
    failed = [r for r in results if not r.passed]
    if failed and cfg.sanity.enforce:
        raise PipelineError(f"sanity check {failed[0].name} failed: {failed[0].message}")
    return ctx
