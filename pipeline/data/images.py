"""Image decoding and the torch Dataset over index records."""

import numpy as np
import torch
from PIL import Image, ImageOps

from pipeline.data.decode import decode_rgb
from pipeline.data.sources import Record


def thumbnail_rgb(path: str, side: int = 160) -> np.ndarray:
    """A small RGB copy for plots: large files are decoded at reduced size (JPEG draft mode)."""
    with Image.open(path) as img:
        img.draft("RGB", (side, side))
        img = ImageOps.exif_transpose(img).convert("RGB")
        img.thumbnail((side, side))
        return np.asarray(img)


class ImageDataset(torch.utils.data.Dataset):
    def __init__(self, records: list[Record], transform):
        self.records = records
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        record = self.records[i]
        return self.transform(image=decode_rgb(record.path))["image"], record.label
