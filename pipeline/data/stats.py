"""Dataset statistics: counts per split and class, image sizes, imbalance, channel mean and std."""

import statistics
from collections import Counter
from typing import Any

import numpy as np
from PIL import Image

from pipeline.data.images import load_rgb
from pipeline.data.sources import DatasetIndex, Record


def image_sizes(records: list[Record]) -> list[tuple[int, int]]:
    """(width, height) of each image, read from the file header without decoding pixels."""
    sizes = []
    for r in records:
        with Image.open(r.path) as img:
            sizes.append(img.size)
    return sizes


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


def dataset_stats(index: DatasetIndex) -> dict[str, Any]:
    counts = index.counts()
    per_class = Counter(r.label for r in index.records)
    largest, smallest = max(per_class.values()), min(per_class.values())
    sizes = image_sizes(index.records)
    widths, heights = [w for w, _ in sizes], [h for _, h in sizes]
    return {
        "num_images": len(index.records),
        "num_classes": len(index.class_names),
        "class_names": index.class_names,
        "counts": counts,
        "split_sizes": {split: sum(c.values()) for split, c in counts.items()},
        "imbalance_ratio": largest / smallest,
        "width": {"min": min(widths), "median": statistics.median(widths), "max": max(widths)},
        "height": {"min": min(heights), "median": statistics.median(heights), "max": max(heights)},
    }
