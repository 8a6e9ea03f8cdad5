"""Split-conformal prediction sets on probabilities whose labels are drawn from them: the coverage the
threshold promises is the coverage new images get."""

import logging

import numpy as np
import pytest
import torch

from pipeline.evaluation.conformal import (
    class_mix_p,
    conformal_threshold,
    per_class_sets,
    prediction_sets,
    set_metrics,
)
from pipeline.stages.trust_scores import mix_metrics


def drawn(n: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels drawn from them (a calibrated model)."""
    gen = torch.Generator().manual_seed(seed)
    probs = (torch.randn(n, classes, generator=gen) * 2).softmax(1)
    return probs.numpy(), torch.multinomial(probs, 1, generator=gen).squeeze(1).numpy()


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2])
def test_new_images_get_the_coverage_the_val_threshold_promises(alpha):
    threshold = conformal_threshold(*drawn(2000, 6, seed=0), alpha)
    probs, targets = drawn(20000, 6, seed=1)
    found = set_metrics(prediction_sets(probs, threshold), targets)
    assert found["conformal_coverage"] == pytest.approx(1 - alpha, abs=0.015)
    assert found["conformal_set_size"] < 6  # informative: not every class


def test_too_few_calibration_images_give_sets_of_every_class():
    """8 images have no rank ceil(9 x 0.9) = 9 (alpha 0.1): no threshold but 0 keeps the promise."""
    probs, targets = drawn(8, 4, seed=0)
    assert conformal_threshold(probs, targets, 0.1) == 0.0
    assert prediction_sets(probs, 0.0).all()


def test_a_threshold_no_class_reaches_gives_empty_sets_counted_as_such():
    probs, targets = drawn(300, 3, seed=2)
    members = prediction_sets(probs, float(probs.max()) + 1e-6)
    assert not members.any()
    assert set_metrics(members, targets) == {
        "conformal_coverage": 0.0,
        "conformal_set_size": 0.0,
        "conformal_empty": 1.0,
    }


def test_per_class_figures_add_up_to_the_overall_ones():
    probs, targets = drawn(300, 3, seed=2)
    members = prediction_sets(probs, 0.3)
    per_class = per_class_sets(members, targets, 3)
    counts = np.bincount(targets, minlength=3)
    overall = set_metrics(members, targets)
    for name in ("coverage", "set_size"):
        assert np.dot(per_class[name], counts) / counts.sum() == pytest.approx(overall[f"conformal_{name}"])


def test_a_split_mixed_like_the_calib_one_passes_and_one_mixed_otherwise_is_named(caplog):
    """The imbalanced clothing shape: five classes at 3 calib images each and 12-73 test images each."""
    calib, same = [24, 3, 46, 3, 47, 29, 3, 3, 3, 80], [26, 4, 43, 2, 50, 31, 3, 2, 4, 76]
    test = [15, 12, 72, 38, 42, 26, 73, 30, 12, 52]
    assert class_mix_p(calib, same) > 0.5
    assert class_mix_p(calib, test) < 1e-6
    assert class_mix_p([5, 0], [0, 5]) < 0.05 and class_mix_p([5, 0], [7, 0]) == 1.0
    conformal = {"alpha": 0.1, "class_counts": calib}
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        shifted = mix_metrics("test", conformal, torch.tensor(np.repeat(np.arange(10), test)), 10)
        kept = mix_metrics("val", conformal, torch.tensor(np.repeat(np.arange(10), same)), 10)
    assert shifted["conformal_mix_p"] < 1e-6 and kept["conformal_mix_p"] > 0.5
    assert [r.getMessage()[:61] for r in caplog.records] == [
        "test's classes are mixed unlike the calib split's (chi-square"
    ]
