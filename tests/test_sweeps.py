"""Hydra sweeps as users start them (`python -m pipeline -m ...`, `hparams_search=...`): one MLflow parent run
per job in one experiment, and Optuna sees the objective the pipeline returns. Launcher presets compose."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import CONF_DIR, make_image_folder, make_multilabel_folder, run_cli
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from pipeline.schema import register
from pipeline.sweeps.study import load_storage


def cli_on_tiny_data(image_folder, tmp_path, *args: str):
    """The CLI on the tiny folder, data stage only, everything written under tmp_path."""
    done = run_cli(
        *args,
        "stages=[data]",
        "data.audit=false",
        f"data.root={image_folder}",
        f"tracking.dir={tmp_path / 'mlruns'}",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def parent_runs(tmp_path) -> list:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("image-classification").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert {r.info.status for r in runs} == {"FINISHED"} and len(runs) == 2 * len(parents)
    return parents


@pytest.mark.slow
def test_multirun_gives_one_parent_run_per_job(image_folder, tmp_path, store):
    cli_on_tiny_data(image_folder, tmp_path, "-m", "data.val_fraction=0.25,0.5")
    parents = parent_runs(tmp_path)
    assert sorted(p.data.params["data.val_fraction"] for p in parents) == ["0.25", "0.5"]
    assert sorted(p.data.metrics["data/val_images"] for p in parents) == [9, 18]
    assert sorted(p.info.run_name[-3:] for p in parents) == ["-#0", "-#1"]  # jobs named apart


@pytest.mark.slow
def test_parallel_jobs_on_a_folder_start_their_loader_workers_and_finish(image_folder, tmp_path, store):
    """joblib's loky jobs hand their processes loky's start method; the folder preset's loader workers
    (data.num_workers=2, lowered to each job's share but not to 0) once died with it at validate."""
    done = run_cli(
        "-m",
        "hydra/launcher=parallel",
        "data=folder",
        f"data.root={image_folder}",
        "data.image_size=16",
        "data.batch_size=8",
        "data.audit=false",
        "trainer.max_epochs=1",
        "stages=[data,train,calibrate,validate]",
        "seed=1,2",
        f"tracking.dir={tmp_path / 'mlruns'}",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("image-classification").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    assert all("test/acc" in p.data.metrics for p in parents)


@pytest.mark.slow
def test_optuna_sweep_maximizes_the_objective_the_pipeline_returns(image_folder, tmp_path, store):
    cli_on_tiny_data(
        image_folder,
        tmp_path,
        "hparams_search=digits_optuna",
        "hydra.sweeper.n_trials=2",
        "data.val_fraction=interval(0.1, 0.6)",  # a command-line search space joins the preset's
        "objective=data/train_images",
    )
    parents = parent_runs(tmp_path)
    assert len(parents) == 2
    assert all(1e-4 <= float(p.data.params["optimizer.lr"]) <= 1e-2 for p in parents)
    result = yaml.safe_load((tmp_path / "multirun" / "optimization_results.yaml").read_text())
    assert result["best_value"] == max(p.data.metrics["data/train_images"] for p in parents)


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["hydra/launcher=parallel"], {"_target_": "JoblibLauncher", "n_jobs": 2}),
        (
            ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"],
            {"_target_": "SlurmLauncher", "nodes": 2, "tasks_per_node": 4, "gpus_per_node": 4},
        ),
        (  # one task and one GPU a job with the default devices=auto; no GPU request for CPU training
            ["hydra/launcher=slurm"],
            {"_target_": "SlurmLauncher", "nodes": 1, "tasks_per_node": 1, "gpus_per_node": 1},
        ),
        (
            ["hydra/launcher=slurm", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=[0,1]"],
            {"_target_": "SlurmLauncher", "nodes": 1, "tasks_per_node": 2, "gpus_per_node": None},
        ),
    ],
)
def test_launcher_presets_compose(overrides, expected):
    register()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith(expected.pop("_target_"))
    assert {key: launcher[key] for key in expected} == expected


def test_a_slurm_job_needs_a_device_count_it_can_request():
    register()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=["hydra/launcher=slurm", "trainer.devices=-1"],
            return_hydra_config=True,
        )
    with pytest.raises(Exception, match="trainer.devices=-1 cannot size a SLURM job"):
        cfg.hydra.launcher.tasks_per_node  # noqa: B018 (resolving is the test)


