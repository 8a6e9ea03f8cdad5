"""Temperature scaling on planted logits whose miscalibration is known, the rule that keeps a temperature only
where it helps, its reliability points, and the exported calibrated network."""

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from pipeline.evaluation.calibration import fit_temperature, reliability, safe_temperature
from pipeline.models.factory import create_model
from pipeline.models.trusted import trusted_network
from pipeline.onnx_io import export_onnx


def calibrated_logits(n: int = 4000, classes: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels drawn from their own softmax: calibrated by construction."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=gen) * 2
    return logits, torch.multinomial(logits.softmax(1), 1, generator=gen).squeeze(1)


def ece(logits: torch.Tensor, targets: torch.Tensor) -> float:
    return multiclass_calibration_error(logits.softmax(1), targets, logits.shape[1], n_bins=15).item()


def test_the_fitted_temperature_undoes_a_planted_overconfidence():
    logits, targets = calibrated_logits()
    overconfident = logits * 3
    temperature = fit_temperature(overconfident, targets)
    assert temperature == pytest.approx(3.0, rel=0.1)
    assert ece(overconfident / temperature, targets) <= ece(overconfident, targets) / 2
    assert torch.equal((overconfident / temperature).argmax(1), overconfident.argmax(1))  # same answers


def test_a_model_fifty_times_too_unsure_is_sharpened_not_called_chance():
    """A best checkpoint from the first epochs of averaged weights: right answers at tiny logits."""
    logits, targets = calibrated_logits(500)
    temperature, why = safe_temperature(logits / 50, targets, seed=0)
    assert temperature == pytest.approx(1 / 50, rel=0.15) and why.startswith("cross-validated NLL")


def test_a_split_without_errors_fits_no_temperature():
    targets = torch.arange(30) % 3
    logits = torch.nn.functional.one_hot(targets, 3).float() * 4
    assert fit_temperature(logits, targets) is None


def test_the_reliability_points_add_up_to_torchmetrics_ece():
    logits, targets = calibrated_logits(500)
    points = reliability((logits * 2).softmax(1), targets, 15)
    gap = np.abs(points["accuracy"] - points["confidence"]) @ points["count"] / points["count"].sum()
    assert points["count"].sum() == 500 and gap == pytest.approx(ece(logits * 2, targets), abs=1e-6)


def test_a_temperature_is_kept_where_cross_validation_says_it_helps():
    logits, targets = calibrated_logits(500)
    temperature, why = safe_temperature(logits * 3, targets, seed=0)
    assert temperature == pytest.approx(3.0, rel=0.15) and why.startswith("cross-validated NLL")


def test_an_error_free_slice_sharpens_only_up_to_the_accuracy_it_proves():
    """20 right answers of 20 prove an accuracy of at least 0.05 ** (1 / 20) = 0.861 (one-sided 95%): a model
    less sure than that is sharpened to it, a model surer than that is left alone."""
    targets = torch.arange(20) % 2
    unsure = torch.nn.functional.one_hot(targets, 2).float() * 0.4  # top probability 0.599
    temperature, _ = safe_temperature(unsure, targets, seed=0)
    top = (unsure / temperature).softmax(1).max(1).values.mean().item()
    assert temperature < 1 and top == pytest.approx(0.05 ** (1 / 20), abs=1e-3)
    temperature, why = safe_temperature(unsure * 20, targets, seed=0)
    assert temperature is None and why.startswith("none needed")


def test_a_model_at_chance_keeps_its_logits_and_is_not_called_error_free():
    targets = torch.arange(30) % 3
    logits = torch.randn(30, 3, generator=torch.Generator().manual_seed(0)) * 1e-3  # no better than chance
    temperature, why = safe_temperature(logits, targets, seed=0)
    assert (
        temperature is None and "without error" not in why
    )  # a fit on 30 images, which cross-validation drops


def test_the_exported_network_gives_the_calibrated_probabilities(tmp_path):
    network = create_model("simple_cnn", 3, kwargs={"channels": [4, 8]}).eval()
    scaled = trusted_network(network, {"temperature": 2.5}, 16)
    path = export_onnx(scaled, tmp_path / "model.onnx", 16, opset=18)
    x = torch.randn(4, 3, 16, 16)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_logits = torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])
    with torch.inference_mode():
        expected = (network(x) / 2.5).softmax(1)
    assert torch.allclose(onnx_logits.softmax(1), expected, atol=1e-5)
