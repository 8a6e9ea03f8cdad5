"""Temperature scaling: one scalar T that divides the logits, fitted on the val split by minimizing the
negative log-likelihood. It never changes which class wins, only how sure the model says it is, so that a
probability of 0.9 is right about 9 times in 10. scipy's bounded scalar minimizer over log T: one parameter
needs no optimizer state or learning rate.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar

LOG_T_BOUNDS = (math.log(0.05), math.log(20.0))  # far beyond what trained CNNs need (T ~ 0.5-3)


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
