"""finetune.head_fit: a head fitted to convergence on the frozen backbone's cached features (LP-FT), and the
linear probe that is that fit alone."""

import os
import shutil

import numpy as np
import pytest
import torch
from conftest import compose_cfg, make_image_folder
from mlflow.tracking import MlflowClient
from sklearn.linear_model import LogisticRegression
from torch import nn

from pipeline import cpu_share
from pipeline.data.feature_cache import cached_features, keep_within
from pipeline.data.transforms import Preprocess
from pipeline.errors import PipelineError
from pipeline.models import head_fit
from pipeline.models.factory import create_model_from_spec
from pipeline.models.head_fit import STRENGTHS, fit_head, linear_head
from pipeline.models.module import load_classifier
from pipeline.recipe import finetune_recipe
from pipeline.runner import run
from pipeline.stages import calibrate

SIZE = 32


def clusters(n: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    return rng.normal(size=(classes, 16))[labels] * 3 + rng.normal(size=(n, 16)), labels


@pytest.mark.parametrize("classes", [2, 4])
def test_the_fitted_head_gives_logistic_regression_s_probabilities(classes):
    """Two classes: scikit-learn keeps one row of log-odds; the head splits it into two logits."""
    x, y = clusters(200, classes, seed=0)
    model = LogisticRegression(C=1.0, max_iter=2000).fit(x, y)
    weight, bias = linear_head(model, classes)
    logits = torch.from_numpy(x @ weight.T + bias).double()
    assert weight.shape == (classes, 16)
    assert np.allclose(logits.softmax(1).numpy(), model.predict_proba(x), atol=1e-5)


def test_the_strength_is_the_one_val_likes_best_and_separable_classes_are_learnt():
    head = fit_head(clusters(120, 3, seed=1), clusters(60, 3, seed=1), 3, balanced=False, seed=0)
    assert head.strength in STRENGTHS and head.val_scores["val/acc"] == 1.0
    assert head.val_scores["val/loss"] < 0.1


def test_the_head_fits_run_on_one_blas_thread(monkeypatch):
    from threadpoolctl import threadpool_info

    seen = []

    class Watched(LogisticRegression):
        def fit(self, *args, **kwargs):
            seen.extend(pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas")
            return super().fit(*args, **kwargs)

    monkeypatch.setattr(head_fit, "LogisticRegression", Watched)
    head_fit.fit_head(clusters(60, 3, seed=1), clusters(30, 3, seed=2), 3, balanced=False, seed=0)
    assert seen and set(seen) == {cpu_share.BLAS_THREADS}


class Counting(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls, self.scale = 0, nn.Parameter(torch.ones(1))

    def forward(self, x):
        self.calls += 1
        return [x.mean((2, 3)) * self.scale]


def test_features_are_computed_once_per_images_size_and_backbone(tmp_path):
    root = make_image_folder(tmp_path / "images", per_class=4, size=16)
    records = [type("R", (), {"path": str(p), "label": 0})() for p in sorted(root.rglob("*.png"))]
    prints = [f"f{i}" for i in range(len(records))]
    network, loader = Counting(), {"batch_size": 8, "workers": 0}
    small, large = (Preprocess(side, (0.5,) * 3, (0.5,) * 3) for side in (16, 24))
    folder = tmp_path / "features"
    (first,) = cached_features(network, records, prints, small, folder, {"name": "a"}, loader, 100)
    calls = network.calls
    (again,) = cached_features(network, records, prints, small, folder, {"name": "a"}, loader, 100)
    assert network.calls == calls and np.array_equal(first, again) and first.shape == (len(records), 3)
    cached_features(network, records, prints, large, folder, {"name": "a"}, loader, 100)
    cached_features(network, records, prints, small, folder, {"name": "b"}, loader, 100)
    assert network.calls > calls and len(list(folder.glob("*.npz"))) == 3


def test_the_cache_drops_the_least_recently_used_files_above_its_bound(tmp_path):
    for i, name in enumerate(["old", "mid", "new"]):
        np.savez(tmp_path / f"{name}.npz", np.zeros(1000, dtype=np.float32))
        os.utime(tmp_path / f"{name}.npz", (i, i))
    keep_within(tmp_path, 2.5 * (tmp_path / "new.npz").stat().st_size)  # room for two of the three
    assert sorted(p.stem for p in tmp_path.glob("*.npz")) == ["mid", "new"]


def test_a_head_fit_needs_pretrained_weights_and_replaces_gradual_s_head_phase():
    gradual = {"strategy": "auto", "unfreeze_epoch": 1, "backbone_lr_factor": 0.5, "head_fit": True}
    pretrained = {"name": "tf_efficientnet_lite0", "pretrained": False, "weights": "pkg:some/file.pth"}
    assert finetune_recipe(gradual, pretrained)["strategy"] == "full"
    with pytest.raises(PipelineError, match="head_fit needs pretrained weights"):
        finetune_recipe(gradual, {**pretrained, "weights": None})


def test_a_fitted_linear_probe_runs_no_epoch_and_calibrates_validates_and_exports(
    tmp_path, empty_store, monkeypatch
):
    """One pass of the frozen backbone over the training images serves the head fit and the unknown score;
    the sanity checks skip the optimizer steps the probe never takes."""
    shutil.copytree(empty_store, tmp_path / "mlruns")
    torch.manual_seed(0)
    source = create_model_from_spec({"name": "test_efficientnet", "zero_init_head": False}, 3)
    torch.save(source.state_dict(), tmp_path / "pretrained.pth")
    root = make_image_folder(tmp_path / "images", per_class=16, size=SIZE)
    embedded = []
    embed = calibrate.embed
    monkeypatch.setattr(
        calibrate,
        "embed",
        lambda cfg, split, records, *a: embedded.append(len(records)) or embed(cfg, split, records, *a),
    )
    overrides = [
        "stages=[sanity,train,calibrate,validate,export]", "model=timm", "model.name=test_efficientnet",
        f"model.weights={tmp_path / 'pretrained.pth'}", "finetune=linear_probe", "finetune.head_fit=true",
        "data.image_size=32", "data.batch_size=8", "augment=none", "export.quantize=none",
        "export.latency_runs=1", "validate.gradcam=0", "validate.top_losses=0", "tracking.run_name=probe",
    ]  # fmt: skip
    run(compose_cfg(tmp_path, *overrides, root=root))
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("image-classification").experiment_id
    (parent,) = client.search_runs([experiment], "attributes.run_name = 'probe'")
    metrics = parent.data.metrics
    assert metrics["train/epochs"] == 0 and (tmp_path / "out" / "model.onnx").is_file()
    classifier = load_classifier(tmp_path / "out" / "checkpoints" / "best.ckpt")
    assert classifier.model.get_classifier().weight.abs().sum() > 0  # the fitted head, not the zero start
    assert 0 <= metrics["test/acc"] <= 1 and len(list((tmp_path / "cache" / "features").glob("*.npz"))) == 2
    assert embedded == [metrics["calib/images"]], "calibrate passed training images through the network again"
    (sanity,) = client.search_runs(
        [experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}' and attributes.run_name = 'sanity'"
    )
    checked = set(sanity.data.metrics)
    assert "sanity/loss_at_init" in checked and "sanity/overfit_one_batch" not in checked, "steps checked"
