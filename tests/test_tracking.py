import pytest
from mlflow.tracking import MlflowClient

from pipeline.run_lifecycle import pipeline_run, stage_run
from pipeline.runner import run
from pipeline.tracking import Tracker, flatten, resolve_tracking_uri


def test_flatten_nests_keys_and_stringifies():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None, "e": {}}) == {
        "a.b": "1",
        "a.c": "[1, 2]",
        "d": "None",
        "e": "{}",
    }


def test_tracking_uri_precedence(monkeypatch, tmp_path):
    assert resolve_tracking_uri(None, str(tmp_path)) == f"sqlite:///{tmp_path}/mlflow.db"
    assert resolve_tracking_uri("http://127.0.0.1:1", str(tmp_path)) == "http://127.0.0.1:1"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert resolve_tracking_uri("http://127.0.0.1:1", str(tmp_path)) == "sqlite:///elsewhere.db"


def test_failure_marks_parent_and_stage_failed_and_keeps_headline(tmp_path):
    tracker = Tracker("exp", None, str(tmp_path))
    with pytest.raises(RuntimeError):
        story = ("r", "cmd", "")  # name, command, description
        with pipeline_run(tracker, {"model": {"name": "m"}}, "model:\n  name: m\n", story) as parent_id:
            with stage_run(tracker, "data"):
                tracker.log_metrics({"data/num_images": 5}, headline=True)
            with stage_run(tracker, "train"):
                raise RuntimeError("boom")
    client = MlflowClient(tracker.uri)
    parent = client.get_run(parent_id)
    assert parent.info.status == "FAILED"
    assert parent.data.params["model.name"] == "m" and parent.data.metrics["data/num_images"] == 5
    children = client.search_runs([tracker.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert {c.info.run_name: c.info.status for c in children} == {"data": "FINISHED", "train": "FAILED"}
    assert (tmp_path / "artifacts").is_dir()  # artifacts live beside the SQLite file


def test_each_tracker_keeps_to_its_own_store(tmp_path):
    """Runs in one process (Hydra's in-process multirun jobs) each record to their own tracking.dir."""
    recorded = {}
    for name in ("a", "b"):
        tracker = Tracker("exp", None, str(tmp_path / name))
        with pipeline_run(tracker, {}, "", (f"run-{name}", "cmd", "")):
            pass
        recorded[tracker.uri] = tracker.experiment_id
    assert list(recorded) == [f"sqlite:///{tmp_path / n / 'mlflow.db'}" for n in ("a", "b")]
    names = [[r.info.run_name for r in MlflowClient(uri).search_runs([exp])] for uri, exp in recorded.items()]
    assert names == [["run-a"], ["run-b"]]


def test_artifacts_go_beside_the_database_mlflow_tracking_uri_names(tmp_path, monkeypatch):
    """MLflow's default for a SQLite store is ./mlruns of the working folder: a checkout filled with them."""
    elsewhere = tmp_path / "elsewhere" / "mlflow.db"
    elsewhere.parent.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{elsewhere}")
    monkeypatch.chdir(tmp_path)
    tracker = Tracker("exp", None, str(tmp_path / "mlruns"))
    with pipeline_run(tracker, {}, "", ("r", "cmd", "")):
        with stage_run(tracker, "data"):
            tracker.log_text("hello", "note.txt")
    assert len(list((elsewhere.parent / "artifacts").rglob("note.txt"))) == 1
    assert not (tmp_path / "mlruns").exists()


def test_an_auto_setting_is_recorded_as_requested_and_then_as_the_value_used(
    make_cfg, image_folder, tmp_path
):
    """Runs are compared by the values they trained with (size, epochs, recipe, balancing, objective)."""
    run(
        make_cfg("stages=[data,sanity]", "data.image_size=auto", "trainer.max_epochs=auto", root=image_folder)
    )
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("image-classification").experiment_id
    (parent,) = client.search_runs([experiment], "tags.pid != ''")
    params = parent.data.params
    assert params["data.image_size.requested"] == "auto" and params["trainer.max_epochs.requested"] == "auto"
    assert params["data.image_size"] == "160" and int(params["trainer.max_epochs"]) > 0
    for key in ("finetune.strategy", "data.balance", "objective"):  # auto in conf/config.yaml
        assert params[f"{key}.requested"] == "auto" and params[key] != "auto", key
    description = parent.data.tags["mlflow.note.content"]
    assert f"{params['trainer.max_epochs']} epochs, 160 px" in description  # the values used, not auto
