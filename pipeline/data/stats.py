"""Dataset statistics: counts per split and class, sizes, modes, formats, imbalance, channel mean/std."""

import statistics
from collections import Counter
from typing import Any

import numpy as np

from pipeline.data.images import load_rgb
from pipeline.data.integrity import FileInfo
from pipeline.data.sources import DatasetIndex, Record


def channel_mean_std(records: list[Record], max_images: int = 5000, seed: int = 0) -> tuple[tuple, tuple]:
    """Per-channel mean and std in [0, 1] over (a seeded sample of) the given images."""
    rng = np.random.default_rng(seed)
    chosen = records if len(records) <= max_images else rng.choice(records, max_images, replace=False)
    total = np.zeros(3)
    total_sq = np.zeros(3)
    pixels = 0
    for r in chosen:
        x = load_rgb(r.path).reshape(-1, 3).astype(np.float64) / 255.0
        total += x.sum(0)
        total_sq += (x**2).sum(0)
        pixels += len(x)
    mean = total / pixels
    std = np.sqrt(np.maximum(total_sq / pixels - mean**2, 1e-12))
    return tuple(mean.round(6).tolist()), tuple(std.round(6).tolist())


def _spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def dataset_stats(index: DatasetIndex, infos: list[FileInfo]) -> dict[str, Any]:
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
    }
