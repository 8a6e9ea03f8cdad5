"""Decoding an image file to RGB pixels, the one way training, validation and prediction all use.

Torch-free (scripts/predict.py imports it). A photo's EXIF orientation is applied, so a phone picture taken
upright is seen upright, as every image viewer shows it, not in its sensor's raw orientation.
"""

import numpy as np
from PIL import Image, ImageOps

from pipeline.errors import PipelineError

# data.max_pixels' default; export writes the run's cap into the model, where predict and serve read it. The
# largest common camera sensors (~61 MP) pass; a 250 KB PNG can declare 144 megapixels (0.4 GB decoded).
MAX_PIXELS = 64_000_000


class TooManyPixels(ValueError):
    """An image whose header declares more pixels than the caller allows; nothing of it was decoded."""


def decode_rgb(source, max_pixels: int | None = None) -> np.ndarray:
    """Any PIL-readable image (grayscale, palette, RGBA, CMYK, 16-bit, ...) as HxWx3 uint8, upright. With
    max_pixels, a larger image is refused from its header, before any pixel is decoded."""
    with Image.open(source) as img:
        pixels = img.width * img.height
        if max_pixels is not None and pixels > max_pixels:
            raise TooManyPixels(
                f"{img.width}x{img.height} = {pixels:,} pixels, above the cap of {max_pixels:,}"
            )
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
