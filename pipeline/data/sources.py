"""Turn a data source (an image folder, a CSV manifest or the built-in digits) into a DatasetIndex.

A folder is either `root/<class>/*` (split here into train, val and test, stratified and seeded, so reruns
see the same split) or `root/<split>/<class>/*` with split folders train, val (or valid, validation) and test.

scikit-learn, NumPy and PIL are imported only to write the built-in digits, not to scan a folder.
"""

import csv
import logging
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from pipeline.data import labels_file
from pipeline.data.labels_file import SPLIT_ALIASES
from pipeline.errors import PipelineError
from pipeline.tasks import MULTICLASS, MULTILABEL

log = logging.getLogger("pipeline.data")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
# pictures in formats left out (no decoder installed, or camera raw): counted in a warning, not silently
UNREAD_IMAGE_SUFFIXES = {
    ".heic",
    ".heif",
    ".avif",
    ".jxl",
    ".dng",
    ".cr2",
    ".nef",
    ".arw",
    ".raw",
    ".psd",
    ".svg",
}
# calib: a slice of train that neither trains nor picks the checkpoint, for the calibrate stage
SPLITS = ("train", "val", "calib", "test")
# A file name that is not valid UTF-8 reaches Python with its odd bytes as surrogates; text files written
# for people (index.csv, audit tables) show them as \udcXX escapes, so the file stays valid UTF-8.
TEXT_ERRORS = "backslashreplace"


@dataclass(frozen=True, slots=True)
class Record:
    path: str
    label: int  # multi-label: the image's rarest label, which its split is stratified by
    split: str
    labels: tuple[int, ...] = ()  # multi-label: every label of the image, sorted; single-label: none


def label_text(record: Record, class_names: list[str]) -> str:
    """The record's class name, or its labels' names joined by ";"."""
    return ";".join(class_names[i] for i in record.labels) or class_names[record.label]


