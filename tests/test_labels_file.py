import json
import logging
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image_folder, make_multilabel_folder
from mlflow.tracking import MlflowClient

from pipeline.data.integrity import find_problems, inspect_files
from pipeline.data.sources import Labelling, build_index
from pipeline.errors import PipelineError
from pipeline.limits import MAX_PIXELS
from pipeline.runner import run
from pipeline.tasks import MULTICLASS, MULTILABEL


def index_of(path, **labelling):
    return build_index(path, 0.2, 0.2, 0, labelling=Labelling(**labelling))


def test_a_labels_file_with_several_labels_an_image_is_read_as_multilabel(tmp_path, caplog):
    labels_csv = make_multilabel_folder(tmp_path / "m")
    with caplog.at_level(logging.INFO, logger="pipeline.data"):
        index = index_of(labels_csv)
    assert index.task == MULTILABEL and index.class_names == ["checker", "stripes_h", "stripes_v"]
    assert "a multi-label task" in caplog.text
    rows = [line.split(",") for line in labels_csv.read_text().splitlines()[1:]]
    by_path = {r.path: r for r in index.records}
    for path, labels, _ in rows:
        record = by_path[str((labels_csv.parent / path).resolve())]
        assert [index.class_names[i] for i in record.labels] == labels.split(";")
        assert record.label in record.labels
    shown = Counter(name for _, labels, split in rows if split == "train" for name in labels.split(";"))
    train = {name: n for name, n in shown.items()}
    assert sum(index.counts()["train"].values()) + sum(index.counts().get("calib", {}).values()) == sum(
        train.values()
    )


def test_json_lines_without_splits_are_split_here_by_each_images_rarest_label(tmp_path):
    labels_csv = make_multilabel_folder(tmp_path / "m", images=60, splits=False)
    lines = labels_csv.read_text().splitlines()[1:]
    jsonl = labels_csv.with_suffix(".jsonl")
    jsonl.write_text("".join(json.dumps({"path": p, "labels": ls.split(";")}) + "\n" for p, ls in
                             (line.split(",") for line in lines)))  # fmt: skip
    index = index_of(jsonl)
    again = index_of(jsonl)
    assert index.task == MULTILABEL and index.records == again.records
    assert Counter(r.split for r in index.records) == {"train": 36, "val": 12, "test": 12}
    rarest = Counter(i for r in index.records for i in r.labels)
    assert all(r.label == min(r.labels, key=lambda i: (rarest[i], i)) for r in index.records)


def test_a_labels_file_with_one_label_an_image_stays_single_label(tmp_path):
    root = make_image_folder(tmp_path / "images", per_class=5)
    rows = [f"{p.relative_to(root)},{p.parent.name}" for p in sorted(root.rglob("*.png"))]
    (root / "labels.csv").write_text("\n".join(["path,labels", *rows]) + "\n")
    index = index_of(root / "labels.csv")
    assert index.task == MULTICLASS and all(r.labels == () for r in index.records)
    forced = index_of(root / "labels.csv", task="multilabel")
    assert forced.task == MULTILABEL and all(len(r.labels) == 1 for r in forced.records)


BAD_ROWS = [  # (row, what its warning line says)
    ("images/gone.png,checker,train", "file not found: 'images/gone.png'"),
    ("images/001.png,,train", "no labels for 'images/001.png'"),
    ("images/002.png,checker|stripes_h,train", "joined by '|', not by data.label_separator ';'"),
    ("images/003.png,checker,holdout", "unknown split 'holdout'"),
    ("images/004.png", "a row cut short"),
]


def test_each_bad_row_costs_one_line_and_the_run_goes_on(tmp_path, caplog):
    labels_csv = make_multilabel_folder(tmp_path / "m")
    lines = labels_csv.read_text().splitlines()
    bad_paths = {"images/001.png", "images/002.png", "images/003.png", "images/004.png"}
    kept = [line for line in lines if line.split(",")[0] not in bad_paths]
    labels_csv.write_text("\n".join(kept + [row for row, _ in BAD_ROWS]) + "\n")
    with caplog.at_level(logging.WARNING, logger="pipeline.data"):
        index = index_of(labels_csv)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for (row, said), line in zip(BAD_ROWS, range(len(kept) + 1, len(kept) + 6), strict=True):
        assert [w for w in warnings if f"line {line} left out" in w and said in w], (row, warnings)
    assert len(warnings) == len(BAD_ROWS)
    assert len(index.records) == len(kept) - 1  # the header is not a record
    assert index.task == MULTILABEL


