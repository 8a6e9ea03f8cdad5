"""The calibrate stage: its split is its own (seeded, per class, apart from train, val and test), what it fits
is stored with the checkpoint and read by validate, and a run without a calib split says so."""

import logging
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_cfg, make_image_folder
from mlflow.tracking import MlflowClient
from PIL import Image

from pipeline.data.integrity import fingerprint, inspect_files
from pipeline.data.sources import MIN_CLASS_FOR_CALIB, build_index
from pipeline.data.transforms import Preprocess
from pipeline.models.module import load_classifier
from pipeline.models.trusted import detector, split_network
from pipeline.runner import run
from pipeline.stages.calibrate import embed

DATA = ["data.image_size=16", "data.batch_size=16", "data.calib_fraction=0.3"]
TRAIN = [
    "model=simple_cnn",
    "model.kwargs.channels=[4,8]",
    "model.kwargs.convs_per_block=1",
    "augment=none",
    "trainer.max_epochs=3",
    "optimizer.lr=0.01",
    "validate.gradcam=0",
    "validate.top_losses=0",
]


def test_the_calib_split_is_carved_from_train_alone_per_class_and_seeded(tmp_path):
    root = make_image_folder(tmp_path / "images", per_class=60, size=8)
    plain = build_index(root, 0.2, 0.15, seed=3)
    carved = build_index(root, 0.2, 0.15, seed=3, calib_fraction=0.25)
    before, after = ({r.path: r.split for r in index.records} for index in (plain, carved))
    moved = {path for path in after if after[path] != before[path]}
    assert moved and all(before[p] == "train" and after[p] == "calib" for p in moved)  # val, test untouched
    per_class = Counter(r.label for r in carved.split("calib"))
    trained = Counter(r.label for r in plain.split("train"))
    assert all(per_class[c] == int(0.25 * trained[c] + 0.5) for c in trained)  # rounded half up
    again = build_index(root, 0.2, 0.15, seed=3, calib_fraction=0.25)
    assert [r.split for r in again.records] == [r.split for r in carved.records]


def test_classes_too_small_to_spare_images_give_none(tmp_path):
    """One image of eight a class cost a tenth of the test accuracy on 10 photos a class."""
    root = make_image_folder(tmp_path / "images", per_class=60, size=8)
    for image in sorted((root / "checker").iterdir())[:40]:
        image.unlink()
    index = build_index(root, 0.2, 0.0, seed=0, calib_fraction=0.1)
    train = Counter(index.class_names[r.label] for r in index.split("train"))
    calib = Counter(index.class_names[r.label] for r in index.split("calib"))
    assert train["checker"] < MIN_CLASS_FOR_CALIB and calib["checker"] == 0  # 16 of 20 in train, none spared
    assert calib["stripes_h"] == calib["stripes_v"] == 5  # 10% of 48


