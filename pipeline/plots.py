"""Figures logged as PNG artifacts. Matplotlib without a display."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def class_distribution(counts: dict[str, dict[str, int]]) -> Figure:
    """Grouped bars: images per class, one bar colour per split."""
    class_names = list(next(iter(counts.values())))
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(class_names) * len(counts)), 4))
    width = 0.8 / len(counts)
    x = np.arange(len(class_names))
    for i, (split, per_class) in enumerate(counts.items()):
        ax.bar(x + i * width, [per_class[c] for c in class_names], width, label=split)
    ax.set_xticks(x + width * (len(counts) - 1) / 2, class_names, rotation=45 if len(class_names) > 10 else 0)
    ax.set_ylabel("images")
    ax.set_title("Images per class and split")
    ax.legend()
    fig.tight_layout()
    return fig


def image_sizes(widths: list[int], heights: list[int]) -> Figure:
    """Histograms of image width and height (log-scaled counts, so rare outliers stay visible)."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, values, name in zip(axes, (widths, heights), ("width", "height"), strict=True):
        ax.hist(values, bins=30, log=True)
        ax.set_xlabel(f"{name} (px)")
        ax.set_ylabel("images")
    fig.suptitle("Image sizes")
    fig.tight_layout()
    return fig


def sample_grid(images_per_class: dict[str, list[np.ndarray]]) -> Figure:
    """One row per class, a few example images each."""
    rows = len(images_per_class)
    cols = max(len(v) for v in images_per_class.values())
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols + 1, 1.3 * rows), squeeze=False)
    for r, (name, images) in enumerate(images_per_class.items()):
        for c in range(cols):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(images):
                ax.imshow(images[c])
        axes[r, 0].set_title(name, loc="left", fontsize=8)
    fig.tight_layout()
    return fig


def confusion_matrix(matrix: np.ndarray, class_names: list[str], title: str) -> Figure:
    """Counts, with each cell coloured by its share of the true class (row-normalized)."""
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * n + 2), max(4, 0.6 * n + 1)))
    row_sums = matrix.sum(1, keepdims=True).clip(min=1)
    ax.imshow(matrix / row_sums, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            share = matrix[i, j] / row_sums[i, 0]
            ax.text(
                j, i, int(matrix[i, j]), ha="center", va="center", color="white" if share > 0.5 else "black"
            )
    ax.set_xticks(range(n), class_names, rotation=45 if n > 10 else 0)
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def close(fig: Figure) -> None:
    plt.close(fig)
