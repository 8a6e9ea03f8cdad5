"""Run the configured stages in order inside one MLflow parent run, one child run per stage."""

import importlib
import logging
import sys
import warnings
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipeline.context import Context
from pipeline.errors import PipelineError
from pipeline.ranks import SilentTracker, is_rank_zero, worker_stages
from pipeline.schema import STAGE_NAMES


def _not_litlogger_tip(record: logging.LogRecord) -> bool:
    return "litlogger" not in record.getMessage()


def quiet_known_noise() -> None:
    """Silence library chatter that says nothing about the user's run; real warnings still show."""
    warnings.filterwarnings("ignore", message=".*litlogger.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
    # Workers are chosen in conf/data; the built-in digits load fastest in the main process.
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    # finetune=linear_probe|gradual keep frozen batch norm layers in eval mode on purpose
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode at the start of training.*")
    for name in ("onnx_ir", "onnxscript", "mlflow.store.db.utils", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def tame_lightning_logging() -> None:
    """Lightning adds its own console handler on import: drop it so Hydra's handlers print (and file)
    each message once, without the litlogger tip. Called after each stage import; cheap when repeated."""
    if "lightning" not in sys.modules:
        return
    logging.getLogger("lightning").handlers.clear()
    for handler in logging.getLogger().handlers:
        if _not_litlogger_tip not in handler.filters:
            handler.addFilter(_not_litlogger_tip)


def check_stages(stages: list[str]) -> None:
    unknown = [s for s in stages if s not in STAGE_NAMES]
    if unknown or not stages:
        raise PipelineError(f"unknown or no stages {unknown}: choose from {list(STAGE_NAMES)}")


def run(cfg: DictConfig) -> float | None:
    """Returns the objective metric (cfg.objective) when a stage produced it, for sweepers."""
    check_stages(list(cfg.stages))
    config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # fail before any run starts
    quiet_known_noise()
    if not is_rank_zero():
        return run_worker(cfg)
    from pipeline.tracking import Tracker

    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tracker = Tracker(cfg.tracking.experiment, cfg.tracking.uri, cfg.tracking.dir)
    ctx = Context(output_dir=output_dir)
    with tracker.pipeline_run(config, OmegaConf.to_yaml(cfg, resolve=True), cfg.tracking.run_name) as run_id:
        print(f"[pipeline] MLflow run {run_id} at {tracker.uri}; outputs in {output_dir}")
        ctx = run_stages(cfg, list(cfg.stages), ctx, tracker)
    return ctx.metrics.get(cfg.objective)


def run_stages(cfg: DictConfig, stages: list[str], ctx: Context, tracker) -> Context:
    for name in stages:
        stage = importlib.import_module(f"pipeline.stages.{name}")
        tame_lightning_logging()
        with tracker.stage_run(name):
            ctx = stage.run(cfg, ctx, tracker)
    return ctx


def run_worker(cfg: DictConfig) -> None:
    """A DDP rank other than 0: train alongside rank 0, record nothing (rank 0 owns the MLflow runs)."""
    run_stages(
        cfg, worker_stages(list(cfg.stages)), Context(output_dir=Path(cfg.output_dir)), SilentTracker()
    )
