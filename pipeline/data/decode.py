"""Decoding an image file to RGB pixels, the one way training, validation and prediction all use.

Torch-free (scripts/predict.py imports it). A photo's EXIF orientation is applied, so a phone picture taken
upright is seen upright, as every image viewer shows it, not in its sensor's raw orientation.
"""

import numpy as np
from PIL import Image, ImageOps

from pipeline.errors import PipelineError


def decode_rgb(path: str) -> np.ndarray:
    """Any PIL-readable image (grayscale, palette, RGBA, CMYK, 16-bit, ...) as HxWx3 uint8, upright."""
    with Image.open(path) as img:
        return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))


def decode_checked(path: str) -> np.ndarray:
    """decode_rgb for an image the data stage already read: failing now means the folder changed since."""
    try:
        return decode_rgb(path)
    except OSError as err:  # removed or replaced since the data stage read it (PIL's errors are OSErrors)
        raise PipelineError(
            f"{path} cannot be read any more ({type(err).__name__}): the folder changed after the data stage "
            "checked it; run the pipeline again"
        ) from err


def thumbnail_rgb(path: str, side: int = 160) -> np.ndarray:
    """A small RGB copy for plots: large files are decoded at reduced size (JPEG draft mode)."""
    with Image.open(path) as img:
        img.draft("RGB", (side, side))
        img = ImageOps.exif_transpose(img).convert("RGB")
        img.thumbnail((side, side))
        return np.asarray(img)
