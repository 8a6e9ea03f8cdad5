import multiprocessing
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image_folder
from PIL import Image

from pipeline.data.integrity import (
    InspectionCache,
    apply_policies,
    find_problems,
    inspect_file,
    inspect_files,
)
from pipeline.data.sources import build_index
from pipeline.errors import PipelineError
from pipeline.limits import MAX_PIXELS


def test_decoding_finds_zero_byte_truncated_and_fake_images(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(good)
    jpeg = tmp_path / "photo.jpg"
    Image.open(good).save(jpeg, quality=95)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "truncated.jpg").write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    (tmp_path / "fake.png").write_text("this is not an image")
    results = {p.name: inspect_file(str(p), MAX_PIXELS) for p in sorted(tmp_path.iterdir())}
    assert results["good.png"].ok and results["good.png"].width == 32 and results["good.png"].mode == "RGB"
    assert results["photo.jpg"].ok and results["photo.jpg"].format == "JPEG"
    assert results["empty.png"].error == "zero-byte file"
    assert not results["truncated.jpg"].ok and "truncated" in results["truncated.jpg"].error
    assert not results["fake.png"].ok


def test_inspection_is_cached_by_size_and_mtime(tmp_path, monkeypatch):
    folder = make_image_folder(tmp_path / "d", per_class=2)
    paths = sorted(str(p) for p in folder.rglob("*.png"))
    cache = tmp_path / "cache.json"
    first = inspect_files(paths, cache, 1, MAX_PIXELS)
    calls = []
    monkeypatch.setattr("pipeline.data.integrity.inspect_file", lambda p, max_pixels: calls.append(p))
    assert inspect_files(paths, cache, 1, MAX_PIXELS) == first and calls == []
    Image.new("RGB", (9, 9)).save(paths[0])  # changed file: decoded again
    monkeypatch.undo()
    again = inspect_files(paths, cache, 1, MAX_PIXELS)
    assert again[0].width == 9 and again[1:] == first[1:]


def test_worker_processes_give_the_same_answers(tmp_path):
    folder = make_image_folder(tmp_path / "d", per_class=30)
    paths = sorted(str(p) for p in folder.rglob("*.png"))
    assert inspect_files(paths, None, 2, MAX_PIXELS) == inspect_files(paths, None, 1, MAX_PIXELS)


@pytest.fixture
def leaky_folder(tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=6, splits=("train", "val"))
    # exact copy across splits, near copy (re-encoded, slightly brighter) across splits, label conflict
    shutil.copy(root / "train/checker/000.png", root / "val/checker/copy.png")
    near = np.asarray(Image.open(root / "train/stripes_h/001.png")).astype(int) + 3
    Image.fromarray(np.clip(near, 0, 255).astype(np.uint8)).save(root / "val/stripes_h/near.png")
    shutil.copy(root / "train/stripes_v/002.png", root / "train/checker/mislabeled.png")
    (root / "train/checker/broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return root


def findings_for(root):
    index = build_index(root, 0.2, 0.0, 0, holdout="none")  # the val folder as val, as given
    infos = inspect_files([r.path for r in index.records], None, 1, MAX_PIXELS)
    return index, find_problems(index.records, infos, index.class_names, max_distance=2)


def test_duplicates_leakage_and_label_conflicts_are_found(leaky_folder):
    _, findings = findings_for(leaky_folder)
    assert [c["path"].endswith("broken.png") for c in findings.corrupt] == [True]
    exact = {(p["a"].split("d/")[1], p["b"].split("d/")[1]) for p in findings.exact_duplicates}
    assert exact == {
        ("train/checker/000.png", "val/checker/copy.png"),
        ("train/checker/mislabeled.png", "train/stripes_v/002.png"),
    }
    assert any(p["b"].endswith("val/stripes_h/near.png") for p in findings.near_duplicates)
    leak_ends = {p["b"].rsplit("/", 1)[1] for p in findings.leakage}
    assert {"copy.png", "near.png"} <= leak_ends
    assert [(p["a_label"], p["b_label"]) for p in findings.label_conflicts] == [("checker", "stripes_v")]


def test_policies_skip_fail_and_drop(leaky_folder):
    index, findings = findings_for(leaky_folder)
    with pytest.raises(PipelineError, match="unreadable"):
        apply_policies(index, findings, "fail", "warn")
    with pytest.raises(PipelineError, match="across splits"):
        apply_policies(index, findings, "skip", "fail")
    warned = apply_policies(index, findings, "skip", "warn")
    assert len(warned.records) == len(index.records) - 1
    dropped = apply_policies(index, findings, "skip", "drop")
    gone = {r.path for r in index.records} - {r.path for r in dropped.records}
    assert {p.rsplit("/", 1)[1] for p in gone} >= {"broken.png", "copy.png", "near.png"}
    assert all(r.split == "val" or r.path.endswith("broken.png") for r in index.records if r.path in gone)


def test_skipping_every_training_image_of_a_class_is_an_error(tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=2, splits=("train", "val"))
    for f in (root / "train" / "checker").iterdir():
        f.write_bytes(b"")
    index, findings = findings_for(root)
    with pytest.raises(PipelineError, match="classes without training images: checker"):
        apply_policies(index, findings, "skip", "warn")


def _inspect_and_cache(path: Path, folder: Path) -> None:
    inspect_files(sorted(str(p) for p in folder.rglob("*.png")), path, 1, MAX_PIXELS)


def test_parallel_runs_can_share_one_inspection_cache_and_keep_every_row(tmp_path):
    path = tmp_path / "cache" / "inspection.sqlite"
    folders = [make_image_folder(tmp_path / f"d{i}", per_class=20, seed=i) for i in range(3)]
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_inspect_and_cache, args=(path, f)) for f in folders]
    for w in writers:
        w.start()
    for w in writers:
        w.join(timeout=60)
    assert [w.exitcode for w in writers] == [0, 0, 0]
    written = [str(p) for f in folders for p in f.rglob("*.png")]
    assert len(InspectionCache(path).lookup(written)) == len(written) == 180


