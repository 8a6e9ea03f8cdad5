import logging

import numpy as np
from PIL import Image

from pipeline.data.integrity import inspect_files
from pipeline.data.sources import build_index
from pipeline.data.stats import channel_mean_std, dataset_stats
from pipeline.limits import MAX_PIXELS
from pipeline.stages.data import warn_unscored_classes


def test_channel_mean_std_on_known_pixels(tmp_path):
    for name, value in (("a", 0), ("b", 255)):
        (tmp_path / name).mkdir()
        for i in range(2):
            Image.fromarray(np.full((4, 4, 3), value, dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    index = build_index(tmp_path, 0.5, 0.0, 0)
    mean, std = channel_mean_std(inspect_files([r.path for r in index.records], None, 1, MAX_PIXELS))
    assert np.allclose(mean, 0.5) and np.allclose(std, 0.5)


def test_dataset_stats_counts_sizes_and_imbalance(tmp_path):
    sizes = {"big": [(10, 20)] * 6, "small": [(30, 40)] * 2}
    for name, shapes in sizes.items():
        (tmp_path / name).mkdir()
        for i, (w, h) in enumerate(shapes):
            Image.new("RGB", (w, h)).save(tmp_path / name / f"{i}.png")
    index = build_index(tmp_path, 0.5, 0.0, 0)
    stats = dataset_stats(index, inspect_files([r.path for r in index.records], None, 1, MAX_PIXELS))
    assert stats["num_images"] == 8 and stats["num_classes"] == 2
    assert stats["imbalance_ratio"] == 3.0
    assert stats["width"] == {"min": 10, "median": 10.0, "max": 30}
    assert sum(stats["split_sizes"].values()) == 8
    assert stats["modes"] == {"RGB": 8} and stats["formats"] == {"PNG": 8}
    assert stats["class_shares"] == {"big": 0.75, "small": 0.25}
    # 30x40 has 6x the median area (10x20): beyond the default factor of 4
    assert sorted(o["path"].split("/")[-2] for o in stats["size_outliers"]) == ["small", "small"]


def test_size_outliers_are_flagged(tmp_path):
    from pipeline.data.integrity import FileInfo
    from pipeline.data.stats import size_outliers

    infos = [FileInfo(f"{i}.jpg", True, width=100, height=100) for i in range(9)]
    infos.append(FileInfo("big.jpg", True, width=3024, height=3024))
    assert [o["path"] for o in size_outliers(infos, factor=4.0)] == ["big.jpg"]


def test_a_class_without_val_or_test_images_is_said(caplog):
    stats = {"class_names": ["a", "b"], "counts": {"train": {"a": 5, "b": 1}, "val": {"a": 2, "b": 0}}}
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        warn_unscored_classes(stats)
    assert [r.getMessage() for r in caplog.records] == [
        "no val images of 1 class(es) (b): the val scores leave them out; add images to them"
    ]