@dataclass
class Calibrated:
    tmp: Path
    root: Path
    ckpt: Path
    metrics: dict


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, empty_store) -> Calibrated:
    tmp = tmp_path_factory.mktemp("calibrate")
    shutil.copytree(empty_store, tmp / "mlruns")
    root = make_image_folder(tmp / "images", per_class=50, size=16)
    flat = tmp / "flat"
    flat.mkdir()
    for i, colour in enumerate([(0, 0, 0), (255, 255, 255), (200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        Image.new("RGB", (16, 16), colour).save(flat / f"{i}.png")
    stages = "stages=[data,train,calibrate,validate]"
    run(
        compose_cfg(
            tmp, stages, *DATA, *TRAIN, f"validate.ood_roots=[{flat}]", "tracking.run_name=c", root=root
        )
    )
    client = MlflowClient(f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("image-classification").experiment_id
    (parent,) = client.search_runs([experiment], "attributes.run_name = 'c'")
    return Calibrated(tmp, root, tmp / "out" / "checkpoints" / "best.ckpt", parent.data.metrics)


def index_of(root: Path):
    return build_index(root, 0.2, 0.15, seed=42, calib_fraction=0.3)


def test_nothing_is_fitted_on_images_that_trained_the_model_or_picked_its_checkpoint(calibrated):
    index = index_of(calibrated.root)
    calib = index.split("calib")
    trust = load_classifier(calibrated.ckpt).trust
    assert trust["images"] == len(calib) == calibrated.metrics["calib/images"] > 0
    trained_on = set(load_classifier(calibrated.ckpt).hparams.train_fingerprints)
    infos = inspect_files([r.path for r in calib], calibrated.tmp / "cache" / "inspection.sqlite", 0, 10**8)
    assert not {fingerprint(i) for i in infos} & trained_on  # no calib image trained the model
    assert not {r.path for r in calib} & {r.path for r in index.split("val")}  # nor picked its checkpoint


def test_the_fitted_answers_are_stored_with_the_checkpoint_and_scored_by_validate(calibrated):
    trust = load_classifier(calibrated.ckpt).trust
    found = calibrated.metrics
    assert trust["conformal"]["alpha"] == 0.1 and trust["conformal"]["approximate"]  # under 100 calib images
    assert trust["conformal"]["mix"] == "calib"  # three classes of equal size
    assert sum(trust["conformal"]["class_counts"]) == trust["images"]
    assert trust["conformal"]["threshold"] == pytest.approx(found["calib/conformal_threshold"])
    assert trust["unknown"]["method"] == "mahalanobis"
    assert trust["unknown"]["threshold"] == pytest.approx(found["calib/unknown_threshold"])
    assert 0 <= found["test/unknown_rate"] <= 1 and 0 <= found["test/conformal_coverage"] <= 1
    assert 0 <= found["test/ood_flat_auroc"] <= 1 and 0 <= found["test/ood_flat_flagged"] <= 1


def test_the_unknown_threshold_accepts_the_asked_share_of_the_calib_images(calibrated):
    classifier = load_classifier(calibrated.ckpt)
    preprocess = Preprocess.from_dict(classifier.hparams.preprocess)
    split = split_network(classifier.model, preprocess.image_size)
    cfg = compose_cfg(calibrated.tmp, *DATA, root=calibrated.root)
    logits, features, _ = embed(
        cfg, split, index_of(calibrated.root).split("calib"), preprocess, torch.device("cpu")
    )
    with torch.inference_mode():
        scores = detector(classifier.trust["unknown"])(features, logits).numpy()
    accepted = float(np.mean(scores <= classifier.trust["unknown"]["threshold"]))
    assert accepted >= classifier.trust["unknown"]["accepted"]


def test_a_checkpoint_from_elsewhere_is_calibrated_into_a_copy(calibrated, tmp_path, empty_store):
    outside = shutil.copy(calibrated.ckpt, tmp_path / "elsewhere.ckpt")
    shutil.copytree(empty_store, tmp_path / "mlruns")
    run(compose_cfg(tmp_path, "stages=[calibrate]", f"ckpt_path={outside}", *DATA, root=calibrated.root))
    assert Path(outside).read_bytes() == calibrated.ckpt.read_bytes()  # left as it was
    assert load_classifier(tmp_path / "out" / "checkpoints" / "elsewhere.ckpt").trust["images"] > 0


def test_without_a_calib_split_the_stage_fits_on_val_and_says_so(calibrated, tmp_path, empty_store, caplog):
    shutil.copytree(empty_store, tmp_path / "mlruns")
    stages = ["stages=[calibrate]", f"ckpt_path={calibrated.ckpt}", "data.calib_fraction=0"]
    with caplog.at_level(logging.INFO):
        run(compose_cfg(tmp_path, *stages, *DATA[:2], root=calibrated.root))
    assert any(r.getMessage().startswith("no calib split (data.calib_fraction=0;") for r in caplog.records)
    trust = load_classifier(tmp_path / "out" / "checkpoints" / "best.ckpt").trust
    val = build_index(calibrated.root, 0.2, 0.15, seed=42).split("val")
    assert trust["split"] == "val" and trust["images"] == len(val)


def test_a_checkpoint_the_stage_has_not_seen_is_scored_as_uncalibrated(
    calibrated, tmp_path, empty_store, caplog
):
    shutil.copytree(empty_store, tmp_path / "mlruns")
    bare = tmp_path / "bare.ckpt"
    checkpoint = torch.load(calibrated.ckpt, weights_only=True)
    del checkpoint["trust"]
    torch.save(checkpoint, bare)
    with caplog.at_level(logging.INFO):
        run(
            compose_cfg(
                tmp_path, "stages=[validate]", f"ckpt_path={bare}", *DATA, *TRAIN[-2:], root=calibrated.root
            )
        )
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("not calibrated: probabilities as the network gives them") for m in said)
