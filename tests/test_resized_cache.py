"""Images decoded and resized once: the same pixels as decoding each time, built once per content and size,
and used only when data.resized_cache allows it."""

import logging

import numpy as np
import pytest
import torch
from conftest import make_image_folder

import pipeline.data.resized_cache as resized_cache
from pipeline.context import Context
from pipeline.cpu_share import loader_workers
from pipeline.data.datamodule import ImageDataModule
from pipeline.data.decode import decode_rgb
from pipeline.data.integrity import fingerprint, inspect_files
from pipeline.data.resize import resize_and_crop
from pipeline.data.sources import build_index
from pipeline.data.transforms import Preprocess
from pipeline.stages.train import resized_images

PRE = Preprocess(12, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "bicubic", 0.875)


@pytest.fixture
def folder_index(tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=4, size=20)
    return build_index(root, 0.25, 0.0, 0)


def built(index, tmp_path, pre=PRE):
    paths = [r.path for r in index.records]
    content = [fingerprint(i) for i in inspect_files(paths, None, 1, 10**8)]
    return resized_cache.load_or_build(paths, content, pre, tmp_path / "resized", workers=1)


def test_cached_pixels_are_the_decoded_and_resized_ones(folder_index, tmp_path):
    cache = built(folder_index, tmp_path)
    for record in folder_index.records:
        expected = resize_and_crop(decode_rgb(record.path), 12, "bicubic", 0.875)
        assert np.array_equal(cache.pixels(record.path), expected)


def test_loaders_give_the_same_tensors_with_and_without_the_cache(folder_index, tmp_path):
    cache = built(folder_index, tmp_path)
    plain, cached = (ImageDataModule(folder_index, PRE, [], 4, 0, resized=r) for r in (None, cache))
    a, b = (next(iter(m.eval_dataloader("val")))[0] for m in (plain, cached))
    assert torch.equal(a, b)


def test_the_cache_is_built_once_per_content_and_size(folder_index, tmp_path, monkeypatch):
    first = built(folder_index, tmp_path)
    monkeypatch.setattr(resized_cache, "_decode_resized", lambda *a, **k: pytest.fail("decoded again"))
    assert built(folder_index, tmp_path).path == first.path
    monkeypatch.undo()
    other = built(folder_index, tmp_path, Preprocess(10, PRE.mean, PRE.std))
    assert other.path != first.path and other.pixels(folder_index.records[0].path).shape == (10, 10, 3)


@pytest.mark.parametrize(
    ("mode", "budget_mb", "used"), [("auto", 1, True), ("auto", 0, False), ("never", 1, False)]
)
def test_the_setting_decides_when_the_cache_is_used(
    make_cfg, folder_index, tmp_path, mode, budget_mb, used, caplog
):
    cfg = make_cfg(f"data.resized_cache={mode}")
    cfg.data.resized_cache_mb = budget_mb  # 0 is refused by the config checks; here: a cache too large
    with caplog.at_level(logging.INFO, logger="pipeline"):
        cache = resized_images(cfg, Context(output_dir=tmp_path, index=folder_index), PRE)
    assert (cache is not None) == used
    assert ("above data.resized_cache_mb" in caplog.text) == (mode == "auto" and not used)


def test_with_the_cache_loader_workers_are_at_most_a_quarter_of_the_cores():
    cores = len(__import__("os").sched_getaffinity(0))
    assert loader_workers(8, resized=True) == min(8, cores // 4)
    assert loader_workers(8, resized=False) == 8
