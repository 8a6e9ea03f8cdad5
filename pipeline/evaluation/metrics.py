"""Classification metrics, curves and top losses from logits, computed with torchmetrics (the macro AUC and
AP average its per-class values over the classes a split has), so every model source (checkpoint, MLflow
run, ONNX file) is judged by the same code. Their intervals: pipeline.evaluation.intervals."""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_average_precision,
    multiclass_calibration_error,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_precision_recall_curve,
    multiclass_recall,
    multiclass_roc,
    multilabel_auroc,
    multilabel_average_precision,
)

XY = tuple[np.ndarray, np.ndarray]


def top_k(requested: int, num_classes: int) -> int:
    """Top-k beyond the number of classes would always be 1.0: cap it."""
    return min(requested, num_classes)


def classification_metrics(
    logits: torch.Tensor, targets: torch.Tensor, num_classes: int, k: int, calibration_bins: int
) -> dict[str, float]:
    """Scalar metrics over one split; `top{k}_acc` names its k, `ece` is the L1 expected calibration error."""
    probs = logits.softmax(1)
    args = {"num_classes": num_classes}
    out = {
        "acc": multiclass_accuracy(probs, targets, average="micro", **args),
        f"top{top_k(k, num_classes)}_acc": multiclass_accuracy(
            probs, targets, average="micro", top_k=top_k(k, num_classes), **args
        ),
    }
    for average in ("macro", "weighted"):
        out[f"precision_{average}"] = multiclass_precision(probs, targets, average=average, **args)
        out[f"recall_{average}"] = multiclass_recall(probs, targets, average=average, **args)
        out[f"f1_{average}"] = multiclass_f1_score(probs, targets, average=average, **args)
    out["auc_weighted"] = multiclass_auroc(probs, targets, average="weighted", **args)
    out["bal_acc"] = out["recall_macro"]  # balanced accuracy: the mean of the per-class recalls
    one_hot = F.one_hot(targets, num_classes)
    present = one_hot.any(0)  # torchmetrics scores a class the split lacks as 0 and averages it in
    out["auc_macro"] = multiclass_auroc(probs, targets, average="none", **args)[present].mean()
    out["auc_micro"] = multilabel_auroc(probs, one_hot, num_labels=num_classes, average="micro")
    out["ap_macro"] = multiclass_average_precision(probs, targets, average="none", **args)[present].mean()
    out["ap_micro"] = multilabel_average_precision(probs, one_hot, num_labels=num_classes, average="micro")
    out["loss"] = F.cross_entropy(logits.float(), targets)
    out["ece"] = multiclass_calibration_error(probs, targets, n_bins=calibration_bins, norm="l1", **args)
    return {name: value.item() for name, value in out.items()}


def per_class_metrics(logits: torch.Tensor, targets: torch.Tensor, num_classes: int) -> dict[str, list]:
    """The per-class report's columns, one value per class in class-index order."""
    probs = logits.softmax(1)
    args = {"num_classes": num_classes, "average": "none"}
    return {
        "precision": multiclass_precision(probs, targets, **args).tolist(),
        "recall": multiclass_recall(probs, targets, **args).tolist(),
        "f1": multiclass_f1_score(probs, targets, **args).tolist(),
        "support": torch.bincount(targets, minlength=num_classes).tolist(),
        "auc": multiclass_auroc(probs, targets, **args).tolist(),
        "ap": multiclass_average_precision(probs, targets, **args).tolist(),
    }


def confusion_matrix(
    logits: torch.Tensor, targets: torch.Tensor, num_classes: int, normalize: str | None = None
) -> torch.Tensor:
    """Rows are true classes, columns predicted ones; counts, or each row's shares with normalize="true"."""
    return multiclass_confusion_matrix(
        logits.argmax(1), targets, num_classes=num_classes, normalize=normalize
    )


@dataclass(frozen=True)
class Curves:
    """One-vs-rest curves per class and their micro and macro averages, each as (x, y) arrays."""

    per_class: list[XY]
    micro: XY
    macro: XY


def roc_curves(logits: torch.Tensor, targets: torch.Tensor, num_classes: int) -> Curves:
    """x: false positive rate, y: true positive rate."""
    return _curves(multiclass_roc, logits.softmax(1), targets, num_classes, swap=False)


def pr_curves(logits: torch.Tensor, targets: torch.Tensor, num_classes: int) -> Curves:
    """x: recall, y: precision."""
    return _curves(multiclass_precision_recall_curve, logits.softmax(1), targets, num_classes, swap=True)


def _curves(curve, probs: torch.Tensor, targets: torch.Tensor, num_classes: int, swap: bool) -> Curves:
    def xy(first: torch.Tensor, second: torch.Tensor) -> XY:
        pair = (second, first) if swap else (first, second)
        return pair[0].numpy(), pair[1].numpy()

    first, second, _ = curve(probs, targets, num_classes)
    averages = {avg: xy(*curve(probs, targets, num_classes, average=avg)[:2]) for avg in ("micro", "macro")}
    return Curves(
        [xy(a, b) for a, b in zip(first, second, strict=True)], averages["micro"], averages["macro"]
    )


def top_losses(logits: torch.Tensor, targets: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the n highest cross-entropy losses, highest first: confidently wrong predictions lead."""
    losses = F.cross_entropy(logits, targets, reduction="none")
    return losses.topk(min(n, len(losses))).indices
