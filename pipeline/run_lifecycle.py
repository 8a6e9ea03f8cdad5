"""The life of the runs a pipeline run records in MLflow: the parent run and one child run per stage started,
reopened when resuming or when SLURM requeues a job, and ended FINISHED, FAILED (an exception) or KILLED
(Ctrl-C, SIGTERM), never left RUNNING; a run a hard kill left RUNNING is found and marked KILLED by the next
pipeline start on the same host. What the runs hold is written through pipeline.tracking.Tracker.
"""

import logging
import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import RunStatus

from pipeline.errors import PipelineError
from pipeline.plan import RESOLVED_LATER
from pipeline.ranks import slurm_restarted
from pipeline.signals import INTERRUPTS
from pipeline.tracking import DESCRIPTION_TAG, Tracker, flatten

log = logging.getLogger("pipeline")


@contextmanager
def _killed_on_interrupt() -> Iterator[None]:
    try:
        yield
    except INTERRUPTS:
        mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
        raise


def _process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def git_dirty() -> dict[str, str]:
    """Whether tracked files differ from the commit; MLflow's run context tags the commit itself
    (`mlflow.source.git.commit`) but not this."""
    root = Path(__file__).resolve().parents[1]
    try:
        done = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git.dirty": str(bool(done.stdout.strip()))}


def requested_params(params: dict[str, str]) -> dict[str, str]:
    later = {key for key in RESOLVED_LATER if params.get(key) == "auto"}
    return {f"{key}.requested" if key in later else key: value for key, value in params.items()}


def slurm_job() -> dict[str, str]:
    """`slurm_job`: the SLURM job the run is in (what squeue, scancel and sacct take), `<job>_<task>` for a
    job of an array (a Hydra multirun); nothing outside SLURM."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job = f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")
    return {"slurm_job": job} if job else {}


@contextmanager
def pipeline_run(
    tracker: Tracker,
    config: dict[str, Any],
    config_yaml: str,
    story: tuple[str, str, str],
    resume_id: str | None = None,
) -> Iterator[str]:
    """A new parent run, or the parent run `resume_id` reopened (its params and config stay as logged).
    `story` is the run's name, the command typed and its description (pipeline.run_story)."""
    run_name, command, note = story
    with tracker.store_write():
        active = mlflow.start_run(run_id=resume_id, experiment_id=tracker.experiment_id, run_name=run_name)
    with _ending(tracker, active) as run:
        tracker.parent_id = run.info.run_id
        try:
            with _killed_on_interrupt():
                with tracker.store_write():
                    mlflow.set_tags({"pid": str(os.getpid()), "host": socket.gethostname()} | slurm_job())
                    if resume_id is None:
                        mlflow.set_tags({**git_dirty(), "command": command, DESCRIPTION_TAG: note})
                        mlflow.log_params(requested_params(flatten(config)))
                        mlflow.log_text(config_yaml, "config.yaml")
                yield run.info.run_id
        finally:
            tracker.parent_id = None


@contextmanager
def _ending(tracker: Tracker, active) -> Iterator[Any]:
    """mlflow's ActiveRun block (the run ends FINISHED, or FAILED on an error), except that a store which
    cannot take the ending (full) does not hide the error that ended the block: a warning says so."""
    raised = None
    try:
        with active as run:
            try:
                yield run
            except BaseException as err:
                raised = err
                raise
    except BaseException as ending:
        if raised is None or ending is raised:
            raise
        while ending.__cause__ is not None:  # the database's own words, under SQLAlchemy's and MLflow's
            ending = ending.__cause__
        reason = (str(ending).strip().splitlines() or [type(ending).__name__])[0][:200]
        log.warning(
            "run %s could not be marked FAILED (%s): the next run marks it KILLED once there is room",
            active.info.run_id,
            reason,
        )
        raise raised from raised.__cause__


