"""Interruption and resume: SIGTERM marks the runs KILLED and keeps last.ckpt; resume=<id> finishes the same
runs; a run a hard kill left RUNNING is marked KILLED by the next start."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.run_lifecycle import mark_abandoned_runs
from pipeline.runner import run, sigterm_as_interrupt
from pipeline.tracking import Tracker, uninterrupted

TRAIN = [
    "stages=[train]",
    "model=simple_cnn",
    "model.kwargs.channels=[8]",
    "data.image_size=16",
    "data.batch_size=8",
    "trainer.max_epochs=40",
    "trainer.enable_progress_bar=false",
    "data.audit=false",
]


def store(tmp_path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")


def terminated_after_first_checkpoint(image_folder, tmp_path, *overrides: str) -> str:
    """`python -m pipeline` training on the folder, sent SIGTERM once last.ckpt exists: its output, after
    checking that it exited 130 (interrupted)."""
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "pipeline", *TRAIN, *overrides, f"data.root={image_folder}",
        f"data.cache_dir={tmp_path / 'cache'}", f"tracking.dir={tmp_path / 'mlruns'}", f"hydra.run.dir={out}",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=90)[0]
    assert process.returncode == 130, output[-2000:]
    return output


@pytest.mark.slow
def test_sigterm_marks_runs_killed_and_resume_finishes_them(make_cfg, image_folder, tmp_path):
    output = terminated_after_first_checkpoint(image_folder, tmp_path)
    last = tmp_path / "out" / "checkpoints" / "last.ckpt"
    assert "marked KILLED" in output and "Traceback" not in output

    client = store(tmp_path)
    runs = client.search_runs([client.get_experiment_by_name("image-classification").experiment_id])
    assert {r.info.status for r in runs} == {"KILLED"} and len(runs) == 2
    parent = next(r for r in runs if r.info.run_name != "train")
    train = next(r for r in runs if r.info.run_name == "train")
    interrupted_at = torch.load(last, weights_only=True)["epoch"]  # intact and loadable
    assert interrupted_at < 39

    run(make_cfg(f"resume={parent.info.run_id}"))
    runs = client.search_runs([train.info.experiment_id])
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}  # the same two runs
    steps = [m.step for m in client.get_metric_history(train.info.run_id, "train/loss")]
    assert sorted(set(steps)) == list(range(40)) and len(steps) == 40
    assert client.get_run(train.info.run_id).data.metrics["train/epochs"] == 40


@pytest.mark.slow
def test_sigterm_stops_both_ddp_ranks_at_one_step_and_marks_the_runs_killed(image_folder, tmp_path):
    """Under DDP the signal only flags Lightning's loop, which stops every rank at the same step: no rank is
    left waiting in an all-reduce the other never joins (SLURM's scancel showed that hang)."""
    # to rank 0, as `kill` would; Lightning started rank 1
    terminated_after_first_checkpoint(
        image_folder, tmp_path, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"
    )
    client = store(tmp_path)
    runs = client.search_runs([client.get_experiment_by_name("image-classification").experiment_id])
    assert {r.info.status for r in runs} == {"KILLED"} and len(runs) == 2


def test_loader_workers_outlive_a_schedulers_sigterm(tmp_path):
    """scancel signals every process of a job: a loader worker that died of it would fail the run with a
    "worker killed" error before the main process could end it as interrupted (KILLED)."""
    from pathlib import Path

    from conftest import make_image_folder

    from pipeline.data.datamodule import ImageDataModule
    from pipeline.data.sources import build_index
    from pipeline.data.transforms import Preprocess

    index = build_index(make_image_folder(tmp_path / "images", per_class=4, size=16), 0.25, 0.0, 0)
    preprocess = Preprocess(12, (0.5,) * 3, (0.25,) * 3, "bicubic", 0.875)
    loader = ImageDataModule(index, preprocess, [], 2, num_workers=1).train_dataloader()
    batches = iter(loader)
    next(batches)  # the worker runs
    me = os.getpid()
    workers = [int(p) for p in Path(f"/proc/{me}/task/{me}/children").read_text().split()]
    assert workers
    for pid in workers:
        os.kill(pid, signal.SIGTERM)
    time.sleep(0.5)
    assert sum(1 for _ in batches) > 0 and sum(1 for _ in loader) > 0  # the rest, then another epoch


def test_a_run_left_running_by_a_dead_process_is_marked_killed(tmp_path):
    tracker = Tracker("image-classification", None, str(tmp_path / "mlruns"))
    gone = subprocess.Popen(["true"])
    gone.wait()  # its pid now belongs to no process
    host = socket.gethostname()
    dead = tracker.client.create_run(tracker.experiment_id, tags={"pid": str(gone.pid), "host": host})
    alive = tracker.client.create_run(tracker.experiment_id, tags={"pid": str(os.getpid()), "host": host})
    assert mark_abandoned_runs(tracker) == [dead.info.run_id]
    assert tracker.client.get_run(dead.info.run_id).info.status == "KILLED"
    assert tracker.client.get_run(alive.info.run_id).info.status == "RUNNING"


def test_a_requeued_slurm_job_continues_its_own_run(make_cfg, image_folder, tmp_path, monkeypatch):
    """SLURM requeues a job (preemption, `scontrol requeue`) with the same id and SLURM_RESTART_COUNT set:
    the restarted job continues the run it had started, not a new one, and not another job's run."""
    import pipeline.stages.sanity as sanity

    job = ["stages=[data,sanity]", "data.audit=false", "model=simple_cnn", "data.image_size=16"]
    cfg = make_cfg(*job, root=image_folder)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    with monkeypatch.context() as preempted:
        preempted.setattr(sanity, "run", lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        with pytest.raises(KeyboardInterrupt):
            run(cfg)  # the job's first start, interrupted in its second stage
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    run(make_cfg(*job, root=image_folder))
    client = store(tmp_path)
    runs = client.search_runs([client.get_experiment_by_name("image-classification").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.data.tags["slurm_job"] == "77" and parent.info.status == "FINISHED"
    assert sorted(r.info.run_name for r in runs if r is not parent) == ["data", "sanity"]  # data not re-run


def test_resume_refuses_runs_that_cannot_resume(make_cfg, tmp_path):
    from pipeline.errors import PipelineError

    with pytest.raises(PipelineError, match="no interrupted or failed pipeline run"):
        run(make_cfg("resume=true"))
    with pytest.raises(PipelineError, match="no MLflow run"):
        run(make_cfg("resume=0123456789abcdef0123456789abcdef"))


def test_an_interrupt_during_an_mlflow_write_waits_until_the_write_is_done():
    """Raised mid-write, the interrupt would leave SQLite locked and the run could not be marked KILLED."""
    done, before = [], signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a background job
    with pytest.raises(KeyboardInterrupt), sigterm_as_interrupt():
        with uninterrupted():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)  # the handler runs here when nothing holds it back
            done.append("write finished")
    assert done == ["write finished"]
    assert signal.getsignal(signal.SIGINT) is before  # handlers are put back
