"""Run the configured stages in order inside one MLflow parent run, one child run per stage.

The tracker (MLflow) is imported after the config checks and only on rank 0: a bad config fails before
MLflow loads, and DDP workers never load it.
"""

import contextlib
import functools
import importlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipeline import run_story, summary
from pipeline.config_checks import check_config
from pipeline.context import Context
from pipeline.cpu_share import fit_workers_to_share
from pipeline.devices import place_parallel_job
from pipeline.errors import PipelineError
from pipeline.ranks import SilentTracker, is_rank_zero, slurm_restarted, worker_stages
from pipeline.recipe import resolved_objective
from pipeline.schema import STAGE_NAMES, Config
from pipeline.signals import INTERRUPTS, sigterm_as_interrupt

log = logging.getLogger("pipeline")


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
    for name in ("onnx_ir", "onnxscript", "alembic", "mlflow.pyfunc"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # logs the traceback of each database error it raises again (a full store: five); the run reports it
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per model logged


QUIET_IN_TRIALS = {"data": logging.ERROR, **{s: logging.WARNING for s in STAGE_NAMES if s != "data"}}


def set_trial_verbosity(cfg: DictConfig) -> None:
    """A sweep's trials after its first say one line each: the data stage's class table and audit findings
    are the same for every trial (trial 0 shows them) and 20 trials' epoch lines would bury the results.
    Other runs (trial 0, a sweep's closing test job in the same process) say everything."""
    quiet = cfg.trial.number is not None and cfg.trial.number > 0
    for stage, level in QUIET_IN_TRIALS.items():
        logging.getLogger(f"pipeline.{stage}").setLevel(level if quiet else logging.NOTSET)


def tame_lightning_logging() -> None:
    """Lightning adds its own console handler on import: drop it so Hydra's handlers print (and file)
    each message once, without the litlogger tip. Called after each stage import; cheap when repeated."""
    if "lightning" not in sys.modules:
        return
    logging.getLogger("lightning").handlers.clear()
    # "GPU available: False", "Loading `train_dataloader`...": our epoch lines and summary say what matters
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        if _not_litlogger_tip not in handler.filters:
            handler.addFilter(_not_litlogger_tip)


def check_stages(stages: list[str]) -> None:
    unknown = [s for s in stages if s not in STAGE_NAMES]
    if unknown or not stages:
        raise PipelineError(f"unknown or no stages {unknown}: choose from {list(STAGE_NAMES)}")


def run(cfg: DictConfig, callbacks: tuple = ()):
    """The objective metric when a stage produced it, for sweepers (pipeline.sweeps.study.Pruned for a trial
    the sweep's pruner stopped); `callbacks` join the train stage's."""
    started = time.perf_counter()
    check_stages(list(cfg.stages))
    config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # fail before any run starts
    check_config(cfg)
    fit_workers_to_share(cfg)
    place_parallel_job(cfg)
    quiet_known_noise()
    set_trial_verbosity(cfg)
    if not is_rank_zero():
        return run_worker(cfg)
    tracker, resume_id, cfg = open_tracker(cfg)
    output_dir = writable_folder(Path(cfg.output_dir), "output folder")
    ctx = Context(output_dir=output_dir, callbacks=list(callbacks))
    yaml = OmegaConf.to_yaml(cfg, resolve=True)
    story = (run_story.run_name(cfg), run_story.command_line(), run_story.description(cfg))
    from pipeline.run_lifecycle import pipeline_run  # with MLflow, which worker ranks and --help skip

    with sigterm_as_interrupt(), pipeline_run(tracker, config, yaml, story, resume_id) as run_id:
        log.info("MLflow run %s at %s; outputs in %s", run_id, tracker.uri, output_dir)
        if cfg.trial.number is not None:
            mark_trial(cfg, tracker, run_id)
        timings: dict[str, float] = {}
        try:
            ctx = run_stages(cfg, list(cfg.stages), ctx, tracker, timings)
            if cfg.trial.number is not None:
                state = "COMPLETE" if ctx.pruned_epoch is None else "PRUNED"
                tracker.set_tags({"optuna.state": state})
        except INTERRUPTS as err:
            log.warning("interrupted: run %s marked KILLED; continue it with resume=%s", run_id, run_id)
            raise KeyboardInterrupt from err  # one exit path (130) for Ctrl-C and SIGTERM
        except Exception as err:
            log.error(summary.failed(timings, err))
            raise
        finally:
            tracker.describe(run_id, run_story.description(cfg, ctx.metrics, timings, ctx.plan))
        seconds = time.perf_counter() - started
        page, onnx, smoke = tracker.run_page(run_id), ctx.onnx_path, run_story.is_smoke()
        if cfg.trial.number is not None:
            return finish_trial(cfg, ctx, seconds, run_id)
        runs = tracker.runs_page()
        for line in summary.finished(
            seconds, timings, ctx.metrics, output_dir, run_id, page, onnx, smoke, runs
        ):
            log.info(line)
    return objective_value(cfg, ctx)


def open_tracker(cfg: DictConfig):
    """The MLflow store (checked writable, runs abandoned by dead processes marked KILLED), the parent run to
    continue (resume=, or this requeued SLURM job's) and the config to run: (tracker, run id or None, cfg)."""
    from pipeline import run_lifecycle
    from pipeline.tracking import Tracker

    writable_folder(Path(cfg.output_dir), "output folder")
    if cfg.tracking.uri is None and not os.environ.get("MLFLOW_TRACKING_URI"):  # the embedded store
        writable_folder(Path(cfg.tracking.dir), "tracking.dir")
    tracker = Tracker(cfg.tracking.experiment, cfg.tracking.uri, cfg.tracking.dir)
    for abandoned in run_lifecycle.mark_abandoned_runs(tracker):
        log.warning("run %s was left RUNNING by a process that is gone: marked KILLED", abandoned)
    if not cfg.resume and (requeued := run_lifecycle.run_of_requeued_job(tracker)):
        log.info("SLURM restarted this job: continuing its run %s", requeued)
        cfg.resume = requeued
    if not cfg.resume:
        return tracker, None, cfg
    return tracker, *resumed(cfg, tracker)


def mark_trial(cfg: DictConfig, tracker, run_id: str) -> None:
    """A sweep's trial: its study and number on the parent run, the run's id on the trial."""
    from pipeline.sweeps.study import record_run

    tracker.set_tags({"optuna.study": cfg.trial.study, "optuna.trial": str(cfg.trial.number)})
    record_run(cfg.trial, run_id)


def finish_trial(cfg: DictConfig, ctx: Context, seconds: float, run_id: str):
    """A trial's one closing line; its objective's name recorded for the sweep, its value returned."""
    from pipeline.sweeps.study import record_objective

    log.info(summary.trial_line(cfg.trial.number, seconds, ctx.metrics, run_id))
    record_objective(cfg.trial, objective_name(cfg, ctx))
    return objective_value(cfg, ctx)


def objective_value(cfg: DictConfig, ctx: Context):
    """What sweepers optimize: the objective as the train stage resolved it (`auto` is val/acc when no
    training ran), scored by the validate stage when it ran, else by the train stage's best epoch; for a
    trial the sweep's pruner stopped, pipeline.sweeps.study.Pruned."""
    if ctx.pruned_epoch is not None:
        from pipeline.sweeps.study import Pruned

        return Pruned(ctx.pruned_epoch)
    return ctx.metrics.get(objective_name(cfg, ctx))


def objective_name(cfg: DictConfig, ctx: Context) -> str:
    return ctx.plan.objective if ctx.plan else resolved_objective(cfg.objective, imbalanced=False)


def writable_folder(folder: Path, what: str) -> Path:
    """Create the folder and prove it takes files, before any run starts."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise PipelineError(f"{what} {folder} is not writable: {err.strerror or err}") from err
    return folder


def resumed(cfg: DictConfig, tracker, joining: bool = False) -> tuple[str, DictConfig]:
    """The run `resume` names (`true`: the newest interrupted one) and the config that continues it; see
    run_lifecycle.resumable_run for `joining`. Under DDP give the id: by the time another rank looks, rank 0
    may have reopened the newest run."""
    from pipeline import run_lifecycle

    asked = None if cfg.resume is True else str(cfg.resume)
    run_id, saved_yaml = run_lifecycle.resumable_run(tracker, asked, joining)
    return run_id, resumed_config(saved_yaml, run_lifecycle.stage_statuses(tracker, run_id))


def resumed_config(saved_yaml: str, statuses: dict[str, tuple[str, str]]) -> DictConfig:
    """The interrupted run's own config, reduced to its unfinished stages, training from its last.ckpt."""
    cfg = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.create(saved_yaml))
    done = {stage for stage, (_, status) in statuses.items() if status == "FINISHED"}
    checkpoints = Path(cfg.output_dir) / "checkpoints"
    cfg.stages = [s for s in cfg.stages if s not in done]
    if "train" in cfg.stages and (checkpoints / "last.ckpt").is_file():
        cfg.train.resume = str(checkpoints / "last.ckpt")
    if "train" in done:
        cfg.ckpt_path = str(checkpoints / "best.ckpt")
    cfg.resume = None
    log.info("resuming stages %s in %s", list(cfg.stages), cfg.output_dir)
    return cfg


