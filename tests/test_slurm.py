"""Real SLURM jobs through sbatch, on the two-node cluster scripts/slurm_local.sh starts (or any cluster whose
partition takes CPU jobs): a Hydra sweep with hydra/launcher=slurm, one DDP job across two nodes, a DDP job
cancelled with scancel then resumed, and one requeued that continues its run. Each records to a tracking
server the module starts on 127.0.0.1. Without a SLURM cluster they are skipped, with the reason."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import CONF_DIR, make_multilabel_folder
from mlflow.tracking import MlflowClient


def why_no_cluster(wait_s: float = 30) -> str | None:
    """None when sbatch is installed and a controller answers with two nodes up or more (nodes still
    finishing a job that ended a moment ago are waited for, up to `wait_s`)."""
    if shutil.which("sbatch") is None:
        return "SLURM is not installed (scripts/slurm_local.sh start installs it and starts a local cluster)"
    deadline = time.monotonic() + wait_s
    while True:
        try:
            info = subprocess.run(["sinfo", "-h", "-o", "%D %t"], capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            return "sinfo did not answer within 30 s"
        if info.returncode != 0:
            reason = (info.stderr.strip().splitlines() or ["no output"])[-1]
            return f"no SLURM cluster answers ({reason}): scripts/slurm_local.sh start"
        usable = ("idle", "mix", "alloc", "comp")  # busy nodes take the jobs when free; down or drained never
        lines = [line.split() for line in info.stdout.splitlines() if line.strip()]
        up = sum(int(count) for count, state in lines if state.startswith(usable))
        if up >= 2:
            return None
        if time.monotonic() > deadline:
            states = ", ".join(" ".join(line) for line in lines) or "none"
            return f"the SLURM cluster has {up} nodes up ({states}); these tests need 2"
        time.sleep(1)


REASON = why_no_cluster()
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(REASON is not None, reason=str(REASON))]

TINY_JOB = [
    "hydra/launcher=slurm",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=10",
    "trainer.accelerator=cpu",  # no GPUs requested: the local cluster has none
    "model=simple_cnn",
    "model.kwargs.channels=[8,16]",
    "data.image_size=16",
    "data.batch_size=8",
    "data.audit=false",
    "trainer.enable_progress_bar=false",
]


def submit(
    url: str, experiment: str, tmp_path: Path, image_folder: Path, *overrides: str
) -> subprocess.Popen:
    """`python -m pipeline -m <overrides>` as a user types it: Hydra submits the jobs and waits for them."""
    command = [
        sys.executable, "-m", "pipeline", "-m", *TINY_JOB, *overrides,
        "tracking=server", f"tracking.uri={url}", f"tracking.experiment={experiment}",
        f"data.root={image_folder}", f"data.cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={tmp_path / 'jobs'}",
    ]  # fmt: skip
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONPATH": str(Path(CONF_DIR).parent)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finished(process: subprocess.Popen, timeout: float = 240) -> str:
    output = process.communicate(timeout=timeout)[0]
    assert process.returncode == 0, output[-3000:]
    return output


def runs_of(url: str, experiment: str) -> tuple[list, dict[str, list]]:
    """(parent runs, parent run id -> its stage runs)."""
    client = MlflowClient(url)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {
        p.info.run_id: [r for r in runs if r.data.tags.get("mlflow.parentRunId") == p.info.run_id]
        for p in parents
    }
    return parents, children


def squeue_state(job: str) -> str:
    done = subprocess.run(["squeue", "-h", "-j", job, "-o", "%t"], capture_output=True, text=True, timeout=30)
    return done.stdout.strip()


def test_a_sweep_runs_as_slurm_jobs_each_its_own_parent_run(tracking_server, tmp_path, image_folder):
    finished(submit(tracking_server, "sweep", tmp_path, image_folder, "stages=[data,train]", "seed=1,2"))
    parents, children = runs_of(tracking_server, "sweep")
    assert sorted(p.data.params["seed"] for p in parents) == ["1", "2"]
    assert {p.info.status for p in parents} == {"FINISHED"}
    assert all(sorted((c.info.run_name, c.info.status) for c in children[p.info.run_id])
               == [("data", "FINISHED"), ("train", "FINISHED")] for p in parents)  # fmt: skip
    jobs = sorted(p.data.tags["slurm_job"] for p in parents)  # one array, one task a job
    assert [job.split("_")[1] for job in jobs] == ["0", "1"] and len({job.split("_")[0] for job in jobs}) == 1


def test_an_optuna_sweep_runs_its_trials_as_slurm_jobs_into_a_persistent_study(
    tracking_server, tmp_path, image_folder
):
    """Two trials at once, each its own SLURM job reporting to the study beside the store (SQLite, opened by
    the jobs and the sweeper alike); each trial names its MLflow parent run and the run its trial."""
    import optuna

    overrides = ["hparams_search=digits_optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2"]
    overrides += ["stages=[data,train]", "trainer.max_epochs=2", f"tracking.dir={tmp_path / 'mlruns'}"]
    finished(submit(tracking_server, "optuna", tmp_path, image_folder, *overrides))
    storage = f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}"
    trials = optuna.load_study(study_name="digits_optuna", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    parents, _ = runs_of(tracking_server, "optuna")
    by_trial = {p.data.tags["optuna.trial"]: p for p in parents}
    assert sorted(by_trial) == ["0", "1"] and {p.info.status for p in parents} == {"FINISHED"}
    for trial in trials:
        parent = by_trial[str(trial.number)]
        assert trial.user_attrs["mlflow_run_id"] == parent.info.run_id
        assert trial.value == parent.data.metrics["train/best_val_acc"]
        assert parent.data.tags["slurm_job"]  # ran as a SLURM job


DDP_TWO_NODES = ["trainer=ddp", "trainer.devices=1", "trainer.num_nodes=2"]  # one task on each node


@pytest.mark.parametrize("task, objective", [("multiclass", "val/acc"), ("multilabel", "val/map")])
def test_ddp_across_two_slurm_nodes_is_one_run_with_equal_weights(
    tracking_server, tmp_path, image_folder, task, objective
):
    """One label an image (a folder) or several (a labels file): one run, the task's objective."""
    images = image_folder if task == "multiclass" else make_multilabel_folder(tmp_path / "mosaics", images=40)
    overrides = ["stages=[train]", "trainer.max_epochs=2", *DDP_TWO_NODES]
    finished(submit(tracking_server, f"ddp-{task}", tmp_path, images, *overrides))
    parents, children = runs_of(tracking_server, f"ddp-{task}")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # rank 1 recorded nothing
    (train,) = children[parents[0].info.run_id]
    assert (train.data.params["train.num_nodes"], train.data.params["train.world_size"]) == ("2", "2")
    assert train.data.params["train.objective"] == objective
    assert train.data.metrics["train/rank_weight_diff"] == 0.0  # both ranks ended with the same weights
    history = MlflowClient(tracking_server).get_metric_history(train.info.run_id, "train/loss")
    assert [m.step for m in history] == [0, 1]  # once per epoch: from rank 0 only
    assert (tmp_path / "jobs" / "0" / "checkpoints" / "best.ckpt").is_file()


