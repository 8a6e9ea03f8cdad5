"""The data audit (pipeline.data.audit, pipeline.data.quality) and the data stage's use of it: planted
mislabels, an off-domain placeholder and poor images are named in audit/*.csv, the drop policies remove them
from training only, and `data.audit=false` embeds nothing."""

import csv
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_cfg, load_script, make_image_folder
from mlflow.tracking import MlflowClient
from PIL import Image, ImageFilter

from pipeline.data import audit as audit_module
from pipeline.data import embeddings
from pipeline.data.audit import audit
from pipeline.data.integrity import find_problems, inspect_files
from pipeline.data.quality import Thresholds, measure, quality_issues
from pipeline.data.sources import Record, build_index
from pipeline.limits import MAX_PIXELS
from pipeline.runner import run
from pipeline.schema import plain
from pipeline.tasks import MULTICLASS

AUDIT = ["data.audit=true", "audit.image_size=64"]  # the size test_embeddings exports the backbone at too


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> dict:
    """3 pattern classes x 16 images; 2 moved to a wrong class folder, a flat placeholder and a dark image
    added: the folder and what was planted."""
    root = make_image_folder(tmp_path_factory.mktemp("planted") / "images", per_class=16, size=48)
    moved = {
        shutil.move(root / "stripes_h" / "000.png", root / "checker" / "moved_h.png"),
        shutil.move(root / "stripes_v" / "000.png", root / "stripes_h" / "moved_v.png"),
    }
    placeholder = root / "stripes_v" / "placeholder.png"
    Image.new("RGB", (48, 48), (235, 235, 235)).save(placeholder)
    dark = root / "checker" / "dark.png"
    Image.eval(Image.open(root / "checker" / "001.png"), lambda v: v // 8).save(dark)
    moved = {str(p) for p in moved}
    return {"root": root, "moved": moved, "placeholder": str(placeholder), "dark": str(dark)}


def audit_folder(root: Path, cache: Path, tmp: Path):
    index = build_index(root, 0.2, 0.0, 42)
    infos = inspect_files([r.path for r in index.records], None, 1, MAX_PIXELS)
    settings = plain(compose_cfg(tmp, *AUDIT).audit)
    return audit(index.records, infos, index.class_names, settings, cache, seed=0)


def test_moved_images_are_label_issues_with_their_true_class_suggested(planted, audit_cache, tmp_path):
    report = audit_folder(planted["root"], audit_cache, tmp_path)
    first = report.label_issues[:2]  # most suspect first: the two moved lead (a pattern may follow)
    assert {(Path(r["path"]).name, r["given_label"], r["suggested_label"]) for r in first} == {
        ("moved_h.png", "checker", "stripes_h"),
        ("moved_v.png", "stripes_h", "stripes_v"),
    }


def test_label_issues_are_searched_among_class_members_and_named_by_their_own_row(monkeypatch):
    """Outliers (rows 0-2: far from every class, labels at random) are left out of the search; the moved
    rows come back under their own positions, not their places among the members."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 30)
    features = rng.normal(scale=0.5, size=(90, 18)) + 3 * np.kron(np.eye(3), np.ones(6))[labels]
    features[:3] = rng.normal(loc=40, size=(3, 18))
    given = labels.copy()
    given[[40, 70]] = (labels[[40, 70]] + 1) % 3
    records = [Record(f"{i}.png", int(label), "train") for i, label in enumerate(given)]
    searched = []
    search = audit_module.search_label_issues

    def watched(rows, *args):
        searched.append(len(rows))
        return search(rows, *args)

    monkeypatch.setattr(audit_module, "search_label_issues", watched)
    found = audit_module.label_issues_among_members(features, records, {0, 1, 2}, MULTICLASS, 0, None)
    assert searched == [87]
    assert {issue.index for issue in found} == {40, 70}
    assert all(issue.suggested == labels[issue.index] for issue in found)


def test_a_placeholder_is_an_outlier_and_poor_images_are_quality_issues(planted, audit_cache, tmp_path):
    report = audit_folder(planted["root"], audit_cache, tmp_path)
    assert [r["path"] for r in report.outliers] == [planted["placeholder"]]
    assert report.outliers[0]["label"] == "stripes_v"
    issues = {(r["path"], r["issue"]) for r in report.quality}
    assert issues == {
        (planted["placeholder"], "blurry"),
        (planted["placeholder"], "low_information"),
        (planted["placeholder"], "bright"),
        (planted["dark"], "dark"),
    }
    assert report.summary() == {"label_issues": len(report.label_issues), "outliers": 1, "quality_issues": 2}


LIMITS = Thresholds(dark=0.2, bright=0.9, blurry=0.5, low_information=1.0, odd_aspect_ratio=3.0)


def tile() -> Image.Image:
    from sklearn.datasets import load_sample_images

    return Image.fromarray(load_sample_images().images[0][100:228, 200:328])


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (lambda: tile(), set()),
        (lambda: tile().filter(ImageFilter.GaussianBlur(3)), {"blurry"}),
        (lambda: Image.eval(tile(), lambda v: v // 6), {"dark"}),
        (lambda: Image.eval(tile(), lambda v: 235 + v // 13), {"bright"}),
        (lambda: Image.new("RGB", (64, 64), (90, 120, 30)), {"blurry", "low_information"}),
        (lambda: tile().resize((400, 100)), {"odd_aspect_ratio"}),
    ],
    ids=["photo", "blurred", "dark", "washed_out", "flat", "wide"],
)
def test_each_quality_issue_is_named_for_the_image_that_has_it(image, expected):
    img = image()
    assert {issue for issue, _ in quality_issues(measure(img), img.width, img.height, LIMITS)} == expected


def test_the_data_stage_writes_the_audit_tables_metrics_and_grids(make_cfg, planted, audit_cache, tmp_path):
    run(make_cfg(*AUDIT, "stages=[data]", f"data.cache_dir={audit_cache}", root=planted["root"]))
    folder = tmp_path / "out" / "audit"
    for name, columns in audit_module.COLUMNS.items():
        with (folder / f"{name}.csv").open() as f:
            assert tuple(csv.DictReader(f).fieldnames) == columns
    with (folder / "label_issues.csv").open() as f:
        named = [row["path"] for row in csv.DictReader(f)]
    assert set(named[:2]) == planted["moved"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("image-classification").experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert {k: parent.data.metrics[f"data/{k}"] for k in ("label_issues", "outliers", "quality_issues")} == {
        "label_issues": len(named),
        "outliers": 1,
        "quality_issues": 2,
    }
    data_run = next(r for r in runs if r.info.run_name == "data")
    logged = {a.path for a in client.list_artifacts(data_run.info.run_id, "plots")}
    logged |= {a.path for a in client.list_artifacts(data_run.info.run_id, "audit")}
    assert {"plots/label_issues.png", "plots/outliers.png", "plots/quality.png"} <= logged
    assert {"audit/label_issues.csv", "audit/outliers.csv", "audit/quality.csv"} <= logged


def test_drop_policies_remove_flagged_images_from_training_only(
    make_cfg, planted, audit_cache, tmp_path, caplog
):
    flagged = planted["moved"] | {planted["placeholder"]}
    keep = make_cfg(*AUDIT, "stages=[data]", f"data.cache_dir={audit_cache}", root=planted["root"])
    data = keep.data
    index = build_index(planted["root"], data.val_fraction, data.test_fraction, data.split_seed)
    split_of = {r.path: r.split for r in index.records}
    assert {split_of[p] == "train" for p in flagged} == {True, False}  # the split puts them on both sides
    cfg = make_cfg(
        *AUDIT, "stages=[data]", f"data.cache_dir={audit_cache}", "data.on_label_issue=drop",
        "data.on_outlier=drop", root=planted["root"],
    )  # fmt: skip
    with caplog.at_level(logging.INFO, logger="pipeline"):
        run(cfg)
    with (tmp_path / "out" / "index.csv").open() as f:
        left = {row["path"] for row in csv.DictReader(f)}
    assert not {p for p in flagged if split_of[p] == "train"} & left
    assert {p for p in flagged if split_of[p] != "train"} <= left
    dropped = sum(split_of[p] == "train" for p in flagged)
    assert len(left) == len(index.records) - dropped
    in_train = {kind: sum(split_of[p] == "train" for p in paths) for kind, paths in (
        ("label_issues", planted["moved"]), ("outliers", {planted["placeholder"]}))}  # fmt: skip
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dropped")]
    assert said == [f"dropped {n} training image(s) flagged in {kind} (data.on_{kind[:-1]}=drop)"
                    for kind, n in in_train.items() if n]  # fmt: skip


def test_audit_off_embeds_nothing_and_writes_no_tables(make_cfg, planted, tmp_path, monkeypatch):
    monkeypatch.setattr(embeddings, "embed", lambda *a, **k: pytest.fail("embedded with data.audit=false"))
    run(make_cfg("stages=[data]", "data.audit=false", root=planted["root"]))
    assert (tmp_path / "out" / "index.csv").is_file() and not (tmp_path / "out" / "audit").exists()


def test_pairs_alike_in_content_join_the_duplicates_and_leakage_findings(tmp_path):
    root = make_image_folder(tmp_path / "images", per_class=4)
    index = build_index(root, 0.25, 0.0, 0)
    infos = inspect_files([r.path for r in index.records], None, 1, MAX_PIXELS)
    train = next(i for i, r in enumerate(index.records) if r.split == "train")
    val = next(i for i, r in enumerate(index.records) if r.split == "val")
    findings = find_problems(index.records, infos, index.class_names, 0, [(train, val, 0.99)])
    assert [(p["kind"], p["a"], p["b"]) for p in findings.leakage] == [
        ("embedding", index.records[train].path, index.records[val].path)
    ]
    assert findings.near_duplicates == findings.leakage and findings.leakage[0]["distance"] == 0.01


def test_the_benchmark_moves_the_asked_share_and_scores_what_the_tables_name(tmp_path):
    bench = load_script("bench_audit")
    source = make_image_folder(tmp_path / "source", per_class=20)
    moved = bench.noisy_copy(source, tmp_path / "copy", 0.1, seed=3)
    copies = sorted((tmp_path / "copy").rglob("*.png"))
    assert len(copies) == 60 and len(moved) == 6
    assert all(Path(p).parent.name != Path(p).resolve().parent.name for p in moved)
    assert sum(p.parent.name != p.resolve().parent.name for p in copies) == 6
    off = bench.off_domain_images(tmp_path / "copy", ["checker"], seed=0)
    assert len(off) == 10 and all(np.asarray(Image.open(p)).size for p in off)
    named = set(sorted(moved)[:3]) | {str(copies[0])}  # 3 of the 6 moved and one that was not
    found = {"label_issues": named, "outliers": set(off), "quality": set()}
    scores = bench.score(found, moved, off)
    assert (scores["label_recall"], scores["label_precision"], scores["off_domain_found"]) == (0.5, 0.75, 10)