@pytest.mark.parametrize(
    "sbatch_says, hint",
    [
        ("sbatch: error: Invalid generic resource (gres) specification", "trainer=cpu"),
        ("sbatch: error: invalid partition specified: gpu", "hydra.launcher.partition="),
    ],
)
def test_a_job_slurm_refuses_is_one_line_naming_the_setting(sbatch_says, hint):
    """sbatch's own lines (as seen on the local cluster), through the CLI's one-line error."""
    from submitit.core.utils import FailedJobError

    from pipeline.__main__ import error_line

    line = error_line(FailedJobError(f"{sbatch_says}\nsbatch: error: Batch job submission failed: Invalid"))
    assert line.startswith(f"error: SLURM refused the job: {sbatch_says} (") and hint in line


@pytest.mark.parametrize(
    "environment, tag",
    [
        (
            {"SLURM_JOB_ID": "17", "SLURM_ARRAY_JOB_ID": "16", "SLURM_ARRAY_TASK_ID": "1"},
            {"slurm_job": "16_1"},
        ),
        ({"SLURM_JOB_ID": "17"}, {"slurm_job": "17"}),
        ({}, {}),
    ],
)
def test_a_run_names_the_slurm_job_it_ran_in(monkeypatch, environment, tag):
    from pipeline.run_lifecycle import slurm_job

    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert slurm_job() == tag  # what `scancel` takes: a sweep's job is one task of an array


@pytest.mark.slow
def test_each_multirun_job_runs_its_own_two_ddp_ranks(image_folder, tmp_path, store):
    """Lightning starts rank 1 by re-running the command line: in a sweep it must be the job's, not `-m` with
    every value (which ran the whole sweep again inside rank 1), and the next job must start its own ranks."""
    done = run_cli(
        "-m", "seed=1,2", "trainer.devices=2", "trainer.accelerator=cpu", "debug=smoke", "stages=[train]",
        f"data.root={image_folder}", f"tracking.dir={tmp_path / 'mlruns'}",
        f"data.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={tmp_path / 'multirun'}",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert (done.stdout + done.stderr).count("Launching 2 jobs locally") == 1
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("image-classification-smoke").experiment_id])
    assert {r.info.status for r in runs} == {"FINISHED"}
    parents = sorted((r for r in runs if r.info.run_name != "train"), key=lambda r: r.data.params["seed"])
    trains = [r for r in runs if r.info.run_name == "train"]
    assert [p.data.params["seed"] for p in parents] == ["1", "2"] and len(trains) == 2
    assert all(t.data.params["train.world_size"] == "2" for t in trains)
    assert all(t.data.metrics["train/rank_weight_diff"] == 0.0 for t in trains)
    for job in ("0", "1"):  # rank 1 ran in its job's folder
        assert (tmp_path / "multirun" / job / "train_ddp_process_1.log").is_file()
    stray = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout
    assert stray == "", stray


def study_trials(tmp_path, name: str) -> list:
    """The trials of study `name` in the sweep's default storage, beside the MLflow store."""
    import optuna

    storage = load_storage(f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}")  # not while a sweep creates it
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


@pytest.mark.slow
def test_a_pruned_trial_ends_its_job_with_0_and_the_sweep_goes_on(image_folder, tmp_path, store):
    """A pruner that prunes every value below 2 stops each trial after its first epoch: both trials end
    PRUNED, their jobs return normally, and no stage after training runs."""
    done = run_cli(
        "hparams_search=digits_optuna", "hydra.sweeper.n_trials=2", "debug=smoke", "trainer.max_epochs=3",
        "stages=[train,validate]", "~hydra.sweeper.pruner",
        "+hydra.sweeper.pruner={_target_: optuna.pruners.ThresholdPruner, lower: 2.0}",
        f"data.root={image_folder}", f"tracking.dir={tmp_path / 'mlruns'}",
        f"data.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={tmp_path / 'multirun'}",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert [t.state.name for t in study_trials(tmp_path, "digits_optuna")] == ["PRUNED", "PRUNED"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("image-classification-smoke").experiment_id])
    assert {r.info.status for r in runs} == {"FINISHED"}
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(p.data.tags["optuna.trial"] for p in parents) == ["0", "1"]
    assert {p.data.tags["optuna.state"] for p in parents} == {"PRUNED"}
    assert {p.data.metrics["train/pruned_epoch"] for p in parents} == {0}
    assert sorted(r.info.run_name for r in runs if r not in parents) == ["train", "train"]  # no validate


