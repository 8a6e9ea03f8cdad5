"""Bootstrap intervals of the headline scores on planted predictions whose sampling error is known."""

import math

import numpy as np
import pytest
import torch

from pipeline import summary
from pipeline.evaluation.intervals import bootstrap_intervals, confusion_counts, scores_of
from pipeline.evaluation.metrics import classification_metrics
from pipeline.run_story import description


def planted(n: int, wrong: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Targets and predictions with exactly `wrong` mistakes, spread at random."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, classes, n)
    preds = targets.copy()
    missed = rng.choice(n, wrong, replace=False)
    preds[missed] = (targets[missed] + rng.integers(1, classes, wrong)) % classes
    return targets, preds


def test_the_scores_of_confusion_counts_are_torchmetrics_own():
    targets, preds = planted(240, 30, 12)
    preds[:5] = 3  # class 3 predicted where it is not: it counts in the macro means as torchmetrics counts it
    logits = torch.nn.functional.one_hot(torch.tensor(preds), 12).float()
    expected = classification_metrics(logits, torch.tensor(targets), 12, 1, 10)
    found = scores_of(confusion_counts(targets, preds, 12))
    assert {name: pytest.approx(expected[name], abs=1e-6) for name in found} == found


def test_the_accuracy_interval_is_the_binomial_sampling_error():
    """200 images, 20 wrong: acc 0.9 +- 1.96 x sqrt(0.9 x 0.1 / 200) = +- 0.042."""
    targets, preds = planted(200, 20, 10)
    low, high = bootstrap_intervals(targets, preds, 10, resamples=2000, seed=0)["acc"]
    half = 1.96 * math.sqrt(0.9 * 0.1 / 200)
    assert low == pytest.approx(0.9 - half, abs=0.01) and high == pytest.approx(0.9 + half, abs=0.01)


def test_intervals_hold_their_scores_are_seeded_and_narrow_with_more_images():
    small, large = planted(100, 10, 5), planted(2000, 200, 5)
    first = bootstrap_intervals(*small, 5, resamples=500, seed=7)
    assert first == bootstrap_intervals(*small, 5, resamples=500, seed=7)
    scores = scores_of(confusion_counts(*small, 5))
    assert all(low <= scores[name] <= high for name, (low, high) in first.items())
    wide, narrow = first["f1_macro"], bootstrap_intervals(*large, 5, resamples=500, seed=7)["f1_macro"]
    assert narrow[1] - narrow[0] < (wide[1] - wide[0]) / 3  # 20x the images: about 1/4.5 of the width


def test_no_mistakes_give_an_interval_of_one_point():
    targets, preds = planted(50, 0, 3)
    assert set(bootstrap_intervals(targets, preds, 3, resamples=200, seed=0).values()) == {(1.0, 1.0)}


def test_the_summary_and_the_run_description_show_the_interval(tmp_path, make_cfg):
    metrics = {"test/acc": 0.9, "test/acc_ci_low": 0.858, "test/acc_ci_high": 0.942, "data/test_images": 200}
    lines = summary.finished(75.0, {"validate": 5.0}, metrics, tmp_path, "abc", "http://ui", None)
    assert lines[1] == "test (200 images): acc 0.9000 (95% CI 0.8580-0.9420)"
    assert "**test/acc** 0.9 (95% CI 0.8580-0.9420)" in description(make_cfg(), metrics)
