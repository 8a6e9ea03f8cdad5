"""Several labels an image: what the calibrate stage fits (a temperature and a threshold a label) and what
the validate stage scores, from logits and rows of 0/1.

One temperature divides every label's logit so that the sigmoids fit the calib split (the binary
cross-entropy over all labels: one a label ran to its bound on labels the split separates perfectly and
made their probabilities 0 or 1); a label's threshold is the probability above which it is answered, the
one with the best F1 on the calib split (what the "per-class thresholds" users ask for mean), halfway
between the split's probabilities on either side of it, or 0.5 where the split shows the label too rarely.
Scores follow torchmetrics (its multi-label average precision, F1, exact match and Hamming distance), each
headline one with a 95% bootstrap interval (scipy's, over images).
"""

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from scipy.stats import bootstrap
from torchmetrics.functional.classification import (
    multilabel_average_precision,
    multilabel_exact_match,
    multilabel_f1_score,
    multilabel_hamming_distance,
    multilabel_precision,
    multilabel_recall,
)

from pipeline.evaluation.intervals import LEVEL

MIN_POSITIVES = 5  # a label shown by fewer calib images keeps threshold 0.5
TEMPERATURES = (0.05, 20.0)  # the range the temperature is searched in
SCORES = ("map", "f1_macro", "subset_acc", "hamming_loss")  # with bootstrap intervals


def binary_loss(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean binary cross-entropy of sigmoid(logits), computed stably."""
    return float(np.mean(np.logaddexp(0, logits) - targets * logits))


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The temperature T whose sigmoid(logits / T) has the least binary cross-entropy over all labels."""
    z, y = logits.double().numpy(), targets.double().numpy()
    best = minimize_scalar(lambda t: binary_loss(z / np.exp(t), y), bounds=tuple(np.log(TEMPERATURES)))
    return round(float(np.exp(best.x)), 4)


def fit_thresholds(probabilities: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """A threshold a label: answering the images at or above the split's k-th probability has the best F1
    (the widest such k: the highest k), and the threshold lies halfway between that probability and the next
    lower one; 0.5 for a label the split shows fewer than MIN_POSITIVES times."""
    found = []
    for p, y in zip(probabilities.double().T.numpy(), targets.T.numpy(), strict=True):
        if y.sum() < MIN_POSITIVES:
            found.append(0.5)
            continue
        candidates = np.unique(p)
        answered = p[None, :] >= candidates[:, None]
        tp = (answered & (y[None, :] > 0)).sum(1)
        f1 = 2 * tp / (answered.sum(1) + y.sum())
        k = int(np.flatnonzero(f1 == f1.max())[-1])
        below = candidates[k - 1] if k > 0 else 0.0
        found.append(round(float((candidates[k] + below) / 2), 6))
    return found


def answers(probabilities: torch.Tensor, thresholds: list[float] | None) -> torch.Tensor:
    """Rows of 0/1: each label whose probability reaches its threshold (0.5 without fitted ones)."""
    limits = torch.tensor(thresholds if thresholds else [0.5] * probabilities.shape[1])
    return (probabilities >= limits).long()


def multilabel_scores(
    probabilities: torch.Tensor, targets: torch.Tensor, thresholds: list[float] | None
) -> dict:
    """mAP (macro over the labels the images show, micro over image-label pairs), and at the thresholds:
    macro F1, subset accuracy (every label of an image right) and Hamming loss (the share of image-label
    pairs wrong)."""
    labels, y = probabilities.shape[1], targets.long()
    answered = answers(probabilities, thresholds)
    each = multilabel_average_precision(probabilities, y, labels, average=None)
    shown = y.sum(0) > 0  # a label the images never show has no precision to average (torchmetrics: 0)
    return {
        "map": float(each[shown].mean()) if shown.any() else float("nan"),
        "map_micro": float(multilabel_average_precision(probabilities, y, labels, average="micro")),
        "f1_macro": float(multilabel_f1_score(answered, y, labels, threshold=0.5, average="macro")),
        "f1_micro": float(multilabel_f1_score(answered, y, labels, threshold=0.5, average="micro")),
        "subset_acc": float(multilabel_exact_match(answered, y, labels, threshold=0.5)),
        "hamming_loss": float(
            multilabel_hamming_distance(answered, y, labels, threshold=0.5, average="micro")
        ),
    }


def per_label(probabilities: torch.Tensor, targets: torch.Tensor, thresholds: list[float] | None) -> dict:
    """Each label's average precision, and its precision, recall and F1 at its threshold."""
    labels, y = probabilities.shape[1], targets.long()
    answered = answers(probabilities, thresholds)
    at = {"threshold": 0.5, "average": None}
    return {
        "ap": multilabel_average_precision(probabilities, y, labels, average=None).tolist(),
        "precision": multilabel_precision(answered, y, labels, **at).tolist(),
        "recall": multilabel_recall(answered, y, labels, **at).tolist(),
        "f1": multilabel_f1_score(answered, y, labels, **at).tolist(),
        "support": y.sum(0).tolist(),
    }


def score_intervals(
    probabilities: torch.Tensor,
    targets: torch.Tensor,
    thresholds: list[float] | None,
    resamples: int,
    seed: int,
) -> dict[str, tuple[float, float]]:
    """score -> (low, high): the central LEVEL interval over `resamples` bootstrap resamples of the images."""
    rows = np.arange(len(targets))

    def statistic(chosen: np.ndarray) -> np.ndarray:
        found = multilabel_scores(probabilities[chosen], targets[chosen], thresholds)
        return np.array([found[name] for name in SCORES])

    result = bootstrap(
        (rows,), statistic, n_resamples=resamples, vectorized=False, confidence_level=LEVEL,
        method="percentile", rng=np.random.default_rng(seed),
    )  # fmt: skip
    low, high = result.confidence_interval
    return {name: (float(a), float(b)) for name, a, b in zip(SCORES, low, high, strict=True)}
