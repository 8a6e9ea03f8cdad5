"""Split-conformal prediction sets on probabilities whose labels are drawn from them: the coverage the
threshold promises is the coverage new images get."""

import logging

import numpy as np
import pytest
import torch

from pipeline.evaluation.conformal import (
    class_balanced_weights,
    class_mix_p,
    conformal_threshold,
    effective_size,
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


@pytest.mark.parametrize("n", [9, 10, 19, 99, 100, 241])
@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2])
def test_equal_weights_give_the_ceil_rank_of_split_conformal(n, alpha):
    probs, targets = drawn(n, 3, seed=n)
    scores = np.sort(1 - probs[np.arange(n), targets])
    rank = -(-(n + 1) * round(100 * (1 - alpha)) // 100)  # ceil((n + 1)(1 - alpha)) in integers
    expected = 0.0 if rank > n else 1 - scores[rank - 1]
    assert conformal_threshold(probs, targets, alpha) == pytest.approx(expected)


def skewed(counts: list[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A model sure of class 0 and unsure of the others, `counts` images a class."""
    rng = np.random.default_rng(seed)
    targets = np.repeat(np.arange(len(counts)), counts)
    logits = rng.normal(size=(len(targets), len(counts)))
    logits[np.arange(len(targets)), targets] += np.where(targets == 0, 4.0, 1.0)
    return torch.tensor(logits).softmax(1).numpy(), targets


def test_class_balanced_sets_cover_every_class_equally_often_whatever_the_calib_mix():
    """Calibrated on 900 easy images and 30 of each of three hard classes, tested on as many of each: the
    plain threshold serves the calib mix, the class-balanced one the test's."""
    probs, targets = skewed([900, 30, 30, 30], seed=0)
    new_probs, new_targets = skewed([3000] * 4, seed=1)
    plain = conformal_threshold(probs, targets, 0.1)
    balanced = conformal_threshold(probs, targets, 0.1, class_balanced_weights(targets))
    coverage = {
        name: set_metrics(prediction_sets(new_probs, t), new_targets)["conformal_coverage"]
        for name, t in (("plain", plain), ("balanced", balanced))
    }
    assert coverage["plain"] < 0.85 and coverage["balanced"] == pytest.approx(0.9, abs=0.04)


def test_weighted_images_are_worth_fewer_equal_ones():
    assert effective_size(np.ones(50)) == pytest.approx(50)
    weights = class_balanced_weights(np.repeat(np.arange(10), [24, 3, 46, 3, 47, 29, 3, 3, 3, 80]))
    assert 40 < effective_size(weights) < 70  # five classes of 3 images weigh as much as the big ones


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


def test_a_balanced_promise_is_checked_against_equal_classes(caplog):
    calib, test = [24, 3, 46, 3, 47, 29, 3, 3, 3, 80], [15, 12, 72, 38, 42, 26, 73, 30, 12, 52]
    assert class_mix_p(calib, [37] * 10, balanced=True) == pytest.approx(1.0)
    assert class_mix_p(calib, calib, balanced=True) < 1e-6
    conformal = {"alpha": 0.1, "class_counts": calib, "mix": "balanced"}
    with caplog.at_level(logging.INFO, logger="pipeline"):
        mix_metrics("test", conformal, torch.tensor(np.repeat(np.arange(10), test)), 10)
    (said,) = caplog.records
    assert said.getMessage().startswith("test's classes are mixed unlike every class equally often")
    assert said.levelno == logging.INFO  # the promise holds class by class: no warning