def test_a_bad_row_stops_the_run_when_bad_files_do(tmp_path):
    labels_csv = make_multilabel_folder(tmp_path / "m")
    labels_csv.write_text(labels_csv.read_text() + "images/gone.png,checker,train\n")
    with pytest.raises(PipelineError, match=r"line 50: file not found: 'images/gone.png'"):
        index_of(labels_csv, stop_on_bad_row=True)


def test_a_label_that_holds_a_separator_but_no_known_labels_stays_whole(tmp_path):
    labels_csv = make_multilabel_folder(tmp_path / "m")
    labels_csv.write_text(labels_csv.read_text() + "images/000.png,t-shirt/top;checker,train\n")
    lines = labels_csv.read_text().splitlines()
    labels_csv.write_text("\n".join([lines[0], *lines[2:]]) + "\n")  # the image's first row gone
    index = index_of(labels_csv)
    assert "t-shirt/top" in index.class_names


def test_a_folder_cannot_be_multilabel(image_folder):
    with pytest.raises(PipelineError, match="data.task=multilabel needs a labels file"):
        index_of(image_folder, task="multilabel")


def test_the_data_stage_says_labels_an_image_and_which_show_together(make_cfg, tmp_path, audit_cache, caplog):
    labels_csv = make_multilabel_folder(tmp_path / "m", images=60)
    cfg = make_cfg(
        "stages=[data]", "data.audit=true", "audit.image_size=64", f"data.cache_dir={audit_cache}",
        root=labels_csv,
    )  # fmt: skip
    with caplog.at_level(logging.INFO, logger="pipeline"):
        run(cfg)
    said = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("60 images, 3 labels (") for line in said)
    assert "label issues are searched in single-label folders only: not in this multi-label one" in said
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    index = build_index(labels_csv, 0.2, 0.15, cfg.data.split_seed)
    together = np.zeros((3, 3), dtype=int)
    for record in index.records:
        together[np.ix_(record.labels, record.labels)] += 1
    assert stats["co_occurrence"] == together.tolist()
    assert stats["split_sizes"] == dict(Counter(r.split for r in index.records))
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("image-classification").experiment_id])
    data_run = next(r for r in runs if r.info.run_name == "data")
    assert "plots/label_co_occurrence.png" in {
        a.path for a in client.list_artifacts(data_run.info.run_id, "plots")
    }
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.data.metrics["data/labels_per_image"] == pytest.approx(stats["labels_per_image"]["mean"])


def test_copies_of_an_image_with_other_label_sets_are_a_label_conflict(tmp_path):
    labels_csv = make_multilabel_folder(tmp_path / "m", images=30)
    images = labels_csv.parent / "images"
    shutil.copy(images / "000.png", images / "copy_same.png")
    shutil.copy(images / "000.png", images / "copy_other.png")
    first = labels_csv.read_text().splitlines()[1].split(",")
    other = "checker;stripes_h;stripes_v" if first[1] != "checker;stripes_h;stripes_v" else "checker"
    with labels_csv.open("a") as f:
        f.write(f"images/copy_same.png,{first[1]},{first[2]}\nimages/copy_other.png,{other},{first[2]}\n")
    index = index_of(labels_csv)
    infos = inspect_files([r.path for r in index.records], None, 0, MAX_PIXELS)
    findings = find_problems(index.records, infos, index.class_names, 2)
    conflicts = {frozenset(Path(p).name for p in (c["a"], c["b"])) for c in findings.label_conflicts}
    assert conflicts == {
        frozenset({"000.png", "copy_other.png"}),
        frozenset({"copy_same.png", "copy_other.png"}),
    }
