from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.data.balance import class_weights, resample, weighted_sampler
from pipeline.data.datamodule import ImageDataModule
from pipeline.data.sources import DatasetIndex, Record
from pipeline.data.transforms import Preprocess

LABELS = [0] * 100 + [1] * 10  # a 10:1 set
RECORDS = [Record(f"img{i}.png", label, "train") for i, label in enumerate(LABELS)]


def test_weighted_sampler_draws_classes_near_uniformly_over_an_epoch():
    drawn = Counter(LABELS[i] for i in weighted_sampler(LABELS, seed=0))
    assert sum(drawn.values()) == len(LABELS)
    assert abs(drawn[0] / len(LABELS) - 0.5) < 0.1  # unbalanced it would be 0.91


def test_class_weights_make_each_class_count_equally_in_the_loss():
    weights = torch.tensor(class_weights(LABELS, 2))
    assert weights[1] / weights[0] == pytest.approx(10.0)
    logits = torch.zeros(len(LABELS), 2)
    logits[:, 0] = 2.0  # a model that always favours the majority class
    y = torch.tensor(LABELS)
    plain, weighted = F.cross_entropy(logits, y), F.cross_entropy(logits, y, weight=weights)
    assert weighted > plain  # the minority's errors now weigh as much as the majority's hits
    per_sample = F.cross_entropy(logits, y, reduction="none")
    expected = (per_sample[y == 0].mean() + per_sample[y == 1].mean()) / 2
    assert weighted == pytest.approx(expected.item(), rel=1e-5)


def test_class_weights_leave_absent_classes_at_one():
    assert class_weights([0, 0, 2], 3)[1] == 1.0


@pytest.mark.parametrize("mode, per_class", [("oversample", 100), ("undersample", 10)])
def test_resampling_equalizes_class_counts(mode, per_class):
    out = resample(RECORDS, mode, seed=0)
    assert Counter(r.label for r in out) == {0: per_class, 1: per_class}
    assert set(out) <= set(RECORDS)


def test_datamodule_applies_the_balance_mode(image_folder):
    from pipeline.data.sources import build_index

    index = build_index(image_folder, 0.25, 0.0, 0)
    records = index.split("train")[:9] + [r for r in index.split("train") if r.label == 2][:1]
    skewed = DatasetIndex(index.root, index.class_names, records + index.split("val"))
    pre = Preprocess(8, (0.5,) * 3, (0.5,) * 3)
    sampled = ImageDataModule(skewed, pre, [], 4, 0, balance="weighted_sampler")
    assert isinstance(sampled.train_dataloader().sampler, torch.utils.data.WeightedRandomSampler)
    over = ImageDataModule(skewed, pre, [], 4, 0, balance="oversample")
    counts = Counter(r.label for r in over.train_set.records)
    assert len(set(counts.values())) == 1
    assert np.all(np.isfinite(next(iter(over.train_dataloader()))[0].numpy()))