def run_stages(
    cfg: DictConfig,
    stages: list[str],
    ctx: Context,
    tracker,
    timings: dict[str, float] | None = None,
    stage_run: Callable[[str], AbstractContextManager] | None = None,
) -> Context:
    """Each stage in its own child run (`stage_run`, run_lifecycle's by default); `timings` gets each started
    stage's wall seconds, in order."""
    timings = {} if timings is None else timings
    if stage_run is None:
        from pipeline import run_lifecycle

        stage_run = functools.partial(run_lifecycle.stage_run, tracker)
    OmegaConf.set_readonly(cfg, True)  # resolved values live in ctx.plan, never written back
    for name in stages:
        start, planned = time.perf_counter(), ctx.plan
        try:
            stage = importlib.import_module(f"pipeline.stages.{name}")
            tame_lightning_logging()
            with stage_run(name):
                ctx = stage.run(cfg, ctx, tracker)
        finally:
            timings[name] = time.perf_counter() - start
        if ctx.plan is not planned:  # the run page says the numbers `auto` became as soon as they are known
            tracker.describe(tracker.parent_id, run_story.description(cfg, ctx.metrics, timings, ctx.plan))
        if ctx.pruned_epoch is not None:  # a sweep's pruned trial: nothing after training is worth running
            break
    return ctx


def run_worker(cfg: DictConfig) -> None:
    """A DDP rank other than 0: train alongside rank 0, record nothing (rank 0 owns the MLflow runs). When
    resuming (asked, or a requeued SLURM job), it reads the same resumed config from the store as rank 0
    (output folder, stages, last.ckpt): ranks starting from different epochs would wait on each other."""
    if cfg.resume or slurm_restarted():
        from pipeline import run_lifecycle
        from pipeline.tracking import Tracker

        tracker = Tracker(cfg.tracking.experiment, cfg.tracking.uri, cfg.tracking.dir)
        cfg.resume = cfg.resume or run_lifecycle.run_of_requeued_job(tracker, joining=True)
        if cfg.resume:
            _, cfg = resumed(cfg, tracker, joining=True)
    worker = Context(output_dir=Path(cfg.output_dir))
    stages = worker_stages(list(cfg.stages))
    run_stages(cfg, stages, worker, SilentTracker(), stage_run=lambda name: contextlib.nullcontext())
