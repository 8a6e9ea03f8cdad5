"""The validate stage on one tiny trained model, scored from its checkpoint, from its MLflow run and as an
ONNX file: the same numbers, the same artifacts, test-time augmentation, one clear line per bad input."""

import csv
import io
import shutil
from dataclasses import dataclass
from pathlib import Path

import onnx
import pytest
import torch
from conftest import artifact_paths, compose_cfg, make_image_folder
from mlflow.tracking import MlflowClient

from pipeline.context import Context
from pipeline.data.sources import build_index
from pipeline.data.transforms import Preprocess
from pipeline.errors import PipelineError
from pipeline.evaluation.scorers import Scorer, onnx_scorer, predict
from pipeline.export.metadata import describe, write_metadata
from pipeline.limits import MAX_PIXELS
from pipeline.models.module import load_classifier
from pipeline.onnx_io import INPUT_NAME, OUTPUT_NAME, export_onnx
from pipeline.runner import run
from pipeline.stages.checkpoints import checkpoint_path
from pipeline.stages.validate import choose_scorer
from pipeline.tracking import download_best_checkpoint

# the same split for training and validation: val and test splits, three classes
DATA = ["data.image_size=16", "data.batch_size=8", "data.test_fraction=0.2"]
TRAIN = [
    "stages=[train]",
    "model=simple_cnn",
    "model.kwargs.channels=[4,8]",
    "model.kwargs.convs_per_block=1",
    "augment=none",
    "trainer.max_epochs=4",
    "optimizer.lr=0.01",  # learns enough in 4 epochs for metrics that are neither 0 nor 1
]
SPLITS = ("val", "test")


@dataclass
class Trained:
    tmp: Path
    root: Path
    client: MlflowClient
    parent_id: str
    train_id: str
    ckpt: Path
    onnx: Path


def pipeline_run(client: MlflowClient, name: str):
    """The parent run named `name` (each test names its runs) and its stage runs by stage."""
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("image-classification").experiment_id],
        f"attributes.run_name = '{name}'",
    )
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    return parent, {c.data.tags["stage"]: c for c in children}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, empty_store) -> Trained:
    tmp = tmp_path_factory.mktemp("validate")
    shutil.copytree(empty_store, tmp / "mlruns")
    root = make_image_folder(tmp / "images", per_class=16, size=16)
    run(compose_cfg(tmp, *TRAIN, *DATA, "tracking.run_name=trained", root=root))
    client = MlflowClient(f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}")
    parent, stages = pipeline_run(client, "trained")
    ckpt = tmp / "out" / "checkpoints" / "best.ckpt"
    classifier = load_classifier(ckpt)
    pre = Preprocess.from_dict(classifier.hparams.preprocess)
    onnx = export_onnx(classifier.model, tmp / "model.onnx", pre.image_size, opset=18)
    write_metadata(
        onnx, describe(pre.to_dict(), classifier.hparams.class_names, INPUT_NAME, OUTPUT_NAME, MAX_PIXELS)
    )
    return Trained(tmp, root, client, parent.info.run_id, stages["train"].info.run_id, ckpt, onnx)


def validate(trained: Trained, name: str, *overrides: str, root: Path | None = None):
    """Run the validate stage alone; returns the parent run and the validate stage run. The checkpoint is not
    calibrated (its run had no calibrate stage), like the ONNX file most tests compare it with."""
    run(
        compose_cfg(
            trained.tmp,
            "stages=[validate]",
            *DATA,
            f"tracking.run_name={name}",
            *overrides,
            root=root or trained.root,
        )
    )
    parent, stages = pipeline_run(trained.client, name)
    return parent, stages["validate"]


@pytest.fixture(scope="module")
def by_checkpoint(trained):
    return validate(trained, "by-checkpoint", f"ckpt_path={trained.ckpt}")


def split_metrics(stage_run, split: str) -> dict[str, float]:
    """The model's scores on a split (not train_overlap, a fact about the data that only checkpoints give)."""
    metrics = stage_run.data.metrics.items()
    return {k: v for k, v in metrics if k.startswith(f"{split}/") and k != f"{split}/train_overlap"}