@dataclass
class DatasetIndex:
    """Every image the pipeline uses: its path, label(s) and split, plus the class (label) names."""

    root: str
    class_names: list[str]
    records: list[Record]
    task: str = MULTICLASS

    def split(self, name: str) -> list[Record]:
        return [r for r in self.records if r.split == name]

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per split and class name (multi-label: images per split that show the label)."""
        out: dict[str, dict[str, int]] = {}
        for split in SPLITS:
            records = self.split(split)
            multi = self.task == MULTILABEL
            per_label = (
                Counter(i for r in records for i in r.labels) if multi else Counter(r.label for r in records)
            )
            if per_label:
                out[split] = {name: per_label.get(i, 0) for i, name in enumerate(self.class_names)}
        return out

    def to_csv(self, path: Path) -> None:
        with open(path, "w", newline="", encoding="utf-8", errors=TEXT_ERRORS) as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label", "class_name", "split"])
            for r in self.records:
                writer.writerow([r.path, r.label, label_text(r, self.class_names), r.split])


def digits_folder(cache_dir: Path) -> Path:
    """Write scikit-learn's digits once as PNGs in `cache_dir/digits/<class>/`; return that folder."""
    target = cache_dir / "digits"
    if target.is_dir():
        return target
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".digits-", dir=cache_dir))
    try:
        for i, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
            class_dir = staging / str(label)
            class_dir.mkdir(exist_ok=True)
            pixels = np.clip(image * (255.0 / 16.0), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(class_dir / f"{i:04d}.png")
        os.replace(staging, target)  # atomic: a crash never leaves a half-written cache
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not target.is_dir():
            raise
    return target


def _images_in(folder: Path, unread: Counter) -> list[str]:
    """Image files under folder, hidden ones left out (macOS `._*` companions, `.thumbnails/` folders);
    pictures in formats not read here are counted in `unread` by suffix. One directory walk, no stat per
    file (os.walk's entries know what is a file), and plain strings, not Path objects: this runs per file,
    at a million files. Sorted by path component, the order Path objects sort in (the split depends on it)."""
    images = []
    for current, folders, files in os.walk(folder):
        folders[:] = [f for f in folders if not f.startswith(".")]
        for name in files:
            suffix = os.path.splitext(name)[1].lower()
            if name.startswith("."):
                continue
            if suffix in IMAGE_SUFFIXES:
                images.append(os.path.join(current, name))
            elif suffix in UNREAD_IMAGE_SUFFIXES:
                unread[suffix] += 1
    return sorted(images, key=lambda path: path.split(os.sep))


def class_name(folder: Path) -> str:
    """The folder's name as a class name; bytes that are not UTF-8 become backslash escapes, since class names
    go where only text may (plots, MLflow, the ONNX metadata)."""
    return folder.name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def holds_the_root(class_dir: Path, root: Path) -> bool:
    """A class folder that is a link to the data folder or above it would hold every class's images: left
    out, with a warning."""
    target = class_dir.resolve()
    if not root.resolve().is_relative_to(target):
        return False
    log.warning(
        "class folder %s links to %s, which holds the data folder itself: left out", class_dir, target
    )
    return True


def scan_folder(root: Path) -> tuple[list[str], list[tuple[str, str, str | None]]]:
    """Return class names and (path, class name, split or None) for every image under root."""
    if not root.exists():
        raise PipelineError(f"data folder not found: {root}")
    if not root.is_dir():
        raise PipelineError(f"data.root is not a folder: {root}")
    top = _class_dirs(root)
    split_dirs = {d: SPLIT_ALIASES[d.name.lower()] for d in top if d.name.lower() in SPLIT_ALIASES}
    items: list[tuple[str, str, str | None]] = []
    empty: list[str] = []
    unread: Counter = Counter()
    folders = (
        [(c, s) for d, s in split_dirs.items() for c in _class_dirs(d)]
        if split_dirs
        else [(c, None) for c in top]
    )
    folders = [(c, s) for c, s in folders if not holds_the_root(c, root)]
    for class_dir, split in folders:
        name = class_name(class_dir)
        found = [(path, name, split) for path in _images_in(class_dir, unread)]
        items += found
        if not found:
            empty.append(str(class_dir.relative_to(root)))
    if empty and items:
        log.warning("%d class folder(s) without images skipped: %s", len(empty), ", ".join(empty[:5]))
    if unread:
        kinds = ", ".join(f"{suffix} {n}" for suffix, n in unread.most_common())
        log.warning(
            "left out %d picture(s) in formats not read here (%s): convert them to JPEG or PNG",
            unread.total(),
            kinds,
        )
    if not items:
        raise PipelineError(f"no images found in {root} (expected {root}/<class>/<image> files)")
    return _check_classes(root, items)


def read_manifest(csv_path: Path) -> tuple[list[str], list[tuple[str, str, str | None]]]:
    """A CSV with columns path,label[,split]; paths are relative to the CSV's folder."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel's UTF-8 starts with a BOM
            reader = csv.DictReader(f)
            columns = set(reader.fieldnames or [])
            rows = list(reader)
    except UnicodeDecodeError as err:
        raise PipelineError(
            f"{csv_path} is not UTF-8 text ({err.reason} at byte {err.start}): save it as CSV UTF-8"
        ) from err
    column = labels_file.label_column(csv_path, sorted(columns))
    items: list[tuple[str, str, str | None]] = []
    missing: list[str] = []
    for line, row in enumerate(rows, start=2):
        given = row["path"] or ""  # None on a row with fewer fields than the header
        path = str((csv_path.parent / given).resolve())
        if not os.path.isfile(path):
            missing.append(given)
        split = (row.get("split") or "").strip().lower() or None
        if split is not None and split not in SPLIT_ALIASES:
            raise PipelineError(
                f"{csv_path} line {line}: unknown split {row['split']!r}; use train, val or test"
            )
        label = (row[column] or "").strip()
        if not label:
            raise PipelineError(f"{csv_path} line {line}: no label for {given!r}")
        items.append((path, label, SPLIT_ALIASES.get(split) if split else None))
    if missing:
        raise PipelineError(f"{csv_path} names {len(missing)} missing file(s), e.g. {missing[0]}")
    if not items:
        raise PipelineError(f"{csv_path} lists no images")
    items = _first_row_per_file(csv_path, items)
    if any(split is None for _, _, split in items) and any(split for _, _, split in items):
        raise PipelineError(f"{csv_path}: give a split on every row or on none")
    return _check_classes(csv_path, items)


def _first_row_per_file(csv_path: Path, items: list[tuple[str, str, str | None]]) -> list:
    """A file listed twice would sit in two splits (or two classes): each file is kept once, at its first
    row, before the split, and a warning says how many rows went."""
    seen: dict[str, tuple[str, str, str | None]] = {}
    for item in items:
        seen.setdefault(item[0], item)
    if len(seen) < len(items):
        extra = [item for item in items if seen[item[0]] is not item]
        relabelled = sum(item[1] != seen[item[0]][1] for item in extra)
        log.warning(
            "%s lists %d file(s) more than once (%d of them under another label), e.g. %s: the first row of "
            "each is kept", csv_path, len(extra), relabelled, extra[0][0],
        )  # fmt: skip
    return list(seen.values())


def _check_classes(root: Path, items: list[tuple[str, str, str | None]]):
    class_names = sorted({name for _, name, _ in items})
    by_case: dict[str, list[str]] = {}
    for name in class_names:
        by_case.setdefault(name.casefold(), []).append(name)
    variants = [names for names in by_case.values() if len(names) > 1]
    if variants:
        log.warning(
            "class names that differ only in case are separate classes: %s (rename to merge them)",
            "; ".join(", ".join(names) for names in variants[:5]),
        )
    if len(class_names) < 2:
        raise PipelineError(
            f"{root} holds a single class ({class_names[0]}); classification needs two or more"
        )
    return class_names, items


def _stratified_split(labels: list[int], val_fraction: float, test_fraction: float, seed: int) -> list[str]:
    """Each class split on its own, seeded: round(fraction x class size) images to test and to val, and
    at least one kept in train (a class too small for a held-out image stays whole in train).
    Hand-written because sklearn's stratified splitters refuse classes of fewer than two images."""
    import numpy as np

    rng = np.random.default_rng(seed)
    splits = ["train"] * len(labels)
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    for label in sorted(by_class):
        members = rng.permutation(by_class[label]).tolist()
        n_test, n_val = (int(fraction * len(members) + 0.5) for fraction in (test_fraction, val_fraction))
        while len(members) - n_test - n_val < 1:  # tiny class: give back test images first, then val
            n_test, n_val = (n_test - 1, n_val) if n_test else (n_test, n_val - 1)
        for i in members[:n_test]:
            splits[i] = "test"
        for i in members[n_test : n_test + n_val]:
            splits[i] = "val"
    if "val" not in splits:
        raise PipelineError(
            f"{len(labels)} images are too few for a val split with data.val_fraction={val_fraction}: "
            "raise it or add images"
        )
    return splits


@dataclass(frozen=True)
class Labelling:
    """How a labels file is read (data.task, data.label_separator, data.on_corrupt)."""

    task: str = "auto"  # auto: multi-label when some row names several labels
    separator: str = ";"
    stop_on_bad_row: bool = False


def build_index(
    root: Path,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    holdout: str = "auto",
    calib_fraction: float = 0.0,
    labelling: Labelling | None = None,
) -> DatasetIndex:
    """Scan root and assign splits: folder splits when present, else a seeded stratified split. With
    `holdout=auto`, split folders with a val split but no test split keep val untouched as the test split
    (a user who splits into train and val means val as the held-out set) and the checkpoint is picked on a
    seeded slice of train; `holdout=none` lets val pick the checkpoint, with no held-out split. Last,
    `calib_fraction` of each class's training images become the calib split (val and test stay as they
    would be without it). A multi-label image's split is stratified by its rarest label."""
    class_names, items, task = read_source(root, labelling or Labelling())
    label_sets = [tuple(sorted(class_names.index(n) for n in names)) for _, names, _ in items]
    shown = Counter(i for labels in label_sets for i in labels)
    labels = [min(labels, key=lambda i: (shown[i], i)) for labels in label_sets]
    splits = assign_splits(
        labels, [split for _, _, split in items], val_fraction, test_fraction, seed, holdout
    )
    if calib_fraction > 0:
        splits = carve_calib(labels, splits, calib_fraction, seed)
    records = [
        Record(path, label, split, label_set if task == MULTILABEL else ())
        for (path, _, _), label, label_set, split in zip(items, labels, label_sets, splits, strict=True)
    ]
    return require_train_images(DatasetIndex(str(root), class_names, records, task))


def assign_splits(
    labels: list[int],
    given: list[str | None],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    holdout: str,
) -> list[str]:
    """Each image's split: a seeded stratified split of images without one, else the given splits, with val
    held out as test (holdout=auto) and carved out of train where none is given (build_index says how)."""
    if any(split is None for split in given):
        return _stratified_split(labels, val_fraction, test_fraction, seed)
    splits = list(given)
    if holdout == "auto" and "val" in splits and "test" not in splits:
        splits = ["test" if s == "val" else s for s in splits]
        log.info(
            "val split held out as the test split, scored once by the validate stage; the checkpoint "
            "is picked on %.0f%% of train (data.val_fraction; data.holdout=none: val picks it)",
            100 * val_fraction,
        )
    if "val" not in splits:  # train (and test) folders only: carve val out of train
        train_idx = [i for i, s in enumerate(splits) if s == "train"]
        carved = _stratified_split([labels[i] for i in train_idx], val_fraction, 0.0, seed)
        for i, s in zip(train_idx, carved, strict=True):
            splits[i] = s
    return splits


def read_source(
    root: Path, labelling: Labelling
) -> tuple[list[str], list[tuple[str, tuple, str | None]], str]:
    """Class names, (path, its class names, given split or None) per image, and the task."""
    if not labels_file.is_labels_file(root):
        if labelling.task == MULTILABEL:
            raise PipelineError(f"data.task=multilabel needs a labels file (CSV or JSON lines), not {root}")
        class_names, items = scan_folder(root)
        return class_names, [(path, (name,), split) for path, name, split in items], MULTICLASS
    several = labelling.task == "auto" and labels_file.several_labels(root, labelling.separator)
    if several:
        log.info(
            "%s names several labels for some images (joined by %r): a multi-label task "
            "(data.task=multiclass reads each labels field as one class)", root.name, labelling.separator,
        )  # fmt: skip
    if root.suffix.lower() == ".csv" and not several and labelling.task != MULTILABEL:
        class_names, items = read_manifest(root)
        return class_names, [(path, (name,), split) for path, name, split in items], MULTICLASS
    rows = labels_file.read_rows(root, labelling.separator, labelling.stop_on_bad_row)
    class_names, _ = _check_classes(root, [(r.path, name, r.split) for r in rows for name in r.labels])
    task = MULTILABEL if several or labelling.task == MULTILABEL else MULTICLASS
    if task == MULTICLASS and any(len(r.labels) > 1 for r in rows):
        raise PipelineError(f"{root} names several labels for an image: data.task=multiclass cannot read it")
    return class_names, [(r.path, r.labels, r.split) for r in rows], task


# a class with fewer training images gives none to the calib split: on 10 photos a class, one image each
# cost 0.10 of test accuracy (docs/reports/trust.md)
MIN_CLASS_FOR_CALIB = 30


def carve_calib(labels: list[int], splits: list[str], fraction: float, seed: int) -> list[str]:
    """round(fraction x class size) of the training images of each class with at least MIN_CLASS_FOR_CALIB
    of them to the calib split (seeded apart from the val/test split). No calib split is an answer too: the
    calibrate stage falls back to val and says so."""
    train_counts = Counter(labels[i] for i, s in enumerate(splits) if s == "train")
    train_idx = [
        i for i, s in enumerate(splits) if s == "train" and train_counts[labels[i]] >= MIN_CLASS_FOR_CALIB
    ]
    if not train_idx:
        return splits
    try:
        carved = _stratified_split([labels[i] for i in train_idx], fraction, 0.0, seed + 1)
    except PipelineError:  # too few images to carve any
        return splits
    splits = list(splits)
    for i, s in zip(train_idx, carved, strict=True):
        splits[i] = "calib" if s == "val" else "train"
    return splits


def require_train_images(index: DatasetIndex) -> DatasetIndex:
    """Every class needs training images; checked again after files are skipped or dropped."""
    missing = [name for name, n in index.counts().get("train", {}).items() if n == 0]
    if missing or "train" not in index.counts():
        raise PipelineError(f"classes without training images: {', '.join(missing) or 'all'}")
    return index


def resolve_root(root: str | None, cache_dir: str) -> Path:
    """The user's folder, or the built-in digits written under cache_dir when root is null."""
    return Path(root).expanduser() if root else digits_folder(Path(cache_dir))
