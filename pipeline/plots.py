"""Figures logged as PNG artifacts. Matplotlib without a display."""

import itertools

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

LEGEND_CLASSES = 12  # more classes than this: only the averages are named in curve legends
DPI = 100  # figures are saved at their own dpi (mlflow.log_figure), so a mosaic's pixels are the PNG's
CELL_PX, GAP_PX, TITLE_PX = 160, 12, 36  # one image's square, the space between squares, the title's band
SAMPLE_CELL_PX = 120  # sample grids show many images of every class: smaller squares
CAPTION_PT = 7
CAPTION_LINE_PX = CAPTION_PT * 1.3 * DPI / 72


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
    """One row per class, a few example images each, the class named above its row."""
    rows = [
        [(image, name if c == 0 else "", "black") for c, image in enumerate(images)]
        for name, images in images_per_class.items()
    ]
    return _mosaic(rows, title=None, caption_align="left", cell=SAMPLE_CELL_PX)


def confusion_matrix(
    values: np.ndarray, shares: np.ndarray, class_names: list[str], title: str, axes=("predicted", "true")
) -> Figure:
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
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
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


def image_grid(
    images: list[np.ndarray], captions: list[str], flagged: list[bool], title: str, groups: list | None = None
) -> Figure:
    """Images with a caption each, flagged ones captioned in red (e.g. wrong predictions), 8 a row; with
    `groups`, a key per image, each run of one key starts a row of its own."""
    cells = [(i, c, "red" if f else "black") for i, c, f in zip(images, captions, flagged, strict=True)]
    keyed = zip(cells, groups or [0] * len(cells), strict=True)
    runs = [[cell for cell, _ in run] for _, run in itertools.groupby(keyed, key=lambda pair: pair[1])]
    rows = [run[r : r + 8] for run in runs for r in range(0, len(run), 8)]
    return _mosaic(rows, title, caption_align="center")


def fit_into(image: np.ndarray, side: int) -> np.ndarray:
    """`image` (uint8, or float in 0-1; grey or RGB) scaled to fit a side x side square, centred on white:
    area-averaged when shrinking, pixels kept sharp when enlarging (small scans stay legible)."""
    if image.dtype != np.uint8:
        image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    h, w = image.shape[:2]
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST
    image = cv2.resize(np.ascontiguousarray(image[:, :, :3]), size, interpolation=interpolation)
    square = np.full((side, side, 3), 255, np.uint8)
    top, left = (side - size[1]) // 2, (side - size[0]) // 2
    square[top : top + size[1], left : left + size[0]] = image
    return square


def _mosaic(
    rows: list[list[tuple[np.ndarray, str, str]]], title: str | None, caption_align: str, cell: int = CELL_PX
) -> Figure:
    """(image, caption, colour) cells drawn as one picture, captions above the images: one axes and one
    image, not an axes per cell, which is tens of times slower to build and save (docs/design.md)."""
    lines = max((c.count("\n") + 1 for row in rows for _, c, _ in row if c), default=0)
    band = int(np.ceil(lines * CAPTION_LINE_PX)) + (4 if lines else 0)
    cols = max(len(row) for row in rows)
    top = TITLE_PX if title else GAP_PX
    cells_width = cols * (cell + GAP_PX) + GAP_PX
    width = max(cells_width, int(8.5 * len(title or "")))  # a grid of one or two images shows its whole title
    height = top + len(rows) * (band + cell + GAP_PX)
    canvas = np.full((height, width, 3), 255, np.uint8)
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    for r, row in enumerate(rows):
        y = top + r * (band + cell + GAP_PX) + band
        for c, (image, caption, colour) in enumerate(row):
            x = (width - cells_width) // 2 + GAP_PX + c * (cell + GAP_PX)
            canvas[y : y + cell, x : x + cell] = fit_into(image, cell)
            if caption:
                at = x + cell / 2 if caption_align == "center" else x
                ax.text(at, y - 2, caption, ha=caption_align, va="bottom", fontsize=CAPTION_PT, color=colour)
    ax.imshow(canvas, interpolation="nearest")
    if title:
        ax.text(width / 2, TITLE_PX / 2, title, ha="center", va="center", fontsize=12)
    return fig


def close(fig: Figure) -> None:
    plt.close(fig)
