"""Image grids (pipeline.plots): every image drawn whole in its own square, in reading order, at any size."""

import numpy as np
import pytest

from pipeline import plots

COLOURS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240)]


def rendered(fig) -> np.ndarray:
    """The figure as saved: RGB pixels at its own dpi."""
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy()
    plots.close(fig)
    return pixels


def solid(colour, shape=(30, 40)) -> np.ndarray:
    return np.broadcast_to(np.array(colour, np.uint8), (*shape, 3)).copy()


def test_image_grid_draws_each_image_in_reading_order_eight_to_a_row():
    images = [solid(COLOURS[i % len(COLOURS)]) for i in range(10)]
    fig = plots.image_grid(
        images, [f"image {i}\nline two" for i in range(10)], [i == 3 for i in range(10)], "t"
    )
    pixels = rendered(fig)
    cell, gap = plots.CELL_PX, plots.GAP_PX
    band = int(np.ceil(2 * plots.CAPTION_LINE_PX)) + 4
    for i in range(10):
        row, col = divmod(i, 8)
        centre_y = plots.TITLE_PX + row * (band + cell + gap) + band + cell // 2
        centre_x = gap + col * (cell + gap) + cell // 2
        assert tuple(pixels[centre_y, centre_x]) == COLOURS[i % len(COLOURS)], i


def test_image_grid_starts_a_row_for_each_group():
    images = [solid(COLOURS[i]) for i in range(5)]
    groups = ["a", "a", "b", "c", "c"]  # three images explained, two, one and two labels each
    pixels = rendered(plots.image_grid(images, [""] * 5, [False] * 5, "t", groups=groups))
    cell, gap = plots.CELL_PX, plots.GAP_PX
    for i, (row, col) in enumerate([(0, 0), (0, 1), (1, 0), (2, 0), (2, 1)]):
        centre_y = plots.TITLE_PX + row * (cell + gap) + cell // 2
        centre_x = gap + col * (cell + gap) + cell // 2
        assert tuple(pixels[centre_y, centre_x]) == COLOURS[i], i


def test_a_title_wider_than_its_images_widens_the_figure_and_centres_them():
    title = "Grad-CAM, top losses: evidence for the predicted class (val)"
    pixels = rendered(plots.image_grid([solid(COLOURS[0])], ["one"], [False], title))
    assert pixels.shape[1] >= 8.5 * len(title)
    row = pixels[plots.TITLE_PX + int(np.ceil(plots.CAPTION_LINE_PX)) + 4 + plots.CELL_PX // 2]
    coloured = np.flatnonzero((row == COLOURS[0]).all(axis=1))
    assert abs((coloured[0] + coloured[-1]) / 2 - pixels.shape[1] / 2) <= 2


@pytest.mark.parametrize(
    "image, expected",
    [
        (np.zeros((8, 8), np.uint8), (0, 0, 0)),  # a grey scan, enlarged
        (np.ones((600, 300, 3), np.float32), (255, 255, 255)),  # a float image in 0-1, shrunk
        (solid(COLOURS[2], (50, 200)), COLOURS[2]),
    ],
)
def test_fit_into_keeps_the_aspect_ratio_centred_on_white(image, expected):
    square = plots.fit_into(image, 100)
    assert square.shape == (100, 100, 3) and square.dtype == np.uint8
    assert tuple(square[50, 50]) == expected
    h, w = image.shape[:2]
    if h != w:  # the short side's margins stay white
        assert tuple(square[0, 50] if w > h else square[50, 0]) == (255, 255, 255)


def test_sample_grid_names_each_class_above_its_row():
    fig = plots.sample_grid({"cat": [solid(COLOURS[0])] * 3, "dog": [solid(COLOURS[1])] * 2})
    assert [t.get_text() for t in fig.axes[0].texts] == ["cat", "dog"]
    pixels = rendered(fig)
    column = pixels[:, plots.GAP_PX + plots.SAMPLE_CELL_PX // 2]
    rows = [tuple(c) for c in COLOURS[:2] if (column == c).all(axis=1).any()]
    assert rows == COLOURS[:2]
    assert (column == COLOURS[0]).all(axis=1).argmax() < (column == COLOURS[1]).all(axis=1).argmax()
