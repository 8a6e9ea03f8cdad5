"""Prediction sets with a coverage guarantee: split-conformal prediction (the LAC score, 1 - the
probability of the true class), calibrated on the calib split. A set holds every class whose probability
reaches a threshold; over new images from the same distribution, sets hold the true class at least
1 - alpha of the time, whatever the model, and at most 1 - alpha + 1/(n + 1) of it. A set may be empty: no
class is likely enough for that promise (with an accurate model and a large alpha, its least sure answers);
forcing the top class in would only add coverage above what alpha asked. Hand-written: the method is one
quantile of one score, which a library (MAPIE, TorchCP) would wrap in a dependency and its own model
interface.
"""

import math

import numpy as np
from scipy.stats import chi2_contingency

# calib images under which the coverage is approximate: one calibration's coverage strays from 1 - alpha by
# more than ~0.03 (one standard deviation at alpha 0.1; it is Beta-distributed, Angelopoulos & Bates)
APPROXIMATE_BELOW = 100
# below this chi-square p-value, a split's classes are taken to be mixed unlike the calib split's: the
# guarantee is for images drawn like the calib ones, and a class the model errs on more often lowers it
MIX_DIFFERS_BELOW = 0.01


def conformal_threshold(probs: np.ndarray, targets: np.ndarray, alpha: float) -> float:
    """The probability a class needs to join a set: 1 - the ceil((n + 1)(1 - alpha))-th smallest score of
    the n calibration images; 0 (every class) when n is too small for that rank to exist."""
    n = len(targets)
    rank = math.ceil((n + 1) * (1 - alpha))
    if rank > n:
        return 0.0
    scores = np.sort(1 - probs[np.arange(n), targets])
    return float(1 - scores[rank - 1])


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


def class_mix_p(calib_counts: list[int], split_counts: list[int]) -> float:
    """The p-value of the chi-square test that both splits draw their classes in the same proportions
    (classes absent from both left out; 1.0 when fewer than two classes remain)."""
    table = np.array([calib_counts, split_counts])
    table = table[:, table.sum(0) > 0]
    if table.shape[1] < 2 or (table.sum(1) == 0).any():
        return 1.0
    return float(chi2_contingency(table).pvalue)
