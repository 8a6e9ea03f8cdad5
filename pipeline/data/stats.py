"""Dataset statistics: counts per split and class, sizes, modes, formats, imbalance, channel mean/std."""

import statistics
from collections import Counter
from typing import Any

import numpy as np

from pipeline.data.integrity import FileInfo
from pipeline.data.sources import DatasetIndex
from pipeline.tasks import MULTILABEL


def channel_mean_std(infos: list[FileInfo]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1], each image weighted equally (as after resizing)."""
    mean = np.mean([i.rgb_mean for i in infos], axis=0)
    sq_mean = np.mean([i.rgb_sq_mean for i in infos], axis=0)
    std = np.sqrt(np.maximum(sq_mean - mean**2, 1e-12))
    return tuple(mean.round(6).tolist()), tuple(std.round(6).tolist())


def _spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def size_outliers(infos: list[FileInfo], factor: float) -> list[dict[str, Any]]:
    """Images whose pixel area is more than `factor` times above or below the median area."""
    areas = [i.width * i.height for i in infos]
    median = statistics.median(areas)
    return [
        {"path": i.path, "width": i.width, "height": i.height}
        for i, area in zip(infos, areas, strict=True)
        if area > factor * median or area * factor < median
    ]


def dataset_stats(index: DatasetIndex, infos: list[FileInfo], outlier_factor: float = 4.0) -> dict[str, Any]:
    """Figures over the index's images; `infos` are their decoded FileInfo, in index order."""
    counts = index.counts()
    per_class = {name: sum(c[name] for c in counts.values()) for name in index.class_names}
    largest, smallest = max(per_class.values()), min(per_class.values())
    return {
        "num_images": len(index.records),
        "num_classes": len(index.class_names),
        "class_names": index.class_names,
        "counts": counts,
        "split_sizes": {split: len(index.split(split)) for split in counts},
        "imbalance_ratio": largest / max(1, smallest),
        "class_shares": {name: n / len(index.records) for name, n in per_class.items()},
        **(label_sets(index) if index.task == MULTILABEL else {}),
        "width": _spread([i.width for i in infos]),
        "height": _spread([i.height for i in infos]),
        "bytes": _spread([i.bytes for i in infos]),
        "modes": dict(Counter(i.mode for i in infos)),
        "formats": dict(Counter(i.format for i in infos)),
        "size_outliers": size_outliers(infos, outlier_factor),
    }


def label_sets(index: DatasetIndex) -> dict[str, Any]:
    """A multi-label index's labels an image and how often each two labels show together (`co_occurrence`:
    row i, column j = images showing both; the diagonal, images showing i)."""
    shown = np.zeros((len(index.records), len(index.class_names)), dtype=np.int64)
    for row, record in enumerate(index.records):
        shown[row, list(record.labels)] = 1
    per_image = shown.sum(1)
    return {
        "task": MULTILABEL,
        "labels_per_image": {"mean": round(float(per_image.mean()), 3), **_spread(per_image.tolist())},
        "label_sets": dict(Counter(int(n) for n in per_image)),
        "co_occurrence": (shown.T @ shown).tolist(),
    }