def test_checkpoint_scores_what_training_measured(trained, by_checkpoint):
    parent, stage = by_checkpoint
    train_run = trained.client.get_run(trained.train_id)
    # Lightning's val/acc of the best epoch, measured during training, on the same split and preprocessing
    assert stage.data.metrics["val/acc"] == pytest.approx(train_run.data.metrics["train/best_val_acc"])
    assert stage.data.params["validate.source"] == f"checkpoint {trained.ckpt}"
    assert stage.data.params["validate.top_k"] == "3"  # top_k=5 capped at three classes
    for split in SPLITS:
        headline = {f"{split}/{n}" for n in ("acc", "top3_acc", "f1_macro", "auc_macro", "ece")}
        assert headline <= set(parent.data.metrics), split
        assert {f"{split}/precision_weighted", f"{split}/auc_micro"} <= set(stage.data.metrics)
        assert f"{split}/precision_weighted" not in parent.data.metrics  # details stay on the stage run
        assert 0 <= stage.data.metrics[f"{split}/acc"] <= stage.data.metrics[f"{split}/top3_acc"] == 1.0
        low, high = (parent.data.metrics[f"{split}/acc_ci_{end}"] for end in ("low", "high"))
        assert low <= stage.data.metrics[f"{split}/acc"] <= high  # its bootstrap interval, on the parent too


@pytest.mark.parametrize("source", ["parent", "train"])
def test_from_run_scores_the_logged_best_checkpoint(trained, by_checkpoint, source):
    run_id = trained.parent_id if source == "parent" else trained.train_id
    _, stage = validate(trained, f"from-{source}", f"from_run={run_id}")
    downloaded = Path(stage.data.params["validate.source"].removeprefix("checkpoint "))
    assert run_id in downloaded.parts and downloaded.read_bytes() == trained.ckpt.read_bytes()
    for split in SPLITS:
        assert split_metrics(stage, split) == pytest.approx(split_metrics(by_checkpoint[1], split), abs=1e-6)


def test_onnx_file_gives_the_checkpoints_metrics(trained, by_checkpoint):
    _, stage = validate(trained, "onnx", f"onnx_path={trained.onnx}")
    assert stage.data.params["validate.source"] == f"onnx {trained.onnx}"
    for split in SPLITS:
        assert split_metrics(stage, split) == pytest.approx(split_metrics(by_checkpoint[1], split), abs=1e-5)


def test_report_and_plots_land_in_the_validate_run(trained, by_checkpoint):
    _, stage = by_checkpoint
    logged = artifact_paths(trained.client, stage.info.run_id)
    for split in SPLITS:
        expected = {
            f"reports/per_class_{split}.csv",
            f"reports/per_class_{split}.md",
            f"plots/confusion_matrix_{split}.png",
            f"plots/confusion_matrix_normalized_{split}.png",
            f"plots/roc_{split}.png",
            f"plots/pr_{split}.png",
            f"plots/top_losses_{split}.png",
        }
        assert expected <= logged, split
    assert {"plots/gradcam_top_losses.png", "plots/gradcam_per_class.png"} <= logged  # a checkpoint: Grad-CAM
    text = trained.client.download_artifacts(stage.info.run_id, "reports/per_class_val.csv")
    rows = list(csv.DictReader(io.StringIO(Path(text).read_text())))
    classes = rows[:-2]
    assert [r["class"] for r in rows] == ["checker", "stripes_h", "stripes_v", "macro avg", "weighted avg"]
    metrics = stage.data.metrics
    assert float(rows[-2]["f1"]) == pytest.approx(metrics["val/f1_macro"])
    assert float(rows[-1]["recall"]) == pytest.approx(metrics["val/recall_weighted"])
    assert sum(float(r["f1"]) for r in classes) / 3 == pytest.approx(metrics["val/f1_macro"])
    assert sum(int(r["support"]) for r in classes) == int(rows[-2]["support"]) > 0
    markdown = Path(
        trained.client.download_artifacts(stage.info.run_id, "reports/per_class_val.md")
    ).read_text()
    assert all(f"| {name} |" in markdown for name in ("checker", "stripes_h", "stripes_v", "macro avg"))


