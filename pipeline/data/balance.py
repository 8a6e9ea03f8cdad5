"""Class balancing for training: loss weights, a weighted sampler, or resampled training records."""

import numpy as np
import torch
from sklearn.utils.class_weight import compute_class_weight

from pipeline.data.sources import Record


def class_weights(labels: list[int], num_classes: int) -> list[float]:
    """'balanced' weights n / (C * count_c): each class contributes equally to the loss."""
    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=np.asarray(labels))
    out = np.ones(num_classes)
    out[present] = weights
    return out.tolist()


def weighted_sampler(labels: list[int], seed: int) -> torch.utils.data.WeightedRandomSampler:
    """Draws len(labels) samples per epoch with every class equally likely."""
    counts = np.bincount(labels)
    weights = torch.as_tensor(1.0 / counts[labels], dtype=torch.double)
    return torch.utils.data.WeightedRandomSampler(
        weights, len(labels), replacement=True, generator=torch.Generator().manual_seed(seed)
    )


def resample(records: list[Record], mode: str, seed: int) -> list[Record]:
    """oversample: repeat random images of small classes up to the largest; undersample: cut to the least."""
    rng = np.random.default_rng(seed)
    by_label: dict[int, list[Record]] = {}
    for r in records:
        by_label.setdefault(r.label, []).append(r)
    sizes = [len(v) for v in by_label.values()]
    target = max(sizes) if mode == "oversample" else min(sizes)
    out: list[Record] = []
    for label in sorted(by_label):
        group = by_label[label]
        if mode == "oversample":
            extra = rng.choice(len(group), target - len(group), replace=True) if target > len(group) else []
            out += group + [group[i] for i in extra]
        else:
            out += [group[i] for i in sorted(rng.choice(len(group), target, replace=False))]
    return out
