"""Pipeline runs at the same moment against one fresh SQLite store: every run and metric is recorded.

The processes are forked from the test process (no 7-second imports each) and released together by a
barrier, so they create the store, the experiment and their runs at the same time.
"""

import importlib
import multiprocessing

from mlflow.tracking import MlflowClient

from pipeline.runner import run

PROCESSES = 3


def _run_when_released(cfg, barrier) -> None:
    barrier.wait(timeout=60)
    run(cfg)


def run_at_once(cfgs: list) -> list[int | None]:
    """Exit codes of one forked pipeline run per config, all started together."""
    fork = multiprocessing.get_context("fork")
    barrier = fork.Barrier(len(cfgs))
    procs = [fork.Process(target=_run_when_released, args=(cfg, barrier)) for cfg in cfgs]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=180)
        if proc.is_alive():  # hung: leave nothing behind, the exit code (None) fails the test
            proc.kill()
    return [proc.exitcode for proc in procs]


def parallel_data_runs(make_cfg, folder, tmp_path, *overrides: str) -> None:
    """The data stage, PROCESSES runs at once; each must exit cleanly."""
    importlib.import_module("pipeline.stages.data")  # once here rather than in every forked child
    cfgs = [
        make_cfg(
            "stages=[data]",
            f"seed={i}",
            f"output_dir={tmp_path / f'out{i}'}",
            f"data.cache_dir={tmp_path / f'cache{i}'}",  # the runs share the MLflow store and nothing else
            *overrides,
            root=folder,
        )
        for i in range(PROCESSES)
    ]
    assert run_at_once(cfgs) == [0] * PROCESSES


def assert_all_recorded(client: MlflowClient, experiment: str) -> None:
    """PROCESSES parent runs, each FINISHED with its data child run and its headline metrics."""
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == PROCESSES
    for parent in parents:
        assert parent.info.status == "FINISHED"
        assert parent.data.metrics["data/num_images"] == 36 and parent.data.params["stages"] == "['data']"
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert [(c.info.run_name, c.info.status) for c in children] == [("data", "FINISHED")]
        assert children[0].data.metrics["data/train_images"] > 0
    assert sorted(p.data.params["seed"] for p in parents) == [str(i) for i in range(PROCESSES)]


def test_parallel_runs_share_one_sqlite_store(make_cfg, image_folder, tmp_path):
    parallel_data_runs(make_cfg, image_folder, tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    assert_all_recorded(client, "image-classification")


def test_parallel_runs_through_the_server(tracking_server, make_cfg, image_folder, tmp_path):
    url = tracking_server
    parallel_data_runs(make_cfg, image_folder, tmp_path, f"tracking.uri={url}", "tracking.experiment=many")
    assert_all_recorded(MlflowClient(url), "many")
