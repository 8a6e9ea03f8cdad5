"""Dataset statistics: counts per split and class, sizes, modes, formats, imbalance, channel mean/std."""

import statistics
from collections import Counter
from typing import Any

import numpy as np

from pipeline.data.integrity import FileInfo
from pipeline.data.sources import DatasetIndex


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
    per_class = Counter(r.label for r in index.records)
    largest, smallest = max(per_class.values()), min(per_class.values())
    return {
        "num_images": len(index.records),
        "num_classes": len(index.class_names),
        "class_names": index.class_names,
        "counts": counts,
        "split_sizes": {split: sum(c.values()) for split, c in counts.items()},
        "imbalance_ratio": largest / smallest,
        "class_shares": {index.class_names[k]: n / len(index.records) for k, n in sorted(per_class.items())},
        "width": _spread([i.width for i in infos]),
        "height": _spread([i.height for i in infos]),
        "bytes": _spread([i.bytes for i in infos]),
        "modes": dict(Counter(i.mode for i in infos)),
        "formats": dict(Counter(i.format for i in infos)),
        "size_outliers": size_outliers(infos, outlier_factor),
    }
