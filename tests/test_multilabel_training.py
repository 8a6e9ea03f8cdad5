"""Several labels an image: the loss, its chance value, the targets, the scores and the plan of a multi-label
run, and a run of every stage on pattern mosaics it makes, whose exported model answers as PyTorch does."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_image_folder, make_multilabel_folder
from mlflow.tracking import MlflowClient

from pipeline import summary
from pipeline.data.images import ImageDataset
from pipeline.data.sources import Record
from pipeline.errors import PipelineError
from pipeline.export import inference
from pipeline.limits import MAX_PIXELS
from pipeline.models.losses import positive_weights
from pipeline.models.module import Classifier, load_classifier
from pipeline.runner import run
from pipeline.stages.validate_labels import gradcam_pairs
from pipeline.tasks import MULTILABEL

TINY = ["model=simple_cnn", "data.image_size=32", "data.batch_size=8"]
TRAIN = {
    "label_smoothing": 0.1,
    "mixup_alpha": 0.2,
    "cutmix_alpha": 0.0,
    "mix_prob": 1.0,
    "channels_last": False,
}


def multilabel_classifier(weights=None) -> Classifier:
    return Classifier(
        model={"name": "simple_cnn", "kwargs": {"channels": [4]}},
        num_classes=3,
        class_names=["a", "b", "c"],
        preprocess={},
        train=TRAIN,
        class_weights=weights,
        task=MULTILABEL,
    )


def test_positive_weights_are_each_labels_negatives_over_its_positives():
    assert positive_weights([(0,), (0, 1), (0, 1), (2,)], 3) == [1 / 3, 1.0, 3.0]
    assert positive_weights([(0,), (0, 1)], 2) == [1.0, 1.0]  # label 0 on every image: no negatives


def test_a_multilabel_dataset_gives_rows_of_zeros_and_ones(tmp_path):
    root = make_image_folder(tmp_path / "images", per_class=1)
    path = str(next(root.rglob("*.png")))
    dataset = ImageDataset([Record(path, 2, "train", (0, 2))], lambda image: {"image": image}, num_labels=4)
    assert dataset[0][1].tolist() == [1.0, 0.0, 1.0, 0.0]


def test_the_multilabel_loss_is_binary_cross_entropy_weighing_positives_and_never_mixes():
    classifier = multilabel_classifier(weights=[2.0, 1.0, 1.0])
    assert classifier.mixer is None  # timm's Mixup mixes class indices
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([[1.0, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 1]])
    logits = classifier(x)
    loss = classifier.training_step((x, y), 0)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, y, pos_weight=torch.tensor([2.0, 1.0, 1.0])
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_multilabel_val_scores_are_average_precision_and_f1():
    classifier = multilabel_classifier()
    assert set(classifier.val_scores.keys()) == {"val/map", "val/map_micro", "val/f1_macro"}
    y = torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    classifier.val_scores.update(torch.where(y > 0, 3.0, -3.0), y.long())  # perfect answers
    assert {k: v.item() for k, v in classifier.val_scores.compute().items()} == {
        "val/map": 1.0,
        "val/map_micro": 1.0,
        "val/f1_macro": 1.0,
    }


def test_grad_cam_explains_each_label_of_the_worst_images_and_each_labels_first_right_ones():
    probabilities = torch.tensor([[0.9, 0.2, 0.1], [0.6, 0.8, 0.1], [0.2, 0.1, 0.95], [0.9, 0.8, 0.3]])
    targets = torch.tensor([[1, 0, 0], [1, 0, 1], [0, 0, 1], [1, 1, 0]])
    limits = torch.tensor([0.5, 0.5, 0.5])
    pairs = gradcam_pairs(probabilities, targets, limits, worst=1, per_label=1)
    # image 1 has the highest loss: label 2 given at 0.1 is worst, then label 1 shown at 0.8 but not given,
    # then label 0 given at 0.6; its other labels are neither shown nor given
    assert pairs["top_losses"] == [(1, 2), (1, 1), (1, 0)]
    assert pairs["per_label"] == [(0, 0), (3, 1), (2, 2)]  # first image each label is given and shown for
    assert gradcam_pairs(probabilities, targets, limits, worst=0, per_label=0) == {
        "top_losses": [],
        "per_label": [],
    }


@pytest.fixture
def mosaics(tmp_path) -> Path:
    return make_multilabel_folder(tmp_path / "mosaics", images=60)


def test_every_stage_runs_on_several_labels_an_image(make_cfg, mosaics, tmp_path):
    stages = "stages=[data,sanity,train,calibrate,validate,export]"
    cfg = make_cfg(stages, *TINY, "trainer.max_epochs=2", "validate.bootstrap_resamples=50", root=mosaics)
    run(cfg)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("image-classification").experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    sanity = by_name["sanity"].data.metrics
    assert sanity["sanity/passed"] == 1.0
    assert sanity["sanity/loss_at_init"] == pytest.approx(math.log(2), rel=0.05)
    train = by_name["train"].data
    assert train.params["train.objective"] == "val/map" and "val/map" in train.metrics
    assert "val/acc" not in train.metrics
    best = tmp_path / "out" / "checkpoints" / "best.ckpt"
    classifier = load_classifier(best)
    assert classifier.hparams.task == MULTILABEL and classifier.multilabel
    assert len(classifier.trust["thresholds"]) == 3 and classifier.trust["temperature"] > 0
    validate = by_name["validate"].data.metrics
    assert 0 <= validate["test/map_micro"] <= 1
    for name in ("map", "f1_macro", "subset_acc", "hamming_loss"):
        assert validate[f"test/{name}_ci_low"] <= validate[f"test/{name}"] <= validate[f"test/{name}_ci_high"]
    report = client.download_artifacts(
        by_name["validate"].info.run_id, "reports/per_label_test.csv", str(tmp_path)
    )
    rows = Path(report).read_text().splitlines()
    assert rows[0] == "label,threshold,precision,recall,f1,support,ap" and len(rows) == 4
    plotted = {a.path for a in client.list_artifacts(by_name["validate"].info.run_id, "plots")}
    assert "plots/gradcam_top_losses.png" in plotted  # the mosaics' worst images, a label at a time
    exported = inference.load_classifier(tmp_path / "out" / "model.onnx")
    assert exported.document["task"] == MULTILABEL
    assert exported.document["thresholds"] == classifier.trust["thresholds"]
    the_same_answers_as_pytorch(exported, classifier, mosaics)


def the_same_answers_as_pytorch(exported, classifier, labels_csv: Path) -> None:
    """predict's answers (onnxruntime) against the checkpoint's calibrated sigmoids and thresholds."""
    paths = sorted((labels_csv.parent / "images").glob("*.png"))
    found = list(inference.predict(exported, paths, batch_size=8, k=3))
    spec = exported.document["preprocess"]
    batch = torch.from_numpy(np.stack([inference.load_image(p, spec, MAX_PIXELS) for p in paths]))
    with torch.inference_mode():
        probabilities = torch.sigmoid(classifier(batch) / classifier.trust["temperature"]).numpy()
    names, thresholds = classifier.hparams.class_names, classifier.trust["thresholds"]
    for prediction, row in zip(found, probabilities, strict=True):
        expected = [n for _, n, p, t in sorted(zip(-row, names, row, thresholds, strict=True)) if p >= t]
        assert prediction.answer["labels"] == expected
        by_name = dict(zip(names, row, strict=True))
        top = prediction.answer["top_labels"]
        assert prediction.answer["top_probabilities"] == pytest.approx([by_name[n] for n in top], abs=1e-5)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["objective=val/acc"], "objective=val/acc scores one label an image"),
        (["data.balance=oversample"], "data.balance=oversample resamples classes"),
    ],
)
def test_a_setting_for_one_label_an_image_is_refused_for_several(make_cfg, mosaics, overrides, message):
    with pytest.raises(PipelineError, match=message):
        run(make_cfg("stages=[sanity]", *TINY, *overrides, root=mosaics))


def test_an_objective_for_several_labels_is_refused_for_one(make_cfg, image_folder):
    with pytest.raises(PipelineError, match="objective=val/map scores several labels an image"):
        run(make_cfg("stages=[sanity]", *TINY, "objective=val/map", root=image_folder))


def test_the_summary_says_what_a_multilabel_calibration_fitted_and_leads_with_map():
    metrics = {
        "calib/images": 201,
        "calib/temperature": 0.878,
        "calib/labels_answered": 2.41,
        "test/map": 0.93,
    }
    line = summary.trust_line(metrics, "test")
    assert line.startswith(
        "trust, fitted on 201 calib images: temperature 0.878; an answer threshold a label"
    )
    assert summary._scores(metrics, "test") == "test: map 0.9300"