def test_tta_reports_both_for_checkpoint_and_onnx(trained, by_checkpoint):
    _, by_ckpt = validate(trained, "tta-checkpoint", f"ckpt_path={trained.ckpt}", "validate.tta=true")
    _, by_onnx = validate(trained, "tta-onnx", f"onnx_path={trained.onnx}", "validate.tta=true")
    metrics = by_ckpt.data.metrics
    assert metrics["val/acc"] == pytest.approx(by_checkpoint[1].data.metrics["val/acc"])
    assert metrics["val/tta_acc_change"] == pytest.approx(metrics["val/tta_acc"] - metrics["val/acc"])
    assert {"val/tta_f1_macro", "test/tta_acc", "test/tta_acc_change"} <= set(metrics)
    assert split_metrics(by_onnx, "val") == pytest.approx(split_metrics(by_ckpt, "val"), abs=1e-5)


def test_tta_averages_the_logits_of_each_image_and_its_mirror():
    # a "model" that reads the left and right edge columns: flipping swaps them
    edges = Preprocess(4, (0,) * 3, (1,) * 3)
    scorer = Scorer("checkpoint", Path("x"), ["a", "b"], edges, lambda x: (x[:, 0, 0, ::3], None), {})
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    scored = predict(scorer, [(x, torch.tensor([0, 1]))], tta=True)
    assert torch.equal(scored.logits, x[:, 0, 0, [0, 3]]) and scored.targets.tolist() == [0, 1]
    assert torch.equal(scored.tta_logits, (x[:, 0, 0, [0, 3]] + x[:, 0, 0, [3, 0]]) / 2)
    assert predict(scorer, [(x, torch.tensor([0, 1]))], tta=False).tta_logits is None


def test_checkpoint_precedence_for_validate_and_export(trained, tmp_path):
    given = tmp_path / "given.ckpt"
    cfg = compose_cfg(trained.tmp, f"ckpt_path={given}", f"from_run={trained.parent_id}")
    assert checkpoint_path(cfg, Context(tmp_path, ckpt_path=trained.ckpt), "export") == trained.ckpt
    assert checkpoint_path(cfg, Context(tmp_path), "export") == given
    cfg.ckpt_path = None
    downloaded = checkpoint_path(cfg, ctx := Context(tmp_path), "export")
    assert downloaded.is_relative_to(tmp_path) and downloaded.read_bytes() == trained.ckpt.read_bytes()
    assert ctx.ckpt_path == downloaded  # downloaded once, reused by the stages after
    cfg.from_run = None
    with pytest.raises(PipelineError, match="export needs a checkpoint: .*from_run=<MLflow run id>$"):
        checkpoint_path(cfg, Context(tmp_path), "export")
    with pytest.raises(PipelineError, match="validate needs a checkpoint: .* or onnx_path=<file>$"):
        choose_scorer(cfg, Context(tmp_path))
    cfg.onnx_path = str(trained.onnx)
    assert choose_scorer(cfg, Context(tmp_path)).kind == "onnx"
    assert choose_scorer(cfg, Context(tmp_path, ckpt_path=trained.ckpt)).kind == "checkpoint"


def test_from_run_errors_say_what_is_wrong(trained, by_checkpoint, tmp_path):
    uri = f"sqlite:///{trained.tmp / 'mlruns' / 'mlflow.db'}"
    with pytest.raises(PipelineError, match="from_run: no MLflow run 0123abcd at sqlite"):
        download_best_checkpoint("0123abcd", uri, tmp_path)
    validate_only = by_checkpoint[0].info.run_id
    with pytest.raises(PipelineError, match=f"run {validate_only} has no train stage run"):
        download_best_checkpoint(validate_only, uri, tmp_path)
    parent = trained.client.get_run(trained.parent_id)
    unfinished = trained.client.create_run(parent.info.experiment_id, tags={"stage": "train"})
    with pytest.raises(PipelineError, match="logged no checkpoints/best.ckpt"):
        download_best_checkpoint(unfinished.info.run_id, uri, tmp_path)


def copy_with_metadata(src: Path, dst: Path, document: dict | None) -> Path:
    model = onnx.load(str(src))
    del model.metadata_props[:]
    onnx.save(model, str(dst))
    if document is not None:
        write_metadata(dst, document)
    return dst