def test_a_cancelled_ddp_job_ends_killed_and_resume_finishes_it(tracking_server, tmp_path, image_folder):
    """Both nodes' ranks get SLURM's SIGTERM; both resume from the same last.ckpt."""
    epochs = ["stages=[train]", "trainer.max_epochs=40", *DDP_TWO_NODES]
    process = submit(tracking_server, "cancel", tmp_path, image_folder, *epochs)
    last = tmp_path / "jobs" / "0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 180
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    (parent,), _ = runs_of(tracking_server, "cancel")
    subprocess.run(["scancel", parent.data.tags["slurm_job"]], check=True, timeout=30)
    deadline = time.monotonic() + 90  # SLURM's SIGTERM, then SIGKILL after its KillWait (30 s by default)
    while runs_of(tracking_server, "cancel")[0][0].info.status == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.5)
    process.kill()  # Hydra's launcher waits on the job's result, which a cancelled job never writes
    process.communicate()
    (parent,), children = runs_of(tracking_server, "cancel")
    (train,) = children[parent.info.run_id]
    assert (parent.info.status, train.info.status) == ("KILLED", "KILLED")
    assert torch.load(last, weights_only=True)["epoch"] < 39  # interrupted, its last checkpoint intact

    resumed = submit(
        tracking_server, "cancel", tmp_path, image_folder, f"resume={parent.info.run_id}", *DDP_TWO_NODES
    )
    finished(resumed)
    (again,), children = runs_of(tracking_server, "cancel")
    assert again.info.run_id == parent.info.run_id and again.info.status == "FINISHED"
    assert [r.info.run_id for r in children[again.info.run_id]] == [train.info.run_id]
    history = MlflowClient(tracking_server).get_metric_history(train.info.run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(40))  # continued, each epoch once


def test_a_requeued_ddp_job_continues_its_own_run(tracking_server, tmp_path, image_folder):
    """`scontrol requeue` (what preemption and node failures do): SLURM stops the job and starts it again
    under the same id; the second start continues the first start's run from its last.ckpt."""
    process = submit(tracking_server, "requeue", tmp_path, image_folder, "stages=[train]",
                     "trainer.max_epochs=40", *DDP_TWO_NODES)  # fmt: skip
    last = tmp_path / "jobs" / "0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 180
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    (parent,), _ = runs_of(tracking_server, "requeue")
    job = parent.data.tags["slurm_job"]
    subprocess.run(["scontrol", "requeue", job], check=True, timeout=30)
    deadline = time.monotonic() + 60  # pending again, eligible in 2 minutes (SLURM's requeue delay): now
    while squeue_state(job) != "PD" and time.monotonic() < deadline:
        time.sleep(0.5)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True, timeout=30)
    finished(process, timeout=300)  # Hydra's launcher gets the second start's result
    (again,), children = runs_of(tracking_server, "requeue")
    assert again.info.run_id == parent.info.run_id and again.info.status == "FINISHED"
    (train,) = children[again.info.run_id]
    history = MlflowClient(tracking_server).get_metric_history(train.info.run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(40))  # continued, each epoch once
