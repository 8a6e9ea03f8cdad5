"""Two models' logits over the same labelled batches: how far apart they are and how accurate each is.

Used for PyTorch against its ONNX export (parity) and fp32 ONNX against its INT8 version; a runner is any
callable from an NCHW float32 numpy batch to logits, so this module needs neither torch nor onnxruntime.
"""

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch and onnxruntime stay out of this module at run time
    from pipeline.onnx_io import Runner


def collect_logits(
    runners: "dict[str, Runner]", loader: Iterable
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One pass over (images, labels) batches: each runner's logits on the same inputs, and the labels."""
    logits: dict[str, list[np.ndarray]] = {name: [] for name in runners}
    labels = []
    for x, y in loader:
        batch = np.ascontiguousarray(x, dtype=np.float32)
        for name, run in runners.items():
            logits[name].append(np.asarray(run(batch), dtype=np.float32))
        labels.append(np.asarray(y))
    return {name: np.concatenate(parts) for name, parts in logits.items()}, np.concatenate(labels)


def answered(logits: np.ndarray, several: bool) -> np.ndarray:
    """The top-1 class of each image, or (several labels an image) each label at logit 0 or above."""
    return logits >= 0 if several else logits.argmax(1)


def agreement(reference: np.ndarray, candidate: np.ndarray, several: bool = False) -> dict[str, float]:
    """Max abs logit difference and the share of answers alike: top-1 classes, or image-label pairs."""
    return {
        "max_abs_diff": float(np.abs(reference - candidate).max()),
        "top1_agreement": float((answered(reference, several) == answered(candidate, several)).mean()),
    }


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy; for rows of 0/1 (several labels an image) the share of image-label pairs right."""
    several = labels.ndim == 2
    return float((answered(logits, several) == (labels > 0 if several else labels)).mean())
