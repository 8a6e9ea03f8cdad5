"""Classification metrics from logits, computed with torchmetrics (no hand-written formulas)."""

import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)


@torch.no_grad()
def predict(model: torch.nn.Module, loader) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and targets over a loader, in loader order."""
    model.eval()
    logits, targets = [], []
    for x, y in loader:
        logits.append(model(x).float())
        targets.append(y)
    return torch.cat(logits), torch.cat(targets)


def classification_metrics(logits: torch.Tensor, targets: torch.Tensor, num_classes: int) -> dict[str, float]:
    probs = logits.softmax(1)
    args = {"num_classes": num_classes}
    return {
        "acc": multiclass_accuracy(probs, targets, average="micro", **args).item(),
        "precision_macro": multiclass_precision(probs, targets, average="macro", **args).item(),
        "recall_macro": multiclass_recall(probs, targets, average="macro", **args).item(),
        "f1_macro": multiclass_f1_score(probs, targets, average="macro", **args).item(),
        "auc_macro": multiclass_auroc(probs, targets, average="macro", **args).item(),
    }


def confusion_matrix(logits: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Rows are true classes, columns predicted classes; raw counts."""
    return multiclass_confusion_matrix(logits.argmax(1), targets, num_classes=num_classes)
