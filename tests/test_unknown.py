"""The unknown answer: energy scores on planted logits, the threshold's accepted share, and how the
separation measures read known and unknown images."""

import numpy as np
import pytest

from pipeline.evaluation.unknown import energy, separation, unknown_threshold


def confident(n: int, classes: int, margin: float, seed: int) -> np.ndarray:
    """Logits with one class ahead by about `margin`: large for known images, small for unknown ones."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1, (n, classes))
    logits[np.arange(n), rng.integers(0, classes, n)] += margin
    return logits


def test_energy_is_minus_logsumexp_and_rises_as_no_class_fits():
    logits = np.array([[10.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    expected = -np.log(np.exp(logits).sum(1))
    assert energy(logits) == pytest.approx(expected)
    assert energy(logits)[1] > energy(logits)[0]  # the flat row looks less like any class


def test_the_threshold_accepts_the_asked_share_of_val_images():
    val = confident(2000, 5, margin=6, seed=0)
    threshold = unknown_threshold(val, 0.95)
    fresh = confident(20000, 5, margin=6, seed=1)
    assert (energy(fresh) <= threshold).mean() == pytest.approx(0.95, abs=0.01)


def test_separation_of_far_apart_and_of_identical_sets():
    known, far = confident(1000, 5, margin=8, seed=2), confident(1000, 5, margin=0, seed=3)
    threshold = unknown_threshold(known, 0.95)
    apart = separation(known, far, threshold, 0.95)
    assert apart["ood_auroc"] > 0.99 and apart["ood_fpr_at_tpr"] < 0.02 and apart["ood_flagged"] > 0.98
    same = separation(known, confident(1000, 5, margin=8, seed=4), threshold, 0.95)
    assert same["ood_auroc"] == pytest.approx(0.5, abs=0.05) and same["ood_fpr_at_tpr"] == pytest.approx(
        0.95, abs=0.03
    )
