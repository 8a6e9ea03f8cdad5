"""The torch Dataset over index records."""

import torch

from pipeline.data.decode import decode_checked
from pipeline.data.resized_cache import ResizedImages
from pipeline.data.sources import Record


class ImageDataset(torch.utils.data.Dataset):
    """Records through a transform; with `resized`, images come decoded and resized from that cache (and the
    transform must then start after the resize step)."""

    def __init__(
        self,
        records: list[Record],
        transform,
        resized: ResizedImages | None = None,
        num_labels: int | None = None,
    ):
        self.records = records
        self.transform = transform
        self.resized = resized
        self.num_labels = num_labels  # several labels an image: targets are rows of 0/1 this long

    def __len__(self) -> int:
        return len(self.records)

    def target(self, record: Record) -> int | torch.Tensor:
        if self.num_labels is None:
            return record.label
        shown = torch.zeros(self.num_labels)
        shown[list(record.labels)] = 1.0
        return shown

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int | torch.Tensor]:
        record = self.records[i]
        if self.resized is not None:
            return self.transform(image=self.resized.pixels(record.path))["image"], self.target(record)
        return self.transform(image=decode_checked(record.path))["image"], self.target(record)
