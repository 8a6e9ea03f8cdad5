"""The torch Dataset over index records."""

import torch

from pipeline.data.decode import decode_rgb
from pipeline.data.sources import Record


class ImageDataset(torch.utils.data.Dataset):
    def __init__(self, records: list[Record], transform):
        self.records = records
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        record = self.records[i]
        return self.transform(image=decode_rgb(record.path))["image"], record.label
