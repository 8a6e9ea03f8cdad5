"""Prediction sets with a coverage guarantee: split-conformal prediction (the LAC score, 1 - the
probability of the true class), calibrated on the calib split. A set holds every class whose probability
reaches a threshold; over new images from the same distribution, sets hold the true class at least
1 - alpha of the time, whatever the model, and at most 1 - alpha + 1/(n + 1) of it. A set may be empty: no
class is likely enough for that promise (with an accurate model and a large alpha, its least sure answers);
forcing the top class in would only add coverage above what alpha asked. Weighting the calibration images
by class (`class_balanced_weights`) promises the coverage for every class equally often instead of for the
calib split's mix, which follows an imbalanced training folder's. Hand-written: the method is one weighted
quantile of one score, which a library (MAPIE, TorchCP) would wrap in a dependency and its own model
interface.
"""

import math

import numpy as np
from scipy.stats import chi2_contingency, chisquare

# calib images under which the coverage is approximate: one calibration's coverage strays from 1 - alpha by
# more than ~0.03 (one standard deviation at alpha 0.1; it is Beta-distributed, Angelopoulos & Bates)
APPROXIMATE_BELOW = 100
# below this chi-square p-value, a split's classes are taken to be mixed unlike the promised mix: the
# guarantee is for images drawn like that, and a class the model errs on more often lowers it
MIX_DIFFERS_BELOW = 0.01


def conformal_threshold(
    probs: np.ndarray, targets: np.ndarray, alpha: float, weights: np.ndarray | None = None
) -> float:
    """The probability a class needs to join a set: 1 - the score where the calibration images' weights
    (`weights`, each 1 when None: the ceil((n + 1)(1 - alpha))-th smallest score) reach 1 - alpha of their sum
    plus one more image of the largest weight, the new one, scored above them all (Tibshirani et al. 2019);
    0 (every class) when they never do."""
    n = len(targets)
    weights = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    scores = 1 - probs[np.arange(n), targets]
    order = np.argsort(scores, kind="stable")
    reached = np.cumsum(weights[order]) / (weights.sum() + weights.max())
    first = int(np.searchsorted(reached, (1 - alpha) * (1 - 1e-12)))  # float sums land a hair below the rank
    return 0.0 if first >= n else float(1 - scores[order][first])


def class_balanced_weights(targets: np.ndarray) -> np.ndarray:
    """Each calibration image weighted 1 / its class's count, so that every class counts the same: the sets'
    coverage is then promised for new images of every class equally often, however the calib split is
    mixed."""
    counts = np.bincount(targets)
    return 1.0 / counts[targets]


def effective_size(weights: np.ndarray) -> float:
    """How many equally weighted images the weighted ones are worth (Kish): a class of 3 calib images
    weighted as one of 80 counts for little more than 3."""
    return float(weights.sum() ** 2 / (weights**2).sum())


def prediction_sets(probs: np.ndarray, threshold: float) -> np.ndarray:
    """(n, C) membership: the classes at or above the threshold (none, for an image no class fits)."""
    return probs >= threshold


def set_metrics(members: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Empirical coverage (share of sets holding the true class), mean set size and share of empty sets."""
    covered, sizes = members[np.arange(len(targets)), targets], members.sum(1)
    return {
        "conformal_coverage": float(covered.mean()),
        "conformal_set_size": float(sizes.mean()),
        "conformal_empty": float((sizes == 0).mean()),
    }


def per_class_sets(members: np.ndarray, targets: np.ndarray, num_classes: int) -> dict[str, list[float]]:
    """Coverage and mean set size among the images of each true class (nan where a class has none)."""
    covered, sizes = members[np.arange(len(targets)), targets], members.sum(1)
    coverage, size = [], []
    for c in range(num_classes):
        mine = targets == c
        coverage.append(float(covered[mine].mean()) if mine.any() else math.nan)
        size.append(float(sizes[mine].mean()) if mine.any() else math.nan)
    return {"coverage": coverage, "set_size": size}


def class_mix_p(promised_counts: list[int], split_counts: list[int], balanced: bool = False) -> float:
    """The p-value of the chi-square test that a split draws its classes in the proportions the coverage is
    promised for: the calib split's (both samples), or equal for every calib class (`balanced`). Classes
    absent from both left out; 1.0 when fewer than two classes remain."""
    table = np.array([promised_counts, split_counts])
    table = table[:, table.sum(0) > 0]
    if table.shape[1] < 2 or (table.sum(1) == 0).any():
        return 1.0
    if balanced:
        calib_classes = table[0] > 0
        observed = table[1][calib_classes]
        if len(observed) < 2 or observed.sum() == 0:
            return 1.0
        return float(chisquare(observed).pvalue)
    return float(chi2_contingency(table).pvalue)
