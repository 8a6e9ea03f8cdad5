from collections import Counter
from pathlib import Path

import pytest
from conftest import make_image_folder

from pipeline.data.sources import build_index, digits_folder, resolve_root, scan_folder
from pipeline.errors import PipelineError


def test_flat_folder_gets_a_seeded_stratified_split(image_folder):
    index = build_index(image_folder, val_fraction=0.25, test_fraction=0.25, seed=3)
    assert index.class_names == ["checker", "stripes_h", "stripes_v"]
    counts = index.counts()
    assert all(n == 6 for n in counts["train"].values())
    assert all(n == 3 for n in counts["val"].values()) and all(n == 3 for n in counts["test"].values())
    again = build_index(image_folder, val_fraction=0.25, test_fraction=0.25, seed=3)
    assert again.records == index.records  # reruns see the same split


def test_split_folders_are_read_with_aliases(tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=4, splits=("train", "valid", "test"))
    index = build_index(root, val_fraction=0.2, test_fraction=0.0, seed=0)
    assert Counter(r.split for r in index.records) == {"train": 12, "val": 12, "test": 12}


def test_train_only_split_folder_carves_val_out_of_train(tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=10, splits=("train",))
    index = build_index(root, val_fraction=0.2, test_fraction=0.0, seed=0)
    assert Counter(r.split for r in index.records) == {"train": 24, "val": 6}


def test_files_in_nested_folders_keep_the_order_path_objects_sort_in(image_folder):
    # the seeded split follows this order: "sub" before "sub-2" part by part, though "sub-" < "sub/" as text
    for folder, name in [("sub-2", "a.png"), ("sub", "b.png"), ("sub", "a.png"), ("sub.x", "c.png")]:
        (image_folder / "checker" / folder).mkdir(exist_ok=True)
        (image_folder / "checker" / folder / name).write_bytes(
            next((image_folder / "checker").glob("*.png")).read_bytes()
        )
    _, items = scan_folder(image_folder)
    paths = [p for p, label, _ in items if label == "checker"]
    assert paths == [str(p) for p in sorted(Path(p) for p in paths)] and paths != sorted(paths)


def test_non_image_files_are_not_indexed(image_folder):
    (image_folder / "checker" / "notes.txt").write_text("not an image")
    _, items = scan_folder(image_folder)
    assert len(items) == 36 and all(p.endswith(".png") for p, _, _ in items)


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda root: None, "data folder not found"),
        (lambda root: root.mkdir(), "no images found"),
        (lambda root: make_image_folder(root, per_class=3) and None, None),
    ],
)
def test_bad_folders_fail_with_a_clear_message(tmp_path, setup, message):
    root = tmp_path / "data"
    setup(root)
    if message is None:  # the well-formed control case
        assert len(build_index(root, 0.34, 0.0, 0).records) == 9
        return
    with pytest.raises(PipelineError, match=message):
        build_index(root, 0.2, 0.0, 0)


def test_single_class_folder_is_rejected(tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=3)
    for extra in ("stripes_h", "stripes_v"):
        for f in (root / extra).iterdir():
            f.unlink()
        (root / extra).rmdir()
    with pytest.raises(PipelineError, match="single class"):
        build_index(root, 0.2, 0.0, 0)


def test_digits_are_written_once_as_a_png_folder(tmp_path):
    root = resolve_root(None, str(tmp_path))
    assert root == tmp_path / "digits"
    files = sorted(root.rglob("*.png"))
    assert len(files) == 1797 and len({f.parent.name for f in files}) == 10
    mtime = files[0].stat().st_mtime_ns
    assert digits_folder(tmp_path) == root and files[0].stat().st_mtime_ns == mtime
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".digits-")]  # no staging left


def write_manifest(folder, rows, header="path,label,split"):
    path = folder / "labels.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_csv_manifest_with_splits_and_relative_paths(image_folder):
    rows = [
        f"{p.relative_to(image_folder)},{p.parent.name},{'valid' if i % 4 == 0 else 'train'}"
        for i, p in enumerate(sorted(image_folder.rglob("*.png")))
    ]
    manifest = write_manifest(image_folder, rows)
    index = build_index(manifest, 0.2, 0.0, 0, holdout="none")
    assert index.class_names == ["checker", "stripes_h", "stripes_v"]
    assert Counter(r.split for r in index.records) == {"train": 27, "val": 9}
    assert all(r.path.startswith(str(image_folder)) for r in index.records)
    held_out = build_index(manifest, 0.2, 0.0, 0)  # data.holdout=auto: no test split, so val is held out
    assert Counter(r.split for r in held_out.records) == {"train": 21, "val": 6, "test": 9}


def test_csv_manifest_without_splits_is_split_here(image_folder):
    rows = [f"{p.relative_to(image_folder)},{p.parent.name}" for p in sorted(image_folder.rglob("*.png"))]
    index = build_index(write_manifest(image_folder, rows, "path,label"), 0.25, 0.0, 0)
    assert Counter(r.split for r in index.records) == {"train": 27, "val": 9}


@pytest.mark.parametrize(
    "rows, header, message",
    [
        (["checker/000.png,checker,train", "gone.png,checker,train"], "path,label,split", "1 missing file"),
        (["checker/000.png,checker,holdout"], "path,label,split", "unknown split 'holdout'"),
        (["checker/000.png"], "path", "columns path,label"),
        (["checker/000.png,checker,train", "stripes_h/000.png,stripes_h,"], "path,label,split", "every row"),
    ],
)
def test_bad_csv_manifests_fail_clearly(image_folder, rows, header, message):
    with pytest.raises(PipelineError, match=message):
        build_index(write_manifest(image_folder, rows, header), 0.2, 0.0, 0)


def test_class_without_training_images_is_rejected(tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=3, splits=("train", "val"))
    for f in (root / "train" / "checker").iterdir():
        f.unlink()
    (root / "train" / "checker").rmdir()
    with pytest.raises(PipelineError, match="classes without training images: checker"):
        build_index(root, 0.2, 0.0, 0)


@pytest.mark.parametrize("split_folders", [False, True], ids=["flat", "train/val"])
def test_a_class_folder_linked_to_the_data_folder_is_left_out(tmp_path, caplog, split_folders):
    root = make_image_folder(tmp_path / "images", per_class=4, size=16)
    if split_folders:
        (tmp_path / "split").mkdir()
        root.rename(tmp_path / "split" / "train")
        root = tmp_path / "split"
        (root / "train" / "loop").symlink_to(root)
    else:
        (root / "loop").symlink_to(root)
    names, items = scan_folder(root)
    assert names == ["checker", "stripes_h", "stripes_v"] and len(items) == 12
    assert "links to" in caplog.text and "which holds the data folder itself: left out" in caplog.text
