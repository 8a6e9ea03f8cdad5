"""LightningDataModule over a DatasetIndex: the same loaders for sanity, train and validate."""

from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from pipeline.data.images import ImageDataset
from pipeline.data.sources import DatasetIndex
from pipeline.data.transforms import Preprocess, eval_transform, train_transform


class ImageDataModule(L.LightningDataModule):
    def __init__(
        self,
        index: DatasetIndex,
        preprocess: Preprocess,
        augmentations: list[dict[str, Any]],
        batch_size: int,
        num_workers: int,
    ):
        super().__init__()
        self.index = index
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.train_set = ImageDataset(index.split("train"), train_transform(preprocess, augmentations))
        evaluate = eval_transform(preprocess)
        self.eval_sets = {
            s: ImageDataset(index.split(s), evaluate) for s in ("val", "test") if index.split(s)
        }

    def _loader(self, dataset: ImageDataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.eval_sets["val"], shuffle=False)

    def eval_dataloader(self, split: str) -> DataLoader:
        return self._loader(self.eval_sets[split], shuffle=False)
