"""The unknown answer: scores on planted features and logits, the threshold's accepted share, how the
separation measures read known and unknown images, and the network that carries it into the ONNX file."""

import numpy as np
import onnxruntime as ort
import pytest
import timm
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


def scores(unknown: dict, features, logits: np.ndarray | None = None) -> np.ndarray:
    """`features`: one layer's array, or a list of layers."""
    layers = features if isinstance(features, list) else [features]
    logits = np.zeros((len(layers[0]), 2)) if logits is None else logits
    with torch.inference_mode():
        found = detector(unknown)([torch.tensor(f).float() for f in layers], torch.tensor(logits).float())
    return found.numpy()


def fitted(method: str, features, labels: np.ndarray) -> dict:
    layers = features if isinstance(features, list) else [features]
    arrays = fit_detector(method, layers, labels, int(labels.max()) + 1)
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


def distances(unknown: dict, layer: int, points: np.ndarray) -> np.ndarray:
    """Of the normalized features to the nearest class mean under the layer's precision, written out."""
    means, precision = (unknown["tensors"][f"{k}.{layer}"].double().numpy() for k in ("means", "precision"))
    unit = points / np.linalg.norm(points, axis=1, keepdims=True)
    return np.array([min(np.sqrt((p - m) @ precision @ (p - m)) for m in means) for p in unit])


def test_mahalanobis_is_the_distance_to_the_nearest_class_mean_in_units_of_the_training_median():
    """Of the normalized features: a feature's length says nothing of how known the image is."""
    train, labels = clusters(200, 3, 5, seed=4)
    unknown = fitted("mahalanobis", train, labels)
    scale = np.median(distances(unknown, 0, train))
    assert unknown["tensors"]["scales"].numpy() == pytest.approx([scale], rel=1e-4)
    points = clusters(7, 3, 5, seed=5)[0]
    expected = distances(unknown, 0, points) / scale
    assert scores(unknown, points * 10) == pytest.approx(expected, rel=1e-3)
    assert scores(unknown, points) == pytest.approx(expected, rel=1e-3)


def test_an_input_unlike_the_training_images_at_one_layer_alone_is_found():
    """Though the other layer has 30 times the dimensions and agrees with the training images."""
    small, labels = clusters(300, 2, 4, seed=8)
    large = clusters(300, 2, 120, seed=8)[0]
    unknown = fitted("mahalanobis", [small, large], labels)
    known = scores(unknown, [clusters(200, 2, 4, seed=9)[0], clusters(200, 2, 120, seed=9)[0]])
    odd = scores(unknown, [clusters(200, 2, 4, seed=10)[0] - 12, clusters(200, 2, 120, seed=10)[0]])
    assert separation(known, odd, unknown_threshold(known, 0.975))["ood_flagged"] > 0.95


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
    assert torch.allclose(logits, network(x)) and [f.shape for f in features] == [(3, 4)]
    with pytest.raises(Exception, match="does more after its classifier head"):
        split_network(ActsAfterItsHead().eval(), 8)


def tiny_timm() -> nn.Module:
    return timm.create_model("test_efficientnet", num_classes=2).eval()


def test_a_timm_network_gives_each_stage_s_channel_means_and_spreads_then_its_penultimate_features():
    network = tiny_timm()
    x = torch.randn(3, 3, 32, 32)
    logits, features = split_network(network, 32)(x)
    channels = [info["num_chs"] for info in network.feature_info]
    assert torch.allclose(logits, network(x), atol=1e-5)
    assert [f.shape[1] for f in features] == [2 * c for c in channels] + [network.num_features]
    first_stage = network.forward_intermediates(x)[1][0]
    assert torch.allclose(
        features[0], torch.cat([first_stage.mean((2, 3)), first_stage.std((2, 3), correction=0)], 1)
    )


def trusted_pair(network: nn.Module, size: int, method: str = "mahalanobis") -> nn.Module:
    with torch.inference_mode():
        layers = split_network(network, size)(torch.randn(40, 3, size, size))[1]
    unknown = fitted(method, [f.numpy() for f in layers], np.arange(40) % 2)
    return trusted_network(network, {"temperature": 2.5, "unknown": unknown}, size).eval()


@pytest.mark.parametrize(("network", "size"), [(TwoLayers, 8), (tiny_timm, 32)], ids=["plain", "timm"])
def test_the_exported_model_gives_calibrated_logits_and_the_unknown_score(tmp_path, network, size):
    """One ONNX file, two outputs, the same numbers as PyTorch: what predict and serve read."""
    network = network().eval()
    x = torch.randn(5, 3, size, size)
    trusted = trusted_pair(network, size)
    path = export_onnx(
        trusted, tmp_path / "m.onnx", size, opset=18, outputs=(OUTPUT_NAME, UNKNOWN_OUTPUT_NAME)
    )
    logits, found = ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})
    with torch.inference_mode():
        expected_logits, expected_scores = trusted(x)
        assert np.allclose(logits, network(x).numpy() / 2.5, atol=1e-5)
    assert np.allclose(logits, expected_logits.numpy(), atol=1e-5)
    assert np.allclose(found, expected_scores.numpy(), rtol=1e-3, atol=1e-4)
