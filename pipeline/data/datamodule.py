"""LightningDataModule over a DatasetIndex: the same loaders for sanity, train and validate."""

import random
from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from pipeline.cpu_share import worker_context
from pipeline.data.balance import resample, weighted_sampler
from pipeline.data.images import ImageDataset
from pipeline.data.resized_cache import CACHED_SPLITS, ResizedImages
from pipeline.data.sources import DatasetIndex
from pipeline.data.transforms import Preprocess, eval_transform, train_transform
from pipeline.signals import ignore_sigterm
from pipeline.tasks import MULTILABEL


def image_loader(dataset, batch_size: int, num_workers: int, **options) -> DataLoader:
    """A DataLoader whose workers start the platform's way (pipeline.cpu_share.worker_context) and leave
    SIGTERM to the main process, which stops them."""
    if num_workers > 0:
        options.update(multiprocessing_context=worker_context(), worker_init_fn=ignore_sigterm)
    return DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, **options)


class ImageDataModule(L.LightningDataModule):
    def __init__(
        self,
        index: DatasetIndex,
        preprocess: Preprocess,
        augmentations: list[dict[str, Any]],
        batch_size: int,
        num_workers: int,
        balance: str = "none",
        seed: int = 0,
        resized: ResizedImages | None = None,
    ):
        super().__init__()
        self.index = index
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.balance = balance
        self.seed = seed
        train = index.split("train")
        if balance in ("oversample", "undersample"):
            train = resample(train, balance, seed)
        self.preprocess, self.resized = preprocess, resized
        self.num_labels = len(index.class_names) if index.task == MULTILABEL else None  # multi-hot targets
        cached = resized is not None
        transform = train_transform(preprocess, augmentations, cached)
        self.train_set = ImageDataset(train, transform, resized, self.num_labels)
        self.eval_sets = {s: self._eval_set(index.split(s), s) for s in ("val", "test") if index.split(s)}

    def _eval_set(self, records: list, split: str) -> ImageDataset:
        """Eval transform over `records` of `split`: read from the resized cache when it holds the split."""
        if self.resized is not None and split in CACHED_SPLITS:
            transform = eval_transform(self.preprocess, resized=True)
            return ImageDataset(records, transform, self.resized, self.num_labels)
        return ImageDataset(records, eval_transform(self.preprocess), num_labels=self.num_labels)

    def _loader(
        self, dataset: ImageDataset, shuffle: bool, sampler=None, drop_last=False, persistent=False
    ) -> DataLoader:
        """persistent: workers that outlive a pass, for loaders Lightning's loops iterate each epoch and shut
        down when fitting ends; a one-pass loader's workers stop as its pass ends."""
        return image_loader(
            dataset,
            self.batch_size,
            self.num_workers,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            drop_last=drop_last,
            persistent_workers=persistent and self.num_workers > 0,
            pin_memory=self.feeds_cuda(),
        )

    def feeds_cuda(self) -> bool:
        """Batches go to a CUDA device (page-locked memory copies to it faster): training on one."""
        return self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"

    def train_dataloader(self) -> DataLoader:
        sampler = None
        if self.balance == "weighted_sampler":
            sampler = weighted_sampler([r.label for r in self.train_set.records], self.seed)
        # a last batch of one breaks batch norm on 1x1 feature maps; drop the remainder when it can be spared,
        # judged by each DDP rank's share (Lightning's sampler splits the set), or a rank could get no batch
        ranks = self.trainer.world_size if self.trainer is not None else 1
        drop_last = len(self.train_set) // ranks > self.batch_size
        return self._loader(self.train_set, True, sampler, drop_last, persistent=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.eval_sets["val"], shuffle=False, persistent=True)

    def eval_dataloader(self, split: str) -> DataLoader:
        return self._loader(self.eval_sets[split], shuffle=False)

    def sample_dataloader(self, split: str, count: int, seed: int) -> DataLoader:
        """Up to `count` images of `split` drawn with `seed`, eval transform (INT8 calibration)."""
        records = self.index.split(split)
        chosen = random.Random(seed).sample(records, min(count, len(records)))
        return self._loader(self._eval_set(chosen, split), shuffle=False)