@contextmanager
def stage_run(tracker: Tracker, stage: str) -> Iterator[str]:
    """A child run of the parent; an unfinished child of the same stage is reopened when resuming."""
    unfinished = stage_statuses(tracker, tracker.parent_id).get(stage) if tracker.parent_id else None
    reopen = unfinished[0] if unfinished and unfinished[1] != "FINISHED" else None
    with tracker.store_write():
        active = mlflow.start_run(
            run_id=reopen,
            experiment_id=tracker.experiment_id,
            run_name=stage,
            nested=True,
            tags={"stage": stage},
        )
    with _ending(tracker, active) as run:
        with _killed_on_interrupt():
            yield run.info.run_id


def stage_statuses(tracker: Tracker, parent_id: str) -> dict[str, tuple[str, str]]:
    """stage name -> (child run id, status) under a parent run."""
    children = tracker.client.search_runs(
        [tracker.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'", max_results=100
    )
    return {r.data.tags.get("stage", r.info.run_name): (r.info.run_id, r.info.status) for r in children}


def mark_abandoned_runs(tracker: Tracker) -> list[str]:
    """Runs of this host left RUNNING by a process that no longer exists (a hard kill) become KILLED."""
    host = socket.gethostname()
    running = tracker.client.search_runs(
        [tracker.experiment_id], f"attributes.status = 'RUNNING' and tags.host = '{host}'", max_results=1000
    )
    abandoned = [r.info.run_id for r in running if not _process_alive(int(r.data.tags.get("pid", 0)))]
    for run_id in abandoned:
        _mark_killed(tracker, run_id)
    return abandoned


def _mark_killed(tracker: Tracker, run_id: str) -> None:
    for child_id, status in stage_statuses(tracker, run_id).values():
        if status == "RUNNING":
            tracker.client.set_terminated(child_id, "KILLED")
    tracker.client.set_terminated(run_id, "KILLED")


def run_of_requeued_job(tracker: Tracker, joining: bool = False) -> str | None:
    """The unfinished parent run this SLURM job started before SLURM requeued it (preemption, `scontrol
    requeue`, a failed node: the job starts again with the same id and SLURM_RESTART_COUNT set), so the
    job continues it rather than starting over. One still RUNNING (its process killed hard) is marked
    KILLED first, except by another DDP rank (`joining`: rank 0 may have reopened it)."""
    job = slurm_job().get("slurm_job")
    if not job or not slurm_restarted():
        return None
    found = tracker.client.search_runs(
        [tracker.experiment_id],
        f"tags.slurm_job = '{job}' and attributes.status != 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not found:
        return None
    if found[0].info.status == "RUNNING" and not joining:
        _mark_killed(tracker, found[0].info.run_id)
    return found[0].info.run_id


def resumable_run(tracker: Tracker, run_id: str | None, joining: bool = False) -> tuple[str, str]:
    """(parent run id, its resolved config YAML): the given run, or the newest KILLED/FAILED one.
    `joining`: a DDP rank other than 0, which may find the run RUNNING again (rank 0 reopened it)."""
    if run_id is None:
        found = tracker.client.search_runs(
            [tracker.experiment_id],
            "attributes.status != 'FINISHED' and attributes.status != 'RUNNING' and tags.pid != ''",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not found:
            raise PipelineError("resume: no interrupted or failed pipeline run in this experiment")
        run_id = found[0].info.run_id
    try:
        run = tracker.client.get_run(run_id)
    except mlflow.exceptions.MlflowException as err:
        raise PipelineError(f"resume: no MLflow run {run_id} at {tracker.uri}") from err
    if "mlflow.parentRunId" in run.data.tags:
        raise PipelineError(f"resume: {run_id} is a stage run; pass its parent run id")
    if run.info.status == "FINISHED" or run.info.status == "RUNNING" and not joining:
        raise PipelineError(f"resume: run {run_id} is {run.info.status}, not KILLED or FAILED")
    config_path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="config.yaml")
    return run_id, Path(config_path).read_text()
