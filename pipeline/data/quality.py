"""Image quality: too dark, too bright, blurry, low information, odd aspect ratio.

Measured on a grey thumbnail during the decode the integrity check already does (CleanVision would decode
every image a second time and needs an AGPL package in the data path). Each measure is a number with a
threshold in the config (`audit.*`), chosen on real photos, the built-in digits and planted bad images
(docs/design.md has the values seen):
- dark: the 99th luminance percentile (its brightest parts) below 0.2;
- bright: the 1st percentile (its darkest parts) above 0.9;
- blurry: edge strength below 0.5: the standard deviation of PIL's edge filter on a 64 px thumbnail over
  that of the thumbnail itself (so a dark or faint image is not called blurry);
- low information: the grey-level entropy below 1 bit (of 8);
- odd aspect ratio: the long side over the short side above 3.
"""

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

LUMINANCE_SIDE = 256  # thumbnail for the luminance percentiles and the entropy: bounded cost at any size
EDGE_SIDE = 64  # thumbnail for the edge filter: blur judged at one scale whatever the file's resolution


@dataclass(frozen=True)
class Thresholds:
    dark: float
    bright: float
    blurry: float
    low_information: float
    odd_aspect_ratio: float


def measure(img: Image.Image) -> dict[str, float]:
    """The numbers the quality issues are judged by, from one decoded image."""
    grey = img.convert("L")
    thumb = grey.copy()
    thumb.thumbnail((LUMINANCE_SIDE, LUMINANCE_SIDE))
    cumulative = np.cumsum(thumb.histogram()) / (thumb.width * thumb.height)
    small = grey.copy()
    small.thumbnail((EDGE_SIDE, EDGE_SIDE))
    edges = np.asarray(small.filter(ImageFilter.FIND_EDGES), dtype=np.float64)[1:-1, 1:-1]
    contrast = np.asarray(small, dtype=np.float64).std()
    return {
        "luminance_p01": round(float(np.searchsorted(cumulative, 0.01)) / 255.0, 4),
        "luminance_p99": round(float(np.searchsorted(cumulative, 0.99)) / 255.0, 4),
        "sharpness": round(float(edges.std() / contrast) if edges.size and contrast > 2.5 else 0.0, 4),
        "entropy": round(float(thumb.entropy()), 4) + 0.0,  # + 0.0: a flat image's -0.0 printed as 0.0
    }


def quality_issues(measures: dict[str, float], width: int, height: int, limits: Thresholds) -> list[tuple]:
    """(issue, score) for each threshold the image crosses; the score is the measure itself."""
    aspect = max(width, height) / max(1, min(width, height))
    checks = [
        ("dark", measures["luminance_p99"], measures["luminance_p99"] < limits.dark),
        ("bright", measures["luminance_p01"], measures["luminance_p01"] > limits.bright),
        ("blurry", measures["sharpness"], measures["sharpness"] < limits.blurry),
        ("low_information", measures["entropy"], measures["entropy"] < limits.low_information),
        ("odd_aspect_ratio", round(aspect, 3), aspect > limits.odd_aspect_ratio),
    ]
    return [(issue, score) for issue, score, crossed in checks if crossed]
