"""Decoding an image file to RGB pixels, the one way training, validation and prediction all use.

Torch-free (scripts/predict.py imports it). A photo's EXIF orientation is applied, so a phone picture taken
upright is seen upright, as every image viewer shows it, not in its sensor's raw orientation.
"""

import numpy as np
from PIL import Image, ImageOps


def decode_rgb(path: str) -> np.ndarray:
    """Any PIL-readable image (grayscale, palette, RGBA, CMYK, 16-bit, ...) as HxWx3 uint8, upright."""
    with Image.open(path) as img:
        return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))


def thumbnail_rgb(path: str, side: int = 160) -> np.ndarray:
    """A small RGB copy for plots: large files are decoded at reduced size (JPEG draft mode)."""
    with Image.open(path) as img:
        img.draft("RGB", (side, side))
        img = ImageOps.exif_transpose(img).convert("RGB")
        img.thumbnail((side, side))
        return np.asarray(img)
