"""The torch Dataset over index records."""

import torch

from pipeline.data.decode import decode_rgb
from pipeline.data.resized_cache import ResizedImages
from pipeline.data.sources import Record
from pipeline.errors import PipelineError


class ImageDataset(torch.utils.data.Dataset):
    """Records through a transform; with `resized`, images come decoded and resized from that cache (and the
    transform must then start after the resize step)."""

    def __init__(self, records: list[Record], transform, resized: ResizedImages | None = None):
        self.records = records
        self.transform = transform
        self.resized = resized

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        record = self.records[i]
        if self.resized is not None:
            return self.transform(image=self.resized.pixels(record.path))["image"], record.label
        try:
            pixels = decode_rgb(record.path)
        except OSError as err:  # removed or replaced since the data stage read it (PIL's errors are OSErrors)
            raise PipelineError(
                f"{record.path} cannot be read any more ({type(err).__name__}): the folder changed after the "
                "data stage checked it; run the pipeline again"
            ) from err
        return self.transform(image=pixels)["image"], record.label
