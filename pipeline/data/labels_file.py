"""Labels files: a CSV (`path,labels[,split]`) or JSON lines (`{"path": ..., "labels": ..., "split": ...}`)
naming each image's labels, several to an image for a multi-label task (data.task).

Paths are relative to the file's folder; a CSV's labels are one field joined by data.label_separator, a JSON
line's a list or such a string. A bad row of a multi-label file (its file missing, no labels, labels joined
by another separator, an unknown split, a row cut short or not JSON) costs one warning line and is left
out, as an unreadable image is (data.on_corrupt=skip), or stops the run (data.on_corrupt=fail). A
single-label CSV keeps its own stricter reader (pipeline.data.sources.read_manifest).
"""

import csv
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PipelineError

log = logging.getLogger("pipeline.data")
SUFFIXES = (".csv", ".jsonl")
LABEL_COLUMNS = ("labels", "label")  # the first the file has names each row's labels
# what a labels field joined by another separator than the chosen one holds
SEPARATORS = (";", "|", ",", "/", "\t")
SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
MAX_LINES = 20  # bad rows named one a line; the rest in one count


@dataclass(frozen=True)
class Row:
    line: int
    path: str  # absolute
    labels: tuple[str, ...]  # sorted, each once
    split: str | None


def is_labels_file(root: Path) -> bool:
    return root.suffix.lower() in SUFFIXES and root.is_file()


def read_table(path: Path) -> tuple[list[str], list[tuple[int, dict | None]]]:
    """The file's columns and its rows as (line, fields); fields None for a JSON line that is not an
    object."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel's UTF-8 starts with a BOM
            if path.suffix.lower() == ".jsonl":
                rows = [(n, json_object(text)) for n, text in enumerate(f, start=1) if text.strip()]
                return sorted({k for _, r in rows if r for k in r}), rows
            reader = csv.DictReader(f)
            return list(reader.fieldnames or []), [(reader.line_num, row) for row in reader]
    except UnicodeDecodeError as err:
        raise PipelineError(
            f"{path} is not UTF-8 text ({err.reason} at byte {err.start}): save it as UTF-8"
        ) from err


def json_object(text: str) -> dict | None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def label_column(path: Path, columns: list[str]) -> str:
    found = [c for c in LABEL_COLUMNS if c in columns]
    if "path" not in columns or not found:
        raise PipelineError(
            f"{path} needs a header with columns path,label[,split] (or labels: several an image); "
            f"got {sorted(columns)}"
        )
    return found[0]


def split_labels(value, separator: str) -> tuple[str, ...]:
    """A labels field as its labels: a JSON list, or a string joined by `separator`."""
    parts = value if isinstance(value, list) else str(value or "").split(separator)
    return tuple(sorted({str(p).strip() for p in parts} - {""}))


def several_labels(path: Path, separator: str) -> bool:
    """Whether any row of the file names more than one label: what data.task=auto reads as multi-label."""
    columns, rows = read_table(path)
    column = label_column(path, columns)
    return any(fields and len(split_labels(fields.get(column), separator)) > 1 for _, fields in rows)


def parse_row(line: int, fields: dict | None, column: str, folder: Path, separator: str) -> Row | str:
    """The row at `line`, or why it is bad."""
    if fields is None:
        return "not a JSON object"
    if None in fields.values() or None in fields:  # csv: fewer fields than the header, or more
        return "a row cut short (or with more fields than the header)"
    given = str(fields.get("path") or "")
    path = str((folder / given).resolve())
    if not given or not os.path.isfile(path):
        return f"file not found: {given!r}"
    labels = split_labels(fields.get(column), separator)
    if not labels:
        return f"no labels for {given!r}"
    split = str(fields.get("split") or "").strip().lower()
    if split and split not in SPLIT_ALIASES:
        return f"unknown split {fields.get('split')!r}; use train, val or test"
    return Row(line, path, labels, SPLIT_ALIASES.get(split))


def read_rows(path: Path, separator: str, stop_on_bad_row: bool) -> list[Row]:
    """The good rows of a labels file, each file once (its first row); each bad one said in a line (and the
    first stops the run when `stop_on_bad_row`)."""
    columns, table = read_table(path)
    column = label_column(path, columns)
    parsed = [(line, parse_row(line, fields, column, path.parent, separator)) for line, fields in table]
    known = {label for _, row in parsed if isinstance(row, Row) for label in row.labels}
    rows, bad = [], 0
    for line, row in parsed:
        row = joined_by_another(row, known, separator) if isinstance(row, Row) else row
        if isinstance(row, Row):
            rows.append(row)
            continue
        if stop_on_bad_row:
            raise PipelineError(f"{path} line {line}: {row} (data.on_corrupt=skip leaves such rows out)")
        bad += 1
        if bad <= MAX_LINES:
            log.warning("%s line %d left out: %s", path.name, line, row)
    if bad > MAX_LINES:
        log.warning("%s: %d more bad row(s) left out", path.name, bad - MAX_LINES)
    return first_row_per_file(path, rows)


def joined_by_another(row: Row, known: set[str], separator: str) -> Row | str:
    """The row, or why it is bad: one label that is labels of other rows joined by another separator (a
    label that merely holds one, like T-shirt/top, stays whole)."""
    if len(row.labels) > 1:
        return row
    (label,) = row.labels
    for other in SEPARATORS:
        parts = [p.strip() for p in label.split(other)]
        if other != separator and len(parts) > 1 and set(parts) <= known:
            return f"labels {label!r} joined by {other!r}, not by data.label_separator {separator!r}"
    return row


def first_row_per_file(path: Path, rows: list[Row]) -> list[Row]:
    kept: dict[str, Row] = {}
    for row in rows:
        if row.path in kept:
            log.warning("%s line %d left out: %s listed again (line %d kept)", path.name, row.line, row.path,
                        kept[row.path].line)  # fmt: skip
        kept.setdefault(row.path, row)
    if not kept:
        raise PipelineError(f"{path} lists no usable images")
    if any(r.split is None for r in kept.values()) and any(r.split for r in kept.values()):
        raise PipelineError(f"{path}: give a split on every row or on none")
    return list(kept.values())
