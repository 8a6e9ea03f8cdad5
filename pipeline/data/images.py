"""The torch Dataset over index records."""

import torch

from pipeline.data.decode import decode_rgb
from pipeline.data.sources import Record
from pipeline.errors import PipelineError


class ImageDataset(torch.utils.data.Dataset):
    def __init__(self, records: list[Record], transform):
        self.records = records
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        record = self.records[i]
        try:
            pixels = decode_rgb(record.path)
        except OSError as err:  # removed or replaced since the data stage read it (PIL's errors are OSErrors)
            raise PipelineError(
                f"{record.path} cannot be read any more ({type(err).__name__}): the folder changed after the "
                "data stage checked it; run the pipeline again"
            ) from err
        return self.transform(image=pixels)["image"], record.label