def test_an_interrupted_inspection_keeps_what_it_decoded(tmp_path, monkeypatch):
    folder = make_image_folder(tmp_path / "d", per_class=4)
    paths = sorted(str(p) for p in folder.rglob("*.png"))
    real, seen = inspect_file, []

    def stop_at_the_fifth(path, max_pixels):
        if len(seen) == 4:
            raise KeyboardInterrupt
        seen.append(path)
        return real(path, max_pixels)

    monkeypatch.setattr("pipeline.data.integrity.inspect_file", stop_at_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        inspect_files(paths, tmp_path / "cache.sqlite", 1, MAX_PIXELS)
    assert sorted(InspectionCache(tmp_path / "cache.sqlite").lookup(paths)) == seen


def test_a_damaged_cache_is_started_afresh(tmp_path):
    path = tmp_path / "cache.sqlite"
    path.write_bytes(b"not a database" * 100)
    folder = make_image_folder(tmp_path / "d", per_class=1)
    paths = sorted(str(p) for p in folder.rglob("*.png"))
    assert all(i.ok for i in inspect_files(paths, path, 1, MAX_PIXELS))
    assert set(InspectionCache(path).lookup(paths)) == set(paths)


def test_a_large_jpeg_is_inspected_at_reduced_scale_with_its_full_size_and_colours(tmp_path):
    rng = np.random.default_rng(0)
    pixels = np.asarray(
        Image.fromarray((rng.random((60, 90, 3)) * 255).astype(np.uint8)).resize((3000, 2000))
    )
    Image.fromarray(pixels).save(tmp_path / "large.jpg", quality=95)
    info = inspect_file(str(tmp_path / "large.jpg"), MAX_PIXELS)
    assert info.ok and (info.width, info.height) == (3000, 2000)
    full = np.asarray(Image.open(tmp_path / "large.jpg").convert("RGB"), dtype=np.float64) / 255
    assert np.allclose(info.rgb_mean, full.reshape(-1, 3).mean(0), atol=0.01)


def test_an_image_above_the_pixel_cap_is_unreadable_with_the_reason_and_never_cached(tmp_path):
    Image.new("RGB", (200, 100)).save(tmp_path / "wide.png")
    cache = tmp_path / "cache.json"
    (info,) = inspect_files([str(tmp_path / "wide.png")], cache, 1, max_pixels=19_999)
    assert not info.ok and info.error == "200x100 = 20,000 pixels, above data.max_pixels=19,999"
    (again,) = inspect_files([str(tmp_path / "wide.png")], cache, 1, max_pixels=20_000)  # the cap raised
    assert again.ok and again.width == 200
