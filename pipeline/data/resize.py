"""The one geometric step between a decoded image and a model input, in numpy and OpenCV only.

Training, validation and `scripts/predict.py` (which must not import torch) all call `resize_and_crop`,
so the ONNX model sees exactly the pixels the PyTorch model was validated on.
"""

import math

import cv2
import numpy as np

from pipeline.limits import MAX_PIXELS

# timm's interpolation names -> OpenCV flags
INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "lanczos": cv2.INTER_LANCZOS4,
}


def resized_shape(height: int, width: int, size: int, crop_pct: float | None) -> tuple[int, int]:
    """The (height, width) resize_and_crop resizes a height x width image to, before its crop."""
    if crop_pct is None:
        return size, size
    short = math.floor(size / crop_pct)
    if height <= width:
        return short, max(short, round(width * short / height))
    return max(short, round(height * short / width)), short


def resize_and_crop(rgb: np.ndarray, size: int, interpolation: str, crop_pct: float | None) -> np.ndarray:
    """HxWx3 uint8 -> size x size x 3 uint8.

    crop_pct None: the whole image squeezed to a square (aspect ratio not kept; nothing cut off).
    crop_pct in (0, 1]: timm's eval recipe: the shortest side scaled to floor(size / crop_pct), aspect
    ratio kept, then the central size x size square.
    """
    height, width = rgb.shape[:2]
    target = resized_shape(height, width, size, crop_pct)
    flag = INTERPOLATIONS[interpolation]
    if target[0] * target[1] > MAX_PIXELS:  # a strip (2 x 1,000,000 px): its long side would take gigabytes
        return middle_of_strip(rgb, target, size, flag)
    if target != (height, width):
        rgb = cv2.resize(rgb, (target[1], target[0]), interpolation=flag)
    top, left = (target[0] - size) // 2, (target[1] - size) // 2
    return np.ascontiguousarray(rgb[top : top + size, left : left + size])


def middle_of_strip(rgb: np.ndarray, target: tuple[int, int], size: int, flag: int) -> np.ndarray:
    """The central size x size square of the image resized to `target`, resizing only the source pixels
    under it (and two more on each side for the filter): the whole resize's pixels within a few levels,
    without its gigabytes. Only absurd aspect ratios come here (predict and serve refuse them from the
    header; a training folder may still hold one)."""
    height, width = rgb.shape[:2]
    scales = (target[0] / height, target[1] / width)
    starts = ((target[0] - size) // 2, (target[1] - size) // 2)  # of the crop, in resized pixels
    window = [
        (max(0, math.floor(start / scale) - 2), min(n, math.ceil((start + size) / scale) + 2))
        for start, scale, n in zip(starts, scales, (height, width), strict=True)
    ]
    (y0, y1), (x0, x1) = window
    shape = [max(size, round((b - a) * scale)) for (a, b), scale in zip(window, scales, strict=True)]
    resized = cv2.resize(rgb[y0:y1, x0:x1], (shape[1], shape[0]), interpolation=flag)
    top, left = (
        min(round(start - a * scale), n - size)
        for start, (a, _), scale, n in zip(starts, window, scales, shape, strict=True)
    )
    return np.ascontiguousarray(resized[top : top + size, left : left + size])
