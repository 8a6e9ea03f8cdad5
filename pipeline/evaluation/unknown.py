"""An "unknown" answer for inputs unlike the training images: the energy score of the model's own logits,
-logsumexp(logits), high where no class fits (Liu et al., 2020), with a threshold set on the val split so
that a chosen share of in-distribution images (e.g. 95%) is accepted. It needs nothing stored but one
number, so the ONNX file, predict and serve compute it from the logits they already have. Hand-written:
the score is one logsumexp and the threshold one quantile.
"""

import numpy as np
from sklearn.metrics import roc_auc_score

from pipeline.export.inference import energy  # the one definition, torch-free for predict and serve


def unknown_threshold(val_logits: np.ndarray, accepted: float) -> float:
    """The energy at or below which `accepted` of the val images fall: what an answer may score at most."""
    return float(np.quantile(energy(val_logits), accepted, method="higher"))


def separation(known: np.ndarray, unknown: np.ndarray, threshold: float, tpr: float) -> dict[str, float]:
    """How well the energy tells known images (a test split) from unknown ones (another folder): AUROC, the
    share of unknown images accepted when `tpr` of the known ones are (FPR at that TPR, set on the known
    images themselves), and the share of unknown images the stored threshold flags."""
    known_scores, unknown_scores = energy(known), energy(unknown)
    labels = np.r_[np.zeros(len(known_scores)), np.ones(len(unknown_scores))]
    at_tpr = np.quantile(known_scores, tpr, method="higher")
    return {
        "ood_auroc": float(roc_auc_score(labels, np.r_[known_scores, unknown_scores])),
        "ood_fpr_at_tpr": float((unknown_scores <= at_tpr).mean()),
        "ood_flagged": float((unknown_scores > threshold).mean()),
    }
