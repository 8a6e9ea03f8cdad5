"""A new classifier head fitted to convergence on the frozen pretrained backbone's features before the network
trains (`finetune.head_fit`; LP-FT, Kumar et al. 2022: fine-tuning from a converged head moves the pretrained
features less than from a fresh one), and a linear probe that is that fit alone. The features come once per
image from pipeline.data.feature_cache; the fit is scikit-learn's multinomial logistic regression, its L2
strength the one of STRENGTHS whose head gives the val split the lowest log-loss.
"""

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, log_loss
from torch import nn

from pipeline.cpu_share import one_blas_thread
from pipeline.errors import PipelineError
from pipeline.models.factory import classifier_head

STRENGTHS = (0.01, 0.1, 1.0, 10.0, 100.0)  # scikit-learn's C, the inverse of the L2 strength, tried in turn


@dataclass(frozen=True)
class FittedHead:
    weight: np.ndarray  # (classes, features), as nn.Linear holds it
    bias: np.ndarray  # (classes,)
    strength: float  # the C chosen
    val_scores: dict[str, float]  # val/acc, val/bal_acc, val/f1_macro and val/loss of the fitted head


def fit_head(train: tuple, val: tuple, num_classes: int, balanced: bool, seed: int) -> FittedHead:
    """The head of the strength that gives `val` (features, labels) the lowest log-loss, fitted on `train`
    (features, labels; every class present); class-balanced weights when training balances classes."""
    best = None
    for strength in STRENGTHS:
        with one_blas_thread():
            model = LogisticRegression(
                C=strength, max_iter=2000, class_weight="balanced" if balanced else None, random_state=seed
            ).fit(*train)
        weight, bias = linear_head(model, num_classes)
        scores = val_scores(val[0] @ weight.T + bias, val[1], num_classes)
        if best is None or scores["val/loss"] < best.val_scores["val/loss"]:
            best = FittedHead(weight, bias, strength, scores)
    return best


def linear_head(model: LogisticRegression, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(weight, bias) of nn.Linear that gives the same class probabilities: a two-class model keeps one row
    (the second class's log-odds), split evenly between the two."""
    weight, bias = model.coef_.astype(np.float32), model.intercept_.astype(np.float32)
    if num_classes == 2 and len(weight) == 1:
        return np.concatenate([-weight / 2, weight / 2]), np.concatenate([-bias / 2, bias / 2])
    return weight, bias


def val_scores(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, float]:
    if len(labels) == 0:
        return {"val/loss": float("inf")}
    probs = torch.from_numpy(logits).double().softmax(1).numpy()
    predicted = logits.argmax(1)
    return {
        "val/acc": float(accuracy_score(labels, predicted)),
        "val/bal_acc": float(balanced_accuracy_score(labels, predicted)),
        "val/f1_macro": float(f1_score(labels, predicted, average="macro", labels=range(num_classes))),
        "val/loss": float(log_loss(labels, probs, labels=range(num_classes))),
    }


def load_into(network: nn.Module, head: FittedHead) -> None:
    """The fitted weights into the network's classifier head (a linear layer on the penultimate features)."""
    layer = classifier_head(network)
    if not isinstance(layer, nn.Linear) or tuple(layer.weight.shape) != head.weight.shape:
        raise PipelineError(
            f"finetune.head_fit needs a linear classifier head on the penultimate features; "
            f"{type(network).__name__} has {type(layer).__name__}: set finetune.head_fit=false"
        )
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(head.weight))
        layer.bias.copy_(torch.from_numpy(head.bias))
