"""Temperature scaling: one scalar T that divides the logits, fitted on the calib split by minimizing the
negative log-likelihood. It never changes which class wins, only how sure the model says it is, so that a
probability of 0.9 is right about 9 times in 10. scipy's bounded scalar minimizer over log T: one parameter
needs no optimizer state or learning rate.

A slice of tens of images fits T noisily, so a temperature is kept only where it must help
(`safe_temperature`): where it lowers the cross-validated NLL of the slice without raising its ECE; on a
slice without a single error, only to sharpen up to the accuracy the slice proves.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import brentq, minimize_scalar
from torchmetrics.functional.classification import multiclass_calibration_error

# wide: a best checkpoint from the first epochs of averaged weights can be 20x and more under-confident
LOG_T_BOUNDS = (math.log(0.001), math.log(20.0))
ECE_BINS = 15  # as validate.calibration_bins' default


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float | None:
    """The T > 0 that minimizes the cross-entropy of softmax(logits / T) against the targets; None when there
    is none: a split classified without error (the loss falls as T shrinks) or scores no better than chance
    (it falls as T grows)."""
    if bool((logits.argmax(1) == targets).all()):
        return None
    x = logits.double()

    def nll(log_t: float) -> float:
        return F.cross_entropy(x / math.exp(log_t), targets).item()

    log_t = minimize_scalar(nll, bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-4}).x
    return None if min(abs(log_t - bound) for bound in LOG_T_BOUNDS) < 1e-2 else math.exp(log_t)


def fitted_or_none(logits: torch.Tensor, targets: torch.Tensor) -> float | None:
    """fit_temperature on a slice with errors; on one without, the T at which the mean top probability reaches
    the slice's one-sided 95% lower bound on accuracy (0.05 ** (1 / n), Clopper-Pearson), and only to sharpen
    a model less sure than that bound; None where nothing is to be done."""
    if not bool((logits.argmax(1) == targets).all()):
        return fit_temperature(logits, targets)
    bound = 0.05 ** (1 / len(targets))
    x = logits.double()

    def shortfall(log_t: float) -> float:
        return (x / math.exp(log_t)).softmax(1).max(1).values.mean().item() - bound

    if shortfall(0.0) >= 0:
        return None
    return (
        math.exp(brentq(shortfall, LOG_T_BOUNDS[0], 0.0, xtol=1e-4))
        if shortfall(LOG_T_BOUNDS[0]) > 0
        else None
    )


def cross_validated(logits: torch.Tensor, targets: torch.Tensor, folds: int, seed: int) -> dict[str, float]:
    """NLL and ECE of the held-out folds' probabilities, each fold scaled by the temperature the rest fits
    (nll, ece), and as they are (nll_plain, ece_plain)."""
    order = np.random.default_rng(seed).permutation(len(targets))
    scaled = logits.double().clone()
    for held in np.array_split(order, folds):
        rest = np.setdiff1d(order, held)
        scaled[held] = scaled[held] / (fitted_or_none(logits[rest], targets[rest]) or 1.0)
    plain = logits.double()
    num_classes = logits.shape[1]

    def ece(x: torch.Tensor) -> float:
        return multiclass_calibration_error(x.softmax(1), targets, num_classes, n_bins=ECE_BINS).item()

    return {
        "nll": F.cross_entropy(scaled, targets).item(),
        "nll_plain": F.cross_entropy(plain, targets).item(),
        "ece": ece(scaled),
        "ece_plain": ece(plain),
    }


def safe_temperature(logits: torch.Tensor, targets: torch.Tensor, seed: int) -> tuple[float | None, str]:
    """The temperature to keep (None: the logits as they are) and why, in a few words: one whose held-out
    folds (5-fold cross-validation on the slice) have a lower NLL and no higher ECE than without it."""
    temperature = fitted_or_none(logits, targets)
    if temperature is None:
        if bool((logits.argmax(1) == targets).all()):
            return None, "none needed: the slice is classified without error and the model is sure enough"
        return None, "none: no T within 0.001-20 fits better (a model scoring near chance)"
    folds = min(5, len(targets))
    if folds < 2:
        return None, "too few images to check a fit"
    cv = cross_validated(logits, targets, folds, seed)
    change = (
        f"cross-validated NLL {cv['nll_plain']:.4f} -> {cv['nll']:.4f}, "
        f"ECE {cv['ece_plain']:.4f} -> {cv['ece']:.4f}"
    )
    if cv["nll"] >= cv["nll_plain"] or cv["ece"] > cv["ece_plain"]:
        return None, f"T {temperature:.3f} left out: {change}"
    return temperature, change


def reliability(probs: torch.Tensor, targets: torch.Tensor, bins: int) -> dict[str, np.ndarray]:
    """Per equal-width confidence bin: mean confidence, accuracy and image count (empty bins left out), the
    points of a reliability diagram; binned as torchmetrics' expected calibration error bins them."""
    confidence, predicted = probs.max(1)
    which = torch.clamp((confidence * bins).ceil().long() - 1, 0, bins - 1).numpy()
    correct = (predicted == targets).double().numpy()
    counts = np.bincount(which, minlength=bins)
    used = counts > 0

    def mean(values: np.ndarray) -> np.ndarray:
        return np.bincount(which, values, minlength=bins)[used] / counts[used]

    return {"confidence": mean(confidence.double().numpy()), "accuracy": mean(correct), "count": counts[used]}