def test_onnx_errors_say_what_is_wrong(trained, tmp_path):
    with pytest.raises(PipelineError, match="ONNX file not found"):
        onnx_scorer(tmp_path / "missing.onnx")
    (tmp_path / "text.onnx").write_text("not a model")
    (tmp_path / "empty.onnx").touch()
    for not_onnx in (tmp_path / "text.onnx", tmp_path / "empty.onnx", trained.ckpt):
        with pytest.raises(PipelineError, match=f"{not_onnx.name} is not an ONNX model onnxruntime can load"):
            onnx_scorer(not_onnx)
    bare = copy_with_metadata(trained.onnx, tmp_path / "bare.onnx", None)
    with pytest.raises(PipelineError, match="bare.onnx has no 'pipeline' metadata"):
        onnx_scorer(bare)
    document = describe(
        Preprocess(16, (0.5,) * 3, (0.2,) * 3).to_dict(), ["a", "b", "c"], INPUT_NAME, OUTPUT_NAME, MAX_PIXELS
    )
    document["preprocess"]["resize"] = "cv2.INTER_AREA"
    other = copy_with_metadata(trained.onnx, tmp_path / "area.onnx", document)
    with pytest.raises(PipelineError, match="is not this pipeline's eval transform"):
        onnx_scorer(other)


@pytest.mark.parametrize("source", ["ckpt_path", "onnx_path"])
def test_classes_that_do_not_match_the_data_are_refused(trained, tmp_path, source):
    other = make_image_folder(tmp_path / "other", per_class=4, size=16)
    (other / "checker").rename(other / "zigzag")
    path = trained.ckpt if source == "ckpt_path" else trained.onnx
    with pytest.raises(PipelineError, match=r"classes \['checker', .* do not match the data's 3 classes"):
        validate(trained, f"mismatch-{source}", f"{source}={path}", root=other)


def test_a_stage_run_alone_skips_unreadable_images_like_the_data_stage(trained, tmp_path):
    root = tmp_path / "images"
    shutil.copytree(trained.root, root)
    for name in ("checker", "stripes_h", "stripes_v"):
        for i in range(3):
            (root / name / f"zz_corrupt{i}.png").write_bytes(b"not an image" if i else b"")
    val = build_index(root, 0.2, 0.2, 42).split("val")  # the split the stage rebuilds, corrupt files in
    readable = [r for r in val if "zz_corrupt" not in r.path]
    assert len(readable) < len(val)  # some unreadable files sit in the split being scored
    _, stage = validate(trained, "skips-corrupt", f"ckpt_path={trained.ckpt}", root=root)
    report = trained.client.download_artifacts(stage.info.run_id, "reports/per_class_val.csv")
    macro = list(csv.DictReader(Path(report).open()))[-2]
    assert int(macro["support"]) == len(readable)
    with pytest.raises(PipelineError, match="9 unreadable image"):
        validate(trained, "refuses-corrupt", f"ckpt_path={trained.ckpt}", "data.on_corrupt=fail", root=root)


def test_images_the_model_was_trained_on_are_counted_in_each_split(trained, by_checkpoint):
    _, same_split = by_checkpoint
    assert same_split.data.metrics["val/train_overlap"] == 0 == same_split.data.metrics["test/train_overlap"]
    trained_on = {r.path for r in build_index(trained.root, 0.2, 0.2, 42).split("train")}
    reshuffled = build_index(trained.root, 0.2, 0.2, 7)  # as if the folder had changed since training
    expected = {s: len(trained_on & {r.path for r in reshuffled.split(s)}) for s in SPLITS}
    assert expected["val"] > 0
    _, stage = validate(trained, "reshuffled", f"ckpt_path={trained.ckpt}", "data.split_seed=7")
    assert {s: stage.data.metrics[f"{s}/train_overlap"] for s in SPLITS} == expected
    _, by_onnx = validate(trained, "overlap-onnx", f"onnx_path={trained.onnx}")
    assert "val/train_overlap" not in by_onnx.data.metrics  # an ONNX file does not know its training set
