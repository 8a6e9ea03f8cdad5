"""The training loss of a task, and its value for a model that knows nothing: cross-entropy over the classes
for one label an image (chance: ln C), binary cross-entropy a label for several (chance: ln 2 a label, what a
zero-initialized head's logits of 0 give)."""

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.tasks import MULTILABEL

Loss = Callable[..., torch.Tensor]


def task_loss(task: str) -> Loss:
    """loss(logits, target, weight=None): class indices (or soft class targets) for one label an image;
    rows of 0/1 a label for several, `weight` then weighing each label's positives (pos_weight)."""
    if task == MULTILABEL:
        return lambda logits, target, weight=None: F.binary_cross_entropy_with_logits(
            logits, target, pos_weight=weight
        )
    return lambda logits, target, weight=None: F.cross_entropy(logits, target, weight=weight)


def chance_loss(task: str, num_classes: int) -> tuple[float, str]:
    """The loss at init a sound pipeline starts from, and how to say it."""
    return (math.log(2), "ln(2)") if task == MULTILABEL else (math.log(num_classes), f"ln({num_classes})")


def positive_weights(label_sets: list[tuple[int, ...]], num_labels: int) -> list[float]:
    """Each label's negatives over its positives among the training images: BCE's pos_weight, which makes a
    rare label's positives count as much as its negatives; 1 for a label every image shows (no negatives)."""
    shown = np.zeros(num_labels)
    for labels in label_sets:
        shown[list(labels)] += 1
    missing = len(label_sets) - shown
    return np.where(missing > 0, missing / np.maximum(shown, 1), 1.0).tolist()
