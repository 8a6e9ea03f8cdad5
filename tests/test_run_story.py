"""What a parent run says about itself in the MLflow UI: name, command, description, dataset digest."""

import re
import sys

import pytest
from conftest import run_cli
from mlflow.tracking import MlflowClient

from pipeline.run_story import command_line, content_digest, description, run_name
from pipeline.runner import run


def test_a_run_is_named_after_its_model_and_data_unless_named(make_cfg, tmp_path):
    assert re.fullmatch(r"simple_cnn-digits-\d{4}-\d{4}", run_name(make_cfg("model=simple_cnn")))
    folder = tmp_path / "my photos"
    assert run_name(make_cfg("data=folder", f"data.root='{folder}'")).startswith("resnet18-my photos-")
    assert run_name(make_cfg("tracking.run_name=baseline")) == "baseline"


def test_the_command_is_the_one_typed(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/repo/pipeline/__main__.py", "model=resnet18", "data.root=/my photos"])
    assert command_line() == "python -m pipeline model=resnet18 'data.root=/my photos'"


def test_the_description_grows_with_metrics_and_stage_times(make_cfg):
    cfg = make_cfg("model=simple_cnn")
    start = description(cfg)
    assert "**Model** simple_cnn" in start and "**val/acc**" not in start and "| stage |" not in start
    end = description(cfg, {"val/acc": 0.91234, "train/loss": 0.3}, {"data": 2.0, "train": 65.0})
    assert "**val/acc** 0.9123" in end and "train/loss" not in end
    assert "| train | 1m05s |" in end and "| total | 1m07s |" in end


def test_the_content_digest_ignores_order_and_sees_any_change():
    assert content_digest(["b", "a"]) == content_digest(["a", "b"]) != content_digest(["a", "c"])


def test_an_experiment_made_by_an_older_version_gets_the_training_kind(make_cfg, tmp_path, image_folder):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    old = client.create_experiment("image-classification", (tmp_path / "artifacts").as_uri())  # no kind tag
    run(make_cfg("stages=[data]", root=image_folder))
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"


@pytest.mark.slow
def test_a_smoke_run_is_kept_apart_from_real_runs(image_folder, tmp_path):
    """Its own output folder (predict's default never sees its model), its own experiment and a name that
    says smoke, so that predict, serve and the runs table all take real runs by default."""
    done = run_cli(
        "debug=smoke", "stages=[data]", "data=folder", f"data.root={image_folder}", "data.audit=false",
        f"tracking.dir={tmp_path / 'mlruns'}", f"data.cache_dir={tmp_path / 'cache'}", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert [p.parent.parent.name for p in tmp_path.glob("outputs/*/*/index.csv")] == ["smoke"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("image-classification-smoke")
    (parent,) = [r for r in client.search_runs([experiment.experiment_id]) if r.info.run_name != "data"]
    assert parent.info.run_name.startswith("smoke-resnet18-")
    assert client.get_experiment_by_name("image-classification") is None
