"""An "unknown" answer for inputs unlike the training images: a score that rises as an input looks less like
them, and a threshold set on the calib split so that a chosen share of in-distribution images
(calibrate.unknown_accept) is accepted (a tolerance bound, not the bare quantile: `unknown_threshold`). The
scores (pipeline.models.trusted) are computed inside the exported model.

Fitted on training features: per layer, class means and one shared covariance (Mahalanobis; Ledoit-Wolf
shrinkage, since a small folder has fewer images than feature dimensions), or a bank of normalized
penultimate features (k nearest neighbours). The threshold is one formula; the separation figures are
scikit-learn's AUROC and two shares.
"""

import numpy as np
from scipy.stats import nct, norm
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

TOLERANCE_CONFIDENCE = 0.9  # how sure the threshold is to accept the share asked of new known images


def fit_detector(method: str, layers: list[np.ndarray], labels: np.ndarray, num_classes: int) -> dict:
    """What the unknown score of `method` needs from the training images' features (`layers`, as
    pipeline.models.trusted's splits give them; every class among `labels`), as arrays."""
    if method == "mahalanobis":
        arrays = {}
        scales = []
        for i, features in enumerate(layers):
            means, precision = class_means_and_precision(features, labels, num_classes)
            arrays[f"means.{i}"], arrays[f"precision.{i}"] = means, precision
            scales.append(np.median(nearest_mean_distance(features, means, precision)))
        arrays["scales"] = np.maximum(np.array(scales), np.finfo(np.float32).tiny).astype(np.float32)
        return arrays
    if method == "knn":
        return {"bank": layers[-1].astype(np.float32)}
    return {}


def class_means_and_precision(features: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple:
    """Of the L2-normalized features, as pipeline.models.trusted.LayerDistance scores them."""
    unit = normalized(features)
    means = np.stack([unit[labels == c].mean(0) for c in range(num_classes)])
    precision = LedoitWolf(assume_centered=True).fit(unit - means[labels]).precision_
    return means.astype(np.float32), precision.astype(np.float32)


def nearest_mean_distance(features: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """The training images' own distances, whose median sets the layer's unit."""
    unit = normalized(features).astype(np.float64)
    projected = unit @ precision
    mean_terms = ((means @ precision) * means).sum(1)
    squared = (projected * unit).sum(1, keepdims=True) - 2 * projected @ means.T + mean_terms
    return np.sqrt(squared.min(1).clip(min=0))


def normalized(features: np.ndarray) -> np.ndarray:
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def stratified_sample(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Indices of about `count` images in the classes' proportions, at least one of each class (seeded)."""
    if len(labels) <= count:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        take = max(1, round(count * len(members) / len(labels)))
        chosen.append(rng.permutation(members)[:take])
    return np.sort(np.concatenate(chosen))


def unknown_threshold(calib_scores: np.ndarray, accepted: float) -> float:
    """What an answer may score at most: the one-sided normal tolerance bound below which `accepted` of new
    images like the calib ones fall, with TOLERANCE_CONFIDENCE, and never below the calib images' own
    `accepted` quantile. A few tens of calib images put their quantile anywhere in a wide range, and held-out
    images of the training folder look more familiar than new ones (docs/reports/trust.md)."""
    quantile = float(np.quantile(calib_scores, accepted, method="higher"))
    if len(calib_scores) < 2:
        return quantile
    bound = calib_scores.mean() + tolerance_factor(len(calib_scores), accepted) * calib_scores.std(ddof=1)
    return max(quantile, float(bound))


def tolerance_factor(n: int, accepted: float) -> float:
    """Standard deviations above the mean of n normal scores below which `accepted` of the population falls
    with TOLERANCE_CONFIDENCE (the noncentral t; 3.4 for 12 images at 0.99, 2.6 for 100, 2.4 for 2,000)."""
    return float(nct.ppf(TOLERANCE_CONFIDENCE, n - 1, norm.ppf(accepted) * np.sqrt(n)) / np.sqrt(n))


def separation(known: np.ndarray, unknown: np.ndarray, threshold: float) -> dict[str, float]:
    """How well the scores tell known images (a test split) from unknown ones (another folder): AUROC, the
    share of unknown images accepted when 95% of the known ones are (FPR at 95% TPR, the field's usual figure,
    set on the known images themselves), and the share of unknown images the stored threshold flags."""
    labels = np.r_[np.zeros(len(known)), np.ones(len(unknown))]
    at_tpr = np.quantile(known, 0.95, method="higher")
    return {
        "ood_auroc": float(roc_auc_score(labels, np.r_[known, unknown])),
        "ood_fpr95": float((unknown <= at_tpr).mean()),
        "ood_flagged": float((unknown > threshold).mean()),
    }
