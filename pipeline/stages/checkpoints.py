"""The checkpoint a stage reads: the train stage's, a file, or an MLflow run's (not a stage itself)."""

import logging
from pathlib import Path

from omegaconf import DictConfig

from pipeline.context import Context
from pipeline.errors import PipelineError
from pipeline.tracking import download_best_checkpoint, resolve_tracking_uri


def has_checkpoint(cfg: DictConfig, ctx: Context) -> bool:
    return ctx.ckpt_path is not None or bool(cfg.ckpt_path) or bool(cfg.from_run)


def checkpoint_path(cfg: DictConfig, ctx: Context, stage: str) -> Path:
    """The checkpoint the train stage just wrote, else `ckpt_path=`, else the best checkpoint of the MLflow
    run `from_run=` (downloaded once; later stages reuse it through ctx.ckpt_path)."""
    if ctx.ckpt_path is not None:
        return ctx.ckpt_path
    if cfg.ckpt_path:
        return Path(cfg.ckpt_path)
    if cfg.from_run:
        uri = resolve_tracking_uri(cfg.tracking.uri, cfg.tracking.dir)
        run_id = str(cfg.from_run)
        ctx.ckpt_path = download_best_checkpoint(run_id, uri, ctx.output_dir / "from_run" / run_id)
        logging.getLogger(f"pipeline.{stage}").info(
            "from_run=%s: best checkpoint downloaded to %s", cfg.from_run, ctx.ckpt_path
        )
        return ctx.ckpt_path
    onnx = " or onnx_path=<file>" if stage == "validate" else ""
    raise PipelineError(
        f"{stage} needs a checkpoint: run the train stage first or pass ckpt_path=<file>, "
        f"from_run=<MLflow run id>{onnx}"
    )
