"""Sanity stage: check the training pipeline on one batch before training; a failure stops the run."""

import lightning as L
import torch
from omegaconf import DictConfig

from pipeline.checks import loss_at_init, overfit_one_batch
from pipeline.context import Context
from pipeline.data.datamodule import ImageDataModule
from pipeline.errors import PipelineError
from pipeline.models.factory import create_model, pretrained_mean_std
from pipeline.stages._shared import ensure_index, ensure_preprocess, model_spec
from pipeline.tracking import Tracker


def _one_batch(datamodule: ImageDataModule, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    loader = torch.utils.data.DataLoader(datamodule.train_set, batch_size=size, shuffle=True)
    return next(iter(loader))


def run(cfg: DictConfig, ctx: Context, tracker: Tracker) -> Context:
    L.seed_everything(cfg.seed, verbose=False)
    index = ensure_index(cfg, ctx)
    spec = model_spec(cfg)
    model = create_model(
        spec["name"], len(index.class_names), spec["pretrained"], spec["drop_rate"], spec["kwargs"]
    )
    preprocess = ensure_preprocess(
        cfg, ctx, pretrained_mean_std(spec["name"]) if spec["pretrained"] else None
    )
    datamodule = ImageDataModule(index, preprocess, list(cfg.augment.train), cfg.data.batch_size, 0)
    x, y = _one_batch(datamodule, cfg.sanity.overfit_batch_size)

    model.train()
    results = [
        loss_at_init(model, x, y, len(index.class_names), cfg.sanity.init_loss_tolerance),
        overfit_one_batch(
            model, x, y, cfg.sanity.overfit_steps, cfg.sanity.overfit_lr, cfg.sanity.overfit_target_loss
        ),
    ]
    for r in results:
        print(f"[sanity] {'PASS' if r.passed else 'FAIL'} {r.name}: {r.message}")
    tracker.log_dict({"checks": [r.to_dict() for r in results]}, "sanity_verdict.json")
    tracker.log_metrics({f"sanity/{r.name}": r.value for r in results})
    passed = all(r.passed for r in results)
    tracker.log_metrics({"sanity/passed": float(passed)}, headline=True)
    ctx.metrics["sanity/passed"] = float(passed)
    failed = [r for r in results if not r.passed]
    if failed and cfg.sanity.enforce:
        raise PipelineError(f"sanity check {failed[0].name} failed: {failed[0].message}")
    return ctx
