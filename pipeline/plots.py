"""Figures logged as PNG artifacts. Matplotlib without a display."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

LEGEND_CLASSES = 12  # more classes than this: only the averages are named in curve legends


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
        ax.hist(np.asarray(values), bins=30, log=True)  # an array: matplotlib walks a list item by item
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


def confusion_matrix(values: np.ndarray, shares: np.ndarray, class_names: list[str], title: str) -> Figure:
    """Cells print `values` (counts, or the row shares themselves) and are coloured by their share of the
    true class (row-normalized), so a rare class's errors show as strongly as a common one's. Hand-drawn:
    sklearn's ConfusionMatrixDisplay and torchmetrics' plot colour each cell by the number it prints."""
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * n + 2), max(4, 0.6 * n + 1)))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    integer = np.issubdtype(values.dtype, np.integer)
    for i in range(n):
        for j in range(n):
            text = str(values[i, j]) if integer else f"{values[i, j]:.2f}"
            colour = "white" if shares[i, j] > 0.5 else "black"
            ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=8 if n > 10 else 10)
    ax.set_xticks(range(n), class_names, rotation=45 if n > 10 else 0)
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def curves(
    classes: dict[str, tuple[np.ndarray, np.ndarray]],
    averages: dict[str, tuple[np.ndarray, np.ndarray]],
    title: str,
    axis_labels: tuple[str, str],
    diagonal: bool = False,
) -> Figure:
    """Thin line per class, thick line per average; classes join the legend only while it stays legible.
    Hand-drawn from torchmetrics' curves: RocCurveDisplay draws one curve a call and no macro average."""
    fig, ax = plt.subplots(figsize=(6, 5))
    for label, (x, y) in classes.items():
        ax.plot(x, y, linewidth=1, alpha=0.8, label=label if len(classes) <= LEGEND_CLASSES else None)
    for label, (x, y) in averages.items():
        ax.plot(x, y, linewidth=2.5, label=label)
    if diagonal:
        ax.plot([0, 1], [0, 1], "k:", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right" if diagonal else "lower left")
    fig.tight_layout()
    return fig


def image_grid(images: list[np.ndarray], captions: list[str], flagged: list[bool], title: str) -> Figure:
    """Images with a caption each, flagged ones captioned in red (e.g. wrong predictions)."""
    cols = min(len(images), 8)
    rows = max(1, -(-len(images) // cols))
    width = max(1.8 * cols, 0.085 * len(title))  # a grid of one or two images still shows its whole title
    fig, axes = plt.subplots(rows, cols, figsize=(width, 2.1 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption, flag in zip(axes.flat, images, captions, flagged, strict=False):
        ax.imshow(image)
        ax.set_title(caption, fontsize=7, color="red" if flag else "black")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def close(fig: Figure) -> None:
    plt.close(fig)
