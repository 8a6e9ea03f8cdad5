"""What the calibrate and validate stages fit and score for several labels an image, against scikit-learn and
data made to have a known answer."""

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, hamming_loss

from pipeline.evaluation.multilabel import (
    fit_temperature,
    fit_thresholds,
    multilabel_scores,
    score_intervals,
)


def labelled(n=400, labels=3, seed=0):
    """Calibrated logits: each label shown with probability sigmoid(logit)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(-0.5, 2.0, (n, labels))
    targets = (rng.random((n, labels)) < 1 / (1 + np.exp(-logits))).astype(np.float32)
    return torch.tensor(logits, dtype=torch.float32), torch.tensor(targets)


@pytest.mark.parametrize("factor", [3.0, 0.5])
def test_the_temperature_undoes_a_known_overconfidence(factor):
    logits, targets = labelled(n=4000)
    assert fit_temperature(logits * factor, targets) == pytest.approx(factor, rel=0.1)


def test_a_label_the_split_separates_keeps_a_threshold_between_its_classes():
    probabilities = torch.tensor([[0.2], [0.3], [0.9], [0.95], [0.97], [0.99], [0.999]])
    targets = torch.tensor([[0], [0], [1], [1], [1], [1], [1]])
    assert fit_thresholds(probabilities, targets) == [pytest.approx(0.6)]


def test_a_threshold_is_the_calib_splits_best_f1_and_a_rare_label_keeps_half():
    probabilities = torch.tensor([[0.9, 0.1], [0.35, 0.2], [0.3, 0.9], [0.2, 0.3], [0.32, 0.1], [0.31, 0.2]])
    targets = torch.tensor([[1, 0], [1, 0], [1, 1], [0, 0], [1, 0], [1, 0]])
    found = fit_thresholds(probabilities, targets)
    assert found[1] == 0.5  # one positive: too few to choose a threshold by
    answered = (probabilities[:, 0] >= found[0]).long()
    assert f1_score(targets[:, 0], answered) == 1.0 and found[0] == pytest.approx(0.25)


def test_scores_agree_with_scikit_learn():
    logits, targets = labelled()
    probabilities = torch.sigmoid(logits)
    thresholds = [0.4, 0.5, 0.6]
    answered = (probabilities >= torch.tensor(thresholds)).numpy()
    found = multilabel_scores(probabilities, targets, thresholds)
    y, p = targets.numpy(), probabilities.numpy()
    assert found["map"] == pytest.approx(average_precision_score(y, p, average="macro"), abs=1e-5)
    assert found["map_micro"] == pytest.approx(average_precision_score(y, p, average="micro"), abs=1e-5)
    assert found["f1_macro"] == pytest.approx(f1_score(y, answered, average="macro"), abs=1e-5)
    assert found["hamming_loss"] == pytest.approx(hamming_loss(y, answered), abs=1e-5)
    assert found["subset_acc"] == pytest.approx(float((answered == y).all(1).mean()), abs=1e-5)


def test_intervals_hold_the_score_and_narrow_with_more_images():
    logits, targets = labelled(n=100)
    wide = score_intervals(torch.sigmoid(logits), targets, None, 200, seed=0)
    logits, targets = labelled(n=1600)
    narrow = score_intervals(torch.sigmoid(logits), targets, None, 200, seed=0)
    scores = multilabel_scores(torch.sigmoid(logits), targets, None)
    for name, (low, high) in narrow.items():
        assert low <= scores[name] <= high
        assert high - low < wide[name][1] - wide[name][0]


def test_map_averages_over_the_labels_the_images_show():
    probabilities = torch.tensor([[0.9, 0.1, 0.2], [0.2, 0.8, 0.3], [0.7, 0.6, 0.1]])
    targets = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 1, 0]])  # label 2 never shown
    assert multilabel_scores(probabilities, targets, None)["map"] == 1.0
