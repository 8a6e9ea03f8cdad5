"""Decoding an image file to RGB pixels, the one way training, validation and prediction all use.

Torch-free (scripts/predict.py imports it). A photo's EXIF orientation is applied, so a phone picture taken
upright is seen upright, as every image viewer shows it, not in its sensor's raw orientation.
"""

import warnings
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageOps

from pipeline.errors import PipelineError


class TooManyPixels(ValueError):
    """An image whose header declares more pixels than the caller allows; nothing of it was decoded."""


def decode_rgb(
    source, max_pixels: int | None = None, resized: Callable[[int, int], tuple[int, int]] | None = None
) -> np.ndarray:
    """Any PIL-readable image (grayscale, palette, RGBA, CMYK, 16-bit, ...) as HxWx3 uint8, upright. With
    max_pixels, a larger image is refused from its header, before any pixel is decoded; `resized` (height,
    width -> the caller's resized height, width) counts the pixels a resize will allocate too: a 2 x 1,000,000
    strip is small on disk and huge once its short side is scaled up."""
    with Image.open(source) as img:
        if max_pixels is not None:
            refuse_above(max_pixels, img.height, img.width, resized)
        return np.asarray(upright(img).convert("RGB"))


def refuse_above(max_pixels: int, height: int, width: int, resized) -> None:
    pixels = width * height
    if pixels > max_pixels:
        raise TooManyPixels(f"{width}x{height} = {pixels:,} pixels, above the cap of {max_pixels:,}")
    if resized is not None:
        new_height, new_width = resized(height, width)
        if new_height * new_width > max_pixels:
            raise TooManyPixels(
                f"{width}x{height} resizes to {new_width}x{new_height} = {new_width * new_height:,} pixels, "
                f"above the cap of {max_pixels:,}"
            )


def upright(img: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says. A corrupt EXIF block (Pillow raises struct.error,
    ValueError, ... while rewriting it) leaves the image as stored: its pixels are still good."""
    try:
        with warnings.catch_warnings():  # Pillow's "Corrupt EXIF data" warnings: the block is dropped below
            warnings.simplefilter("ignore", UserWarning)
            return ImageOps.exif_transpose(img)
    except Exception:  # Pillow raises many types for a bad EXIF block; none says the pixels are bad
        return img


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
        img = upright(img).convert("RGB")
        img.thumbnail((side, side))
        return np.asarray(img)
