"""All six stages on a tiny folder, then the MLflow store read back: what a user would see in the UI."""

import json
import re

import pytest
from conftest import artifact_paths
from mlflow.tracking import MlflowClient

from pipeline.errors import PipelineError
from pipeline.run_story import command_line
from pipeline.runner import run
from pipeline.tracking import RUNS_VIEW_KEY

STAGES = ["data", "sanity", "train", "calibrate", "validate", "export"]
TINY = [
    "data.image_size=32",
    "data.batch_size=8",
    "trainer.max_epochs=2",
    "sanity.overfit_target_loss=0.5",
    "export.latency_runs=2",  # timings are tested in test_export.py; 20 runs of PyTorch on a busy CPU: ~40 s
]


def runs_by_parent(client: MlflowClient, experiment_id: str) -> dict[str, list]:
    runs = client.search_runs([experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return {
        p.info.run_id: [r for r in runs if r.data.tags.get("mlflow.parentRunId") == p.info.run_id]
        for p in parents
    }


def assert_the_run_tells_its_story(client: MlflowClient, experiment, parent) -> None:
    """What the MLflow UI shows: the training view, a readable name, a description, datasets, the model."""
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert re.fullmatch(r"resnet18-images-\d{4}-\d{4}", parent.info.run_name), parent.info.run_name
    note = parent.data.tags["mlflow.note.content"]
    assert "**Model** resnet18" in note and "**val/acc**" in note and "| export |" in note, note
    inputs = {d.tags[0].value: d.dataset for d in parent.inputs.dataset_inputs}  # context -> dataset
    assert set(inputs) == {"train", "val", "test"}  # classes of 12 images spare none for a calib split
    assert all(d.source_type == "local" and len(d.digest) == 16 for d in inputs.values())
    assert sum(json.loads(d.profile)["num_rows"] for d in inputs.values()) == 36
    (linked,) = parent.outputs.model_outputs
    model = client.get_logged_model(linked.model_id)
    assert model.name == "image_classifier" and model.source_run_id != parent.info.run_id  # the export stage


STAGE_DEVICES = [("data", "data.audit_device"), ("sanity", "sanity.device"), ("validate", "validate.device")]


@pytest.mark.slow
def test_pipeline_runs_six_stages_and_records_them(make_cfg, image_folder, tmp_path, audit_cache):
    cfg = make_cfg(
        *TINY, "data.audit=true", "audit.image_size=64", f"data.cache_dir={audit_cache}", root=image_folder
    )
    objective = run(cfg)

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("image-classification")
    families = runs_by_parent(client, experiment.experiment_id)
    assert len(families) == 1
    parent_id, children = next(iter(families.items()))
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert sorted(c.info.run_name for c in children) == sorted(STAGES)
    assert {c.info.status for c in children} == {"FINISHED"}

    metrics = parent.data.metrics
    # the runs view the summary links to shows the parent run's own metrics and params, each of them
    view = json.loads(experiment.tags[f"mlflow.sharedViewState.{RUNS_VIEW_KEY}"])
    logged = {"metrics": set(metrics), "params": set(parent.data.params)}
    shown = [c.split(".", 1) for c in view["selectedColumns"] if not c.startswith("attributes.")]
    assert [f"{kind}.{name}" for kind, name in shown if name.strip("`") not in logged[kind]] == []
    assert client.search_runs([experiment.experiment_id], view["searchFilter"])[0].info.run_id == parent_id
    assert len(client.search_runs([experiment.experiment_id], view["searchFilter"])) == 1
    assert objective == pytest.approx(metrics["val/acc"])
    assert metrics["data/num_images"] == 36 and metrics["data/num_classes"] == 3
    assert metrics["sanity/passed"] == 1.0 and metrics["data/leakage"] == 0 and metrics["data/corrupt"] == 0
    assert {"data/label_issues", "data/outliers"} <= set(metrics) and metrics["data/quality_issues"] == 0
    assert metrics["export/parity_max_abs_diff"] <= 1e-4 and metrics["export/parity_top1_agreement"] == 1.0
    # the exported model, scored by onnxruntime on the val images, scores what validate gave the checkpoint
    assert metrics["export/onnx_acc"] == pytest.approx(metrics["val/acc"])
    assert parent.data.params["model.name"] == "resnet18" and parent.data.params["trainer.max_epochs"] == "2"
    assert parent.data.tags["command"] == command_line()  # pytest's own here: see test_run_story.py
    assert parent.data.tags["git.dirty"] in ("True", "False")
    assert "config.yaml" in artifact_paths(client, parent_id)
    assert_the_run_tells_its_story(client, experiment, parent)

    by_stage = {c.info.run_name: c for c in children}
    expected = {
        "data": {
            "stats.json",
            "index.csv",
            "integrity.json",
            "plots/class_distribution.png",
            "plots/image_sizes.png",
            "plots/samples.png",
        },
        "sanity": {"sanity_verdict.json", "plots/augmentation_preview.png"},
        "train": {"checkpoints/best.ckpt"},
        "validate": {"plots/confusion_matrix_val.png", "plots/roc_val.png", "reports/per_class_val.csv"},
        "export": {"model.onnx"},
    }
    for stage, files in expected.items():
        assert files <= artifact_paths(client, by_stage[stage].info.run_id), stage
    devices = {name: by_stage[stage].data.params.get(name) for stage, name in STAGE_DEVICES}
    assert devices == dict.fromkeys(devices, "cpu")  # each stage says where it ran (no GPU here)
    train_history = client.get_metric_history(by_stage["train"].info.run_id, "train/loss")
    assert [m.step for m in train_history] == [0, 1]

    # The validate stage alone, on the checkpoint just written, reproduces the same numbers.
    ckpt = tmp_path / "out" / "checkpoints" / "best.ckpt"
    again = run(make_cfg(*TINY, "stages=[validate]", f"ckpt_path={ckpt}", root=image_folder))
    assert again == pytest.approx(metrics["val/acc"])


def test_missing_data_folder_fails_the_runs_it_started(make_cfg, tmp_path):
    with pytest.raises(PipelineError, match="data folder not found"):
        run(make_cfg(root=tmp_path / "nowhere"))
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("image-classification").experiment_id])
    assert sorted((r.info.run_name is not None, r.info.status) for r in runs) == [(True, "FAILED")] * 2


def test_validate_alone_without_checkpoint_says_what_is_missing(make_cfg, image_folder):
    with pytest.raises(PipelineError, match="needs a checkpoint"):
        run(make_cfg("stages=[validate]", root=image_folder))