def optuna_best(tmp_path, name: str) -> int:
    import optuna

    storage = load_storage(f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}")
    return optuna.load_study(study_name=name, storage=storage).best_trial.number


def trials_in(tmp_path, name: str, state: str) -> int:
    try:
        return sum(t.state.name == state for t in study_trials(tmp_path, name))
    except KeyError:  # the study is not created yet
        return 0


@pytest.mark.slow
def test_a_sweep_stopped_with_ctrl_c_and_run_again_finishes_without_repeating_trials(
    image_folder, tmp_path, store
):
    args = [
        "hparams_search=digits_optuna", "hydra.sweeper.n_trials=4", "hydra.sweeper.params={}",
        "data.val_fraction=interval(0.1, 0.6)", "objective=data/train_images", "stages=[data]",
        "data.audit=false", f"data.root={image_folder}", f"tracking.dir={tmp_path / 'mlruns'}",
        f"data.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={tmp_path / 'multirun'}",
    ]  # fmt: skip
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONPATH": str(Path(CONF_DIR).parent)}
    first = subprocess.Popen(  # Ctrl-C's default action even when the suite runs as a background job
        [sys.executable, "-m", "pipeline", *args], cwd=tmp_path, env=env, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while trials_in(tmp_path, "digits_optuna", "COMPLETE") < 2 and first.poll() is None:
        assert time.monotonic() < deadline, "two trials did not finish in 240 s"
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGINT)
    stopped_after = first.communicate(timeout=120)[1]
    assert first.returncode == 130, stopped_after[-2000:]
    before = trials_in(tmp_path, "digits_optuna", "COMPLETE")
    assert 2 <= before < 4
    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    trials = study_trials(tmp_path, "digits_optuna")
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 4 and {t.state.name for t in trials} <= {"COMPLETE", "FAIL"}
    assert len({t.params["data.val_fraction"] for t in complete}) == 4  # none repeated
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("image-classification").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    finished = {p.data.tags["optuna.trial"] for p in parents if p.info.status == "FINISHED"}
    assert finished == {str(t.number) for t in complete}  # one finished parent run a completed trial
    stopped = [p for p in parents if p.info.status != "FINISHED"]  # the trial Ctrl-C stopped, if it had begun
    assert len(stopped) <= len(trials) - 4 and {p.info.status for p in stopped} <= {"KILLED"}


@pytest.mark.slow
def test_two_sweeps_on_one_study_at_once_share_it(image_folder, tmp_path, store):
    """The second sweep starts while the first runs a trial: it once failed that trial and took it over,
    and the first died telling it. Now each counts the other's running trials and leaves them alone."""
    args = [
        "hparams_search=digits_optuna", "hydra.sweeper.n_trials=8", "hydra.sweeper.params={}",
        "data.val_fraction=interval(0.1, 0.6)", "objective=data/train_images", "stages=[data]",
        "data.audit=false", f"data.root={image_folder}", f"tracking.dir={tmp_path / 'mlruns'}",
        f"data.cache_dir={tmp_path / 'cache'}",
    ]  # fmt: skip
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONPATH": str(Path(CONF_DIR).parent)}
    first = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args, f"hydra.sweep.dir={tmp_path / 'first'}"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while trials_in(tmp_path, "digits_optuna", "RUNNING") == 0 and first.poll() is None:
        assert time.monotonic() < deadline, "the first sweep ran no trial in 240 s"
        time.sleep(0.1)
    second = run_cli(*args, f"hydra.sweep.dir={tmp_path / 'second'}", cwd=tmp_path)
    first_err = first.communicate(timeout=240)[1]
    assert first.returncode == 0 and second.returncode == 0, (first_err[-2000:], second.stderr[-2000:])
    assert "Traceback" not in first_err + second.stderr
    trials = study_trials(tmp_path, "digits_optuna")
    assert {t.state.name for t in trials} == {"COMPLETE"}  # none failed, none taken over
    assert 8 <= len(trials) <= 9  # the two may each ask the last trial at the same instant
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("image-classification").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(int(p.data.tags["optuna.trial"]) for p in parents) == [t.number for t in trials]
    assert {p.info.status for p in parents} == {"FINISHED"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "storage, says",
    [
        ("garbage://x", "Can't load plugin: sqlalchemy.dialects:garbage"),
        ("sqlite:////proc/nope/s.db", "No such file or directory: '/proc/nope'"),
        ("NOT_A_DATABASE", "file is not a database"),
        ("study.db", "a database file is named as sqlite:///"),
        ("/proc/nope/study.log", "No such file or directory"),
    ],
)
def test_a_study_storage_optuna_cannot_open_is_one_line_and_exit_2(image_folder, tmp_path, storage, says):
    if storage == "NOT_A_DATABASE":
        (tmp_path / "text.db").write_text("not a database")
        storage = f"sqlite:///{tmp_path / 'text.db'}"
    done = run_cli(
        "hparams_search=digits_optuna", f"hydra.sweeper.storage={storage}", "stages=[data]",
        f"data.root={image_folder}", f"tracking.dir={tmp_path / 'mlruns'}",
        f"hydra.sweep.dir={tmp_path / 'm'}", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.startswith(f"error: hydra.sweeper.storage={storage}: Optuna cannot open it (")
    assert says in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["n_trials=-3", "n_trials=0", "n_jobs=0"])
