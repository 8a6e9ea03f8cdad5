"""The data audit: what an image's content says about it, beside what file hashes say (integrity).

Every readable image is embedded once by a pretrained backbone (pipeline.data.embeddings, cached by content),
and the embeddings answer three questions: is the image's label one its neighbours argue against
(pipeline.data.label_issues), is it far from every other image (pipeline.data.neighbours), is it a near copy
of another (same module, handed to the integrity findings as pairs of kind `embedding`). Image quality
(pipeline.data.quality) comes from the measures the integrity decode already took. Nothing here changes the
dataset; `drop_flagged` applies the data.on_label_issue and data.on_outlier policies.
"""

import csv
import json
import logging
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.integrity import FileInfo, fingerprint
from pipeline.data.neighbours import find_outliers, nearest, similar_pairs
from pipeline.data.quality import Thresholds, quality_issues
from pipeline.data.sources import TEXT_ERRORS, DatasetIndex, Record, label_text, require_train_images
from pipeline.tasks import MULTICLASS, MULTILABEL

log = logging.getLogger("pipeline.data")
COLUMNS = {  # neighbours: the nearest images' paths (a JSON list, nearest first), what the audit compared
    "label_issues": ("path", "split", "given_label", "suggested_label", "score", "neighbours"),
    "outliers": ("path", "split", "label", "score", "neighbours"),
    "quality": ("path", "split", "issue", "score"),
}


@dataclass
class AuditReport:
    label_issues: list[dict]  # most suspect first; score: cleanlab's label quality (low = suspect)
    outliers: list[dict]  # farthest first; score: mean distance to the nearest images
    quality: list[dict]  # one row per image and issue; score: the measure that crossed its threshold
    similar: list[tuple[int, int, float]]  # near-duplicate pairs, as positions among the readable records
    seconds: float = 0.0  # what the audit cost, embeddings included
    device: str = "cpu"  # where the images were embedded

    def without(self, reviewed: set[tuple[str, str]]) -> "AuditReport":
        """The report less the (path, list) pairs a reviewer kept (pipeline.data.decisions.kept)."""
        kept = {n: [r for r in getattr(self, n) if (r["path"], n) not in reviewed] for n in COLUMNS}
        return replace(self, **kept)

    def summary(self) -> dict[str, int]:
        return {
            "label_issues": len(self.label_issues),
            "outliers": len(self.outliers),
            "quality_issues": len({row["path"] for row in self.quality}),
        }


def find_quality_issues(good: list[tuple[Record, FileInfo]], settings: dict[str, Any]) -> list[dict]:
    limits = Thresholds(**{f.name: settings[f.name] for f in fields(Thresholds)})
    return [
        {"path": r.path, "split": r.split, "issue": issue, "score": score}
        for r, info in good
        for issue, score in quality_issues(info.quality, info.width, info.height, limits)
    ]


def audit(
    records: list[Record],
    infos: list[FileInfo],
    class_names: list[str],
    settings: dict[str, Any],
    cache_folder: Path,
    seed: int,
    device: str = "cpu",
    task: str = MULTICLASS,
) -> AuditReport:
    """Audit the readable images among `records` (infos in the same order) of a `task` (one label an image
    or several); `settings` is cfg.audit; the images are embedded on `device` (a torch device name)."""
    started = time.perf_counter()
    good = [(r, i) for r, i in zip(records, infos, strict=True) if i.ok]
    quality = find_quality_issues(good, settings)
    if len(good) < 3:
        return AuditReport([], [], quality, [])
    from pipeline.data.embeddings import embed  # torch, timm and onnx: imported only when the audit runs

    paths, contents = [r.path for r, _ in good], [fingerprint(i) for _, i in good]
    embedded = embed(
        paths, contents, settings["backbone"], settings["image_size"], cache_folder, device=device
    )
    neighbours = nearest(embedded.vectors, settings["outlier_neighbours"])
    outliers = find_outliers(neighbours, settings["outlier_fence"])
    far = {o.index for o in outliers}  # reported as outliers, not as label issues
    issues = label_issues_among_members(
        embedded.label_features, [r for r, _ in good], far, task, seed, cache_folder
    )
    label_issues, outlier_rows = suspect_rows(good, class_names, neighbours, issues, outliers)
    similar = similar_pairs(neighbours, settings["duplicate_similarity"])
    seconds = round(time.perf_counter() - started, 2)
    return AuditReport(label_issues, outlier_rows, quality, similar, seconds, device)


def label_issues_among_members(
    features, records: list[Record], far: set[int], task: str, seed: int, cache_folder
) -> list:
    """search_label_issues with the outliers left out: they belong to no class, so in the search they would
    skew the classifier and take places in cleanlab's count of wrong labels (docs/design.md)."""
    members = [i for i in range(len(records)) if i not in far]
    found = search_label_issues(features[members], [records[i] for i in members], task, seed, cache_folder)
    return [replace(issue, index=members[issue.index]) for issue in found]


def search_label_issues(features, records: list[Record], task: str, seed: int, cache_folder) -> list:
    """Suspected mislabels of a single-label folder. Several labels an image are not searched: a classifier
    on whole-image embeddings misjudges too many of them to tell an error (docs/guides/multilabel.md)."""
    from pipeline.data.label_issues import find_label_issues  # scikit-learn and cleanlab: likewise

    if task == MULTILABEL:
        log.info("label issues are searched in single-label folders only: not in this multi-label one")
        return []
    return find_label_issues(features, np.array([r.label for r in records]), seed, cache_folder)


def suspect_rows(good, class_names, neighbours, issues, outliers) -> tuple[list[dict], list[dict]]:
    """The label-issue and outlier rows of the report, each with the nearest images the audit compared."""

    def near(i: int) -> str:
        return json.dumps([good[j][0].path for j in neighbours.indices[i]])

    label_issues = [
        {
            "path": good[issue.index][0].path,
            "split": good[issue.index][0].split,
            "given_label": class_names[issue.given],
            "suggested_label": class_names[issue.suggested],
            "score": round(issue.score, 4),
            "neighbours": near(issue.index),
        }
        for issue in issues
    ]
    outlier_rows = [
        {
            "path": good[o.index][0].path,
            "split": good[o.index][0].split,
            "label": label_text(good[o.index][0], class_names),
            "score": round(o.score, 4),
            "neighbours": near(o.index),
        }
        for o in outliers
    ]
    return label_issues, outlier_rows


def write_csvs(report: AuditReport, folder: Path) -> list[Path]:
    """audit/label_issues.csv, outliers.csv and quality.csv (a header only when nothing was found)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, columns in COLUMNS.items():
        path = folder / f"{name}.csv"
        with path.open("w", newline="", encoding="utf-8", errors=TEXT_ERRORS) as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(getattr(report, name))
        written.append(path)
    return written


def drop_flagged(
    index: DatasetIndex, report: AuditReport, on_label_issue: str, on_outlier: str
) -> tuple[DatasetIndex, dict[str, int]]:
    """The index without the training images the `drop` policies name, and how many each dropped."""
    flagged = {
        "label_issues": {row["path"] for row in report.label_issues} if on_label_issue == "drop" else set(),
        "outliers": {row["path"] for row in report.outliers} if on_outlier == "drop" else set(),
    }
    train = {r.path for r in index.split("train")}
    dropped = {kind: len(paths & train) for kind, paths in flagged.items()}
    removed = (flagged["label_issues"] | flagged["outliers"]) & train
    if not removed:
        return index, dropped
    kept = [r for r in index.records if r.path not in removed]
    return require_train_images(replace(index, records=kept)), dropped
