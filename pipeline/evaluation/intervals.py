"""95% bootstrap intervals of the headline scores: how far a score could move on another sample of images
of the same size, so that runs are not compared on differences smaller than the noise.

scipy's bootstrap (percentile method, seeded) resamples the images with their predictions; the scores are
computed from each resample's confusion counts, vectorized over resamples, with torchmetrics' definitions
(a class neither present nor predicted in a resample is left out of the macro means).
"""

import numpy as np
from scipy.stats import bootstrap

LEVEL = 0.95
SCORES = ("acc", "bal_acc", "f1_macro")


def confusion_counts(targets: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """(..., C, C) counts, rows true classes, for targets and preds of shape (..., n)."""
    batch = targets.shape[:-1]
    cells = (targets * num_classes + preds).reshape(-1, targets.shape[-1])
    offsets = np.arange(len(cells))[:, None] * num_classes**2
    counts = np.bincount((cells + offsets).ravel(), minlength=len(cells) * num_classes**2)
    return counts.reshape(*batch, num_classes, num_classes)


def scores_of(counts: np.ndarray) -> dict[str, np.ndarray]:
    """acc, bal_acc (macro recall) and f1_macro from (..., C, C) confusion counts."""
    tp = np.diagonal(counts, axis1=-2, axis2=-1).astype(float)
    support, predicted = counts.sum(-1), counts.sum(-2)
    fn, fp = support - tp, predicted - tp
    seen = (tp + fn + fp) > 0

    def macro(numerator, denominator):
        per_class = np.divide(numerator, denominator, out=np.zeros_like(tp), where=denominator > 0)
        return (per_class * seen).sum(-1) / np.maximum(seen.sum(-1), 1)

    return {
        "acc": tp.sum(-1) / np.maximum(support.sum(-1), 1),
        "bal_acc": macro(tp, tp + fn),
        "f1_macro": macro(2 * tp, 2 * tp + fp + fn),
    }


def bootstrap_intervals(
    targets: np.ndarray, preds: np.ndarray, num_classes: int, resamples: int, seed: int
) -> dict[str, tuple[float, float]]:
    """score -> (low, high), the central LEVEL interval of `resamples` bootstrap resamples of the images."""
    intervals = {}
    for name in SCORES:

        def statistic(t, p, axis=-1, name=name):
            return scores_of(
                confusion_counts(np.moveaxis(t, axis, -1), np.moveaxis(p, axis, -1), num_classes)
            )[name]

        result = bootstrap(
            (targets, preds),
            statistic,
            n_resamples=resamples,
            vectorized=True,
            paired=True,
            confidence_level=LEVEL,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
        intervals[name] = (float(result.confidence_interval.low), float(result.confidence_interval.high))
    return intervals