def test_a_sweep_size_below_one_is_one_line_and_exit_2(image_folder, tmp_path, setting):
    done = run_cli(
        "hparams_search=digits_optuna", f"hydra.sweeper.{setting}", "stages=[data]",
        f"data.root={image_folder}", f"tracking.dir={tmp_path / 'mlruns'}",
        f"hydra.sweep.dir={tmp_path / 'm'}", cwd=tmp_path,
    )  # fmt: skip
    name, value = setting.split("=")
    assert (done.returncode, done.stderr) == (
        2,
        f"error: hydra.sweeper.{name} must be a whole number >= 1, got {value}\n",
    )


@pytest.mark.slow
def test_a_sweep_compares_trials_on_val_and_scores_test_once_for_the_best(image_folder, tmp_path, store):
    done = run_cli(
        "hparams_search=digits_optuna", "hydra.sweeper.n_trials=2", "debug=smoke", "stages=[train,validate]",
        "hydra.sweeper.pruner=null", f"data.root={image_folder}", f"tracking.dir={tmp_path / 'mlruns'}",
        f"data.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={tmp_path / 'multirun'}", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("image-classification-smoke").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = [p for p in parents if "optuna.trial" in p.data.tags]
    assert len(trials) == 2 and all(
        "val/acc" in t.data.metrics and "test/acc" not in t.data.metrics for t in trials
    )
    (final,) = [p for p in parents if p not in trials]
    best = optuna_best(tmp_path, "digits_optuna")
    assert final.info.run_name == f"digits_optuna-best-trial-{best}" and final.info.status == "FINISHED"
    assert "test/acc" in final.data.metrics
    out = done.stdout  # trial 0 says everything; trial 1 one line; the closing job its scores
    assert out.count("[train] epoch 1/1") == 1 and out.count("finished in") == 3, out[-3000:]
    assert "[pipeline] trial 1 finished in" in out and "test split left out" in out


def imbalanced_folder(tmp_path: Path) -> Path:
    root = make_image_folder(tmp_path / "images", per_class=24)
    for image in sorted((root / "checker").iterdir())[6:]:
        image.unlink()  # 24:24:6, above data.imbalance_threshold 3
    return root


def labels_file(tmp_path: Path) -> Path:
    return make_multilabel_folder(tmp_path / "mosaics", images=40)


@pytest.mark.slow
@pytest.mark.parametrize(
    "make_folder, objective",
    [(imbalanced_folder, "val/bal_acc"), (labels_file, "val/map")],
    ids=["imbalanced", "multilabel"],
)
def test_the_study_is_named_after_the_objective_its_trials_return(tmp_path, store, make_folder, objective):
    """objective=auto picks the checkpoint by val/bal_acc on imbalanced classes and by val/map on several
    labels an image: the study, its summary and its results say so, not val/acc."""
    done = run_cli(
        "hparams_search=digits_optuna", "objective=auto", "hydra.sweeper.n_trials=1", "debug=smoke",
        "stages=[data,train]",
        "data.audit=false", "hydra.sweeper.pruner=null", f"data.root={make_folder(tmp_path)}",
        f"tracking.dir={tmp_path / 'mlruns'}", f"data.cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={tmp_path / 'multirun'}", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    import optuna

    storage = load_storage(f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}")
    study = optuna.load_study(study_name="digits_optuna", storage=storage)
    assert study.metric_names == [objective]
    (trial,) = study.get_trials(deepcopy=False)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    metrics = client.get_run(trial.user_attrs["mlflow_run_id"]).data.metrics
    assert trial.value == pytest.approx(metrics[f"train/best_{objective.replace('/', '_')}"])
    assert f"best {objective}" in done.stdout + done.stderr
