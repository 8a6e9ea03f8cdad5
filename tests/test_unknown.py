"""The unknown answer: scores on planted features and logits, the threshold's accepted share, how the
separation measures read known and unknown images, and the network that carries it into the ONNX file."""

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from pipeline.evaluation.unknown import fit_detector, separation, stratified_sample, unknown_threshold
from pipeline.models.trusted import detector, split_network, trusted_network
from pipeline.onnx_io import OUTPUT_NAME, UNKNOWN_OUTPUT_NAME, export_onnx


def clusters(n: int, classes: int, dims: int, seed: int, spread: float = 1.0) -> tuple:
    """Features around one centre per class (centres fixed across seeds), and their labels."""
    centres = np.random.default_rng(0).normal(0, 4, (classes, dims))
    labels = np.random.default_rng(seed).integers(0, classes, n)
    return centres[labels] + np.random.default_rng(seed + 1).normal(0, spread, (n, dims)), labels


def scores(unknown: dict, features: np.ndarray, logits: np.ndarray | None = None) -> np.ndarray:
    logits = np.zeros((len(features), 2)) if logits is None else logits
    with torch.inference_mode():
        return detector(unknown)(torch.tensor(features).float(), torch.tensor(logits).float()).numpy()


def fitted(method: str, features: np.ndarray, labels: np.ndarray) -> dict:
    arrays = fit_detector(method, features, labels, int(labels.max()) + 1)
    return {"method": method, "neighbours": 3, "tensors": {k: torch.from_numpy(v) for k, v in arrays.items()}}


def test_energy_is_minus_logsumexp_and_rises_as_no_class_fits():
    logits = np.array([[10.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    energy = scores({"method": "energy", "tensors": {}}, np.zeros((2, 4)), logits)
    assert energy == pytest.approx(-np.log(np.exp(logits).sum(1)), rel=1e-6)
    assert energy[1] > energy[0]  # the flat row looks less like any class


@pytest.mark.parametrize("method", ["mahalanobis", "knn"])
def test_feature_scores_are_low_near_the_training_features_and_high_far_from_them(method):
    """Two classes, as a two-class folder gives: new images of the classes score low, features unlike any
    training one (a shifted cloud, a point at the origin) high, whatever the logits say."""
    train, labels = clusters(300, 2, 16, seed=1)
    unknown = fitted(method, train, labels)
    known = scores(unknown, clusters(500, 2, 16, seed=2)[0])
    strange = scores(unknown, clusters(500, 2, 16, seed=3)[0] + 12)
    assert separation(known, strange, unknown_threshold(known, 0.95))["ood_auroc"] > 0.99
    assert scores(unknown, np.zeros((1, 16)))[0] > np.quantile(known, 0.95)


def test_mahalanobis_is_the_distance_to_the_nearest_class_mean_under_the_shared_precision():
    """Of the normalized features: a feature's length says nothing of how known the image is."""
    train, labels = clusters(200, 3, 5, seed=4)
    unknown = fitted("mahalanobis", train, labels)
    means, precision = (unknown["tensors"][k].double().numpy() for k in ("means", "precision"))
    points = clusters(7, 3, 5, seed=5)[0]
    unit = points / np.linalg.norm(points, axis=1, keepdims=True)
    expected = [min(np.sqrt((p - m) @ precision @ (p - m)) for m in means) for p in unit]
    assert scores(unknown, points * 10) == pytest.approx(expected, rel=1e-3)
    assert scores(unknown, points) == pytest.approx(expected, rel=1e-3)


def test_knn_is_the_cosine_distance_to_the_kth_nearest_training_feature():
    train, labels = clusters(50, 2, 4, seed=6)
    unknown = fitted("knn", train, labels)
    point = clusters(1, 2, 4, seed=7)[0]
    cosines = (train @ point[0]) / np.linalg.norm(train, axis=1) / np.linalg.norm(point)
    assert scores(unknown, point)[0] == pytest.approx(1 - np.sort(cosines)[-3], abs=1e-5)


def test_the_threshold_accepts_the_asked_share_of_calib_images():
    calib = np.random.default_rng(0).gamma(2.0, size=2000)
    threshold = unknown_threshold(calib, 0.95)
    fresh = np.random.default_rng(1).gamma(2.0, size=20000)
    assert (fresh <= threshold).mean() == pytest.approx(0.95, abs=0.01)


def test_from_ten_calib_images_the_threshold_accepts_the_asked_share_nine_times_in_ten():
    """The bare quantile of 10 images would accept under 95% of new images about 40% of the time."""
    rng = np.random.default_rng(3)
    true_quantile = 1.6449  # of the standard normal the scores come from
    enough = [unknown_threshold(rng.normal(size=10), 0.95) >= true_quantile for _ in range(2000)]
    assert np.mean(enough) == pytest.approx(0.9, abs=0.02)


def test_separation_of_far_apart_and_of_identical_sets():
    rng = np.random.default_rng(2)
    known, far = rng.normal(0, 1, 1000), rng.normal(8, 1, 1000)
    apart = separation(known, far, unknown_threshold(known, 0.95))
    assert apart["ood_auroc"] > 0.99 and apart["ood_fpr95"] < 0.02 and apart["ood_flagged"] > 0.98
    same = separation(known, rng.normal(0, 1, 1000), unknown_threshold(known, 0.95))
    assert same["ood_auroc"] == pytest.approx(0.5, abs=0.05)
    assert same["ood_fpr95"] == pytest.approx(0.95, abs=0.03)


def test_a_stratified_sample_keeps_every_class():
    labels = np.array([0] * 990 + [1] * 10)
    chosen = stratified_sample(labels, 100, seed=0)
    assert set(labels[chosen]) == {0, 1} and 95 <= len(chosen) <= 105
    assert len(stratified_sample(labels, 5000, seed=0)) == 1000  # fewer than asked: all of them


class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.features(x))


class ActsAfterItsHead(TwoLayers):
    def forward(self, x):
        return self.fc(self.features(x)) * 2


def test_the_network_splits_at_its_head_and_refuses_one_that_acts_after_it():
    network = TwoLayers().eval()
    x = torch.randn(3, 3, 8, 8)
    logits, features = split_network(network, 8)(x)
    assert torch.allclose(logits, network(x)) and features.shape == (3, 4)
    with pytest.raises(Exception, match="does more after its classifier head"):
        split_network(ActsAfterItsHead().eval(), 8)


def test_the_exported_model_gives_calibrated_logits_and_the_unknown_score(tmp_path):
    """One ONNX file, two outputs, the same numbers as PyTorch: what predict and serve read."""
    network = TwoLayers().eval()
    x = torch.randn(5, 3, 8, 8)
    with torch.inference_mode():
        features = split_network(network, 8)(torch.randn(40, 3, 8, 8))[1].numpy()
    unknown = fitted("mahalanobis", features, np.arange(40) % 2)
    trusted = trusted_network(network, {"temperature": 2.5, "unknown": unknown}, 8).eval()
    path = export_onnx(trusted, tmp_path / "m.onnx", 8, opset=18, outputs=(OUTPUT_NAME, UNKNOWN_OUTPUT_NAME))
    logits, found = ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})
    with torch.inference_mode():
        expected_logits, expected_scores = trusted(x)
        assert np.allclose(logits, network(x).numpy() / 2.5, atol=1e-5)
    assert np.allclose(logits, expected_logits.numpy(), atol=1e-5)
    assert np.allclose(found, expected_scores.numpy(), rtol=1e-3, atol=1e-4)
