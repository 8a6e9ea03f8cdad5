"""Odd but usable inputs, table-driven: the run goes on, and where something was left out, changed or may
surprise, one warning line says so. (Inputs that must stop a run are in test_bad_inputs.py.)"""

import csv
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image_folder
from mlflow.tracking import MlflowClient
from PIL import Image

from pipeline.runner import run

# near_duplicate_distance=0: the tiny patterns are alike enough for the perceptual hash to pair some
DATA_ONLY = ["stages=[data]", "data.image_size=16", "data.batch_size=8", "data.near_duplicate_distance=0"]


def images(tmp: Path) -> Path:
    return make_image_folder(tmp / "images", per_class=6, size=16)


def bom_manifest(tmp: Path) -> Path:
    root = images(tmp)
    rows = [f"{p.relative_to(root)},{p.parent.name}" for p in sorted(root.rglob("*.png"))]
    (root / "labels.csv").write_text("\ufeffpath,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return root / "labels.csv"


def duplicate_rows(tmp: Path) -> Path:
    manifest = bom_manifest(tmp)
    lines = manifest.read_text(encoding="utf-8-sig").splitlines()
    first = lines[1].split(",")[0]
    lines += [lines[1], lines[2], f"{first},stripes_v"]  # two repeats and one under another label
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def case_variants(tmp: Path) -> Path:
    root = images(tmp)
    (root / "Checker").mkdir()
    for f in sorted((root / "checker").iterdir())[:3]:
        shutil.move(f, root / "Checker" / f.name)
    return root


def empty_class_folder(tmp: Path) -> Path:
    root = images(tmp)
    (root / "circles").mkdir()
    return root


def hidden_and_system_files(tmp: Path) -> Path:
    root = images(tmp)
    (root / "checker" / "._000.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS companion file
    (root / "checker" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "checker" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (root / ".thumbnails").mkdir()
    shutil.copy(root / "checker" / "000.png", root / ".thumbnails" / "000.png")
    return root


def not_utf8_names(tmp: Path) -> Path:
    root = images(tmp)
    os.rename(bytes(root / "checker" / "000.png"), bytes(root / "checker") + b"/caf\xe9.png")
    os.rename(bytes(root / "stripes_v"), bytes(root) + b"/stri\xffpes")
    return root


def with_extra(name: str, save: Callable[[Path], None]) -> Callable[[Path], Path]:
    """The tiny folder plus one more file, checker/<name>, written by `save`."""

    def build(tmp: Path) -> Path:
        root = images(tmp)
        save(root / "checker" / name)
        return root

    return build


def pattern(mode: str) -> Image.Image:
    grid = (np.indices((16, 16)).sum(0) // 4 % 2 * 200 + 20).astype(np.uint8)
    return Image.fromarray(grid).convert(mode)


def animated(path: Path) -> None:
    frames = [pattern("RGB"), pattern("RGB").rotate(90)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)


def sixteen_bit(path: Path) -> None:
    Image.fromarray((np.indices((16, 16)).sum(0) * 2000).astype(np.uint16)).save(path)


def exif_rotated(path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    pattern("RGB").save(path, exif=exif)


def link_outside(path: Path) -> None:
    outside = path.parents[2] / "elsewhere.png"
    pattern("RGB").save(outside)
    path.symlink_to(outside)


ODD_FILES = {  # name in checker/ -> how it is written; each is read and indexed like any image
    "cmyk.jpg": lambda p: pattern("CMYK").save(p),
    "sixteen_bit.png": sixteen_bit,
    "sixteen_bit.tif": sixteen_bit,
    "animated.gif": animated,
    "animated.webp": animated,
    "palette_transparent.png": lambda p: pattern("P").save(p, transparency=0),
    "grey_alpha.png": lambda p: pattern("LA").save(p),
    "exif_rotated.jpg": exif_rotated,
    "link_outside_root.png": link_outside,
    "UPPER_SUFFIX.PNG": lambda p: pattern("RGB").save(p, format="PNG"),
}


# (id, folder or manifest builder, the warning that must appear (None: no warning), images indexed)
CASES: list[tuple[str, Callable[[Path], Path], str | None, int]] = [
    ("manifest saved by Excel (BOM)", bom_manifest, None, 18),
    ("manifest rows repeated", duplicate_rows, "3 file(s) more than once (1 of them under another", 18),
    ("labels differing in case", case_variants, "only in case are separate classes: Checker, checker", 18),
    ("empty class folder", empty_class_folder, "1 class folder(s) without images skipped: circles", 18),
    ("hidden and system files", hidden_and_system_files, None, 18),
    ("file and folder names not UTF-8", not_utf8_names, None, 18),
    ("picture without a decoder (HEIC)", with_extra("IMG_0001.heic", lambda p: p.write_bytes(b"ftypheic")),
     "left out 1 picture(s) in formats not read here (.heic 1)", 18),
    *[(name, with_extra(name, save), None, 19) for name, save in ODD_FILES.items()],
]  # fmt: skip


@pytest.mark.parametrize(("build", "warning", "indexed"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_odd_input_runs_and_says_what_it_did(make_cfg, tmp_path, caplog, build, warning, indexed):
    root = build(tmp_path)
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        run(make_cfg(*DATA_ONLY, "data=folder", f"data.root={root}"))
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(warning in line for line in said) if warning else said == [], said
    with (tmp_path / "out" / "index.csv").open(encoding="utf-8") as f:  # valid UTF-8 whatever the names
        assert len(list(csv.DictReader(f))) == indexed


def test_a_name_that_is_not_utf8_trains_and_validates_with_its_image_counted(make_cfg, tmp_path):
    root = not_utf8_names(tmp_path)
    train = ["model=simple_cnn", "trainer.max_epochs=1", "data.image_size=16", "data.batch_size=8"]
    run(make_cfg("stages=[data,train,validate]", *train, "data=folder", f"data.root={root}"))
    with (tmp_path / "out" / "index.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert {r["class_name"] for r in rows} == {"checker", "stripes_h", "stri\\xffpes"}
    assert sum(r["path"].endswith("caf\\udce9.png") for r in rows) == 1
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("image-classification").experiment_id])
    assert {r.info.status for r in runs} == {"FINISHED"} and len(runs) == 4
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.data.metrics["data/num_images"] == 18 and "val/acc" in parent.data.metrics


def _runs(tmp_path: Path) -> list:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    return client.search_runs([client.get_experiment_by_name("image-classification").experiment_id])


def test_a_file_removed_between_listing_and_decoding_is_skipped_as_unreadable(
    make_cfg, tmp_path, monkeypatch, caplog
):
    import pipeline.stages.index as shared

    root, real = images(tmp_path), shared.build_index

    def list_then_remove(*args):
        index = real(*args)
        os.remove(index.split("train")[0].path)
        return index

    monkeypatch.setattr(shared, "build_index", list_then_remove)
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        run(make_cfg(*DATA_ONLY, "data=folder", f"data.root={root}"))
    assert "skipped 1 unreadable file(s)" in caplog.text and "FileNotFoundError" in caplog.text
    assert {r.info.status for r in _runs(tmp_path)} == {"FINISHED"}


def test_a_file_removed_after_the_data_stage_stops_training_with_one_line(make_cfg, tmp_path, monkeypatch):
    import pipeline.stages.data as data_stage
    from pipeline.__main__ import error_line
    from pipeline.errors import PipelineError

    root, real = images(tmp_path), data_stage.run

    def run_then_remove(cfg, ctx, tracker):
        ctx = real(cfg, ctx, tracker)
        os.remove(ctx.index.split("train")[0].path)
        return ctx

    monkeypatch.setattr(data_stage, "run", run_then_remove)
    train = ["stages=[data,train]", "model=simple_cnn", "trainer.max_epochs=1", "data.image_size=16"]
    with pytest.raises(PipelineError) as caught:
        run(make_cfg(*train, "data.batch_size=8", "data=folder", f"data.root={root}"))
    assert "cannot be read any more (FileNotFoundError): the folder changed" in error_line(caught.value)
    assert {r.info.status for r in _runs(tmp_path)} == {"FINISHED", "FAILED"}  # data stage, then train


def test_an_error_raised_in_a_loader_worker_still_gives_one_line(tmp_path):
    import torch

    from pipeline.__main__ import error_line
    from pipeline.data.images import ImageDataset
    from pipeline.data.sources import Record

    loader = torch.utils.data.DataLoader(ImageDataset([Record(str(tmp_path / "gone.png"), 0, "train")], None),
                                         num_workers=1)  # fmt: skip
    with pytest.raises(Exception) as caught:
        next(iter(loader))
    assert "Original Traceback" in str(caught.value)  # what torch hands back from the worker
    line = error_line(caught.value)
    assert line.startswith(f"error: {tmp_path / 'gone.png'} cannot be read any more") and "\n" not in line
