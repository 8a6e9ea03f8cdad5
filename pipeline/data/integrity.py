"""Integrity checks: decode every file, hash it, and find corrupt files, duplicates, leakage and conflicts.

Files are decoded (not judged by suffix) in worker processes; results are cached by (path, size, mtime),
so a rerun over an unchanged folder only stats the files. Perceptual hashes come from `imagehash`.

imagehash and PIL load in inspect_file, the one function that decodes: the stages that import this
module for its fingerprints (train, validate) load neither.
"""

import contextlib
import errno
import functools
import hashlib
import json
import os
import sqlite3
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from pipeline.cpu_share import worker_context
from pipeline.data.decode import upright
from pipeline.data.hash_search import near_duplicate_pairs
from pipeline.data.quality import measure
from pipeline.data.sources import DatasetIndex, Record, label_text, require_train_images
from pipeline.errors import PipelineError, sqlite_full
from pipeline.progress import Progress

CACHE_VERSION = 3
INSPECT_SIDE = 1024


@dataclass(frozen=True, slots=True)  # slots: a third of the memory per file, at a million files
class FileInfo:
    path: str
    ok: bool
    error: str = ""
    width: int = 0
    height: int = 0
    mode: str = ""
    format: str = ""
    bytes: int = 0
    sha256: str = ""
    phash: str = ""  # 64-bit perceptual hash, hex
    rgb_mean: tuple[float, ...] = ()  # per-channel mean of the RGB pixels in [0, 1]
    rgb_sq_mean: tuple[float, ...] = ()  # per-channel mean of their squares (for the std)
    quality: dict[str, float] = field(default_factory=dict)  # pipeline.data.quality.measure


def inspect_file(path: str, max_pixels: int) -> FileInfo:
    """Decode one file to its end; a truncated, empty, non-image or too large file comes back with ok=False.
    Time and memory stay bounded at any size: a JPEG is decoded at 1/2 to 1/8 scale (PIL's draft mode) and
    the pixel statistics are taken on a copy of at most INSPECT_SIDE px."""
    import imagehash
    from PIL import Image

    try:
        data = Path(path).read_bytes()
    except OSError as err:  # gone since the folder was listed, or not readable by this user
        return FileInfo(path, False, f"{type(err).__name__}: {err.strerror}")
    if not data:
        return FileInfo(path, False, "zero-byte file")
    try:
        with warnings.catch_warnings():  # PIL warns from 89 MP; the cap below decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
        with img:
            (width, height), mode, kind = img.size, img.mode, img.format or ""
            if width * height > max_pixels:
                too_large = (
                    f"{width}x{height} = {width * height:,} pixels, above data.max_pixels={max_pixels:,}"
                )
                return FileInfo(path, False, too_large, width=width, height=height, bytes=len(data))
            img.draft("RGB", (INSPECT_SIDE, INSPECT_SIDE))  # JPEG only; other formats ignore it
            img.load()  # decodes every pixel: truncated files fail here, not at open
            img = upright(img)  # hashed and measured upright, as decode_rgb trains on it
            small = img.convert("RGB")
            small.thumbnail((INSPECT_SIDE, INSPECT_SIDE))
            rgb = np.asarray(small, dtype=np.float64).reshape(-1, 3) / 255.0
            info = FileInfo(
                path,
                True,
                width=width,
                height=height,
                mode=mode,
                format=kind,
                bytes=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                phash=str(imagehash.phash(img)),
                rgb_mean=tuple(rgb.mean(0).round(6).tolist()),
                rgb_sq_mean=tuple((rgb**2).mean(0).round(6).tolist()),
                quality=measure(img),
            )
    except Image.DecompressionBombError as err:  # PIL's own limit (2 x Image.MAX_IMAGE_PIXELS) at open
        return FileInfo(path, False, f"too large for PIL to open: {err}", bytes=len(data))
    except Exception as err:  # PIL raises many types for bad files; all mean "unreadable"
        return FileInfo(path, False, f"{type(err).__name__}: {err}", bytes=len(data))
    return info


class InspectionCache:
    """FileInfo by absolute path in SQLite, one row per file, valid while its size and mtime are unchanged.

    Rows are committed as files are decoded, so an interrupted inspection keeps what it did; parallel runs
    share one cache (SQLite's write-ahead log and a busy timeout). A cache of another CACHE_VERSION, or one
    that is not a database, is started afresh.
    """

    COMMIT_EVERY = 512

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self.full_disk_named():
            try:
                self.db = self._open(path)
            except sqlite3.DatabaseError as err:  # damaged, or not a database: rebuilt, never trusted
                if sqlite_full(err):
                    raise
                path.unlink(missing_ok=True)
                self.db = self._open(path)
        self.pending = 0

    @contextlib.contextmanager
    def full_disk_named(self) -> Iterator[None]:
        """SQLite's "database or disk is full" as the OSError it is (ENOSPC), naming the cache's file."""
        try:
            yield
        except sqlite3.OperationalError as err:
            if sqlite_full(err):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path)) from err
            raise

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, timeout=60)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS files (path BLOB PRIMARY KEY, size INTEGER, mtime_ns INTEGER,"
            " version INTEGER, info TEXT)"
        )
        return db

    @staticmethod
    def _key(path: str) -> bytes:
        return os.fsencode(os.path.abspath(path))  # bytes: names that are not UTF-8 are keys too

    LOOKUP_CHUNK = 900  # paths per SELECT ... IN (...): under SQLite's limit on bound parameters

    def lookup(self, paths: list[str]) -> dict[str, FileInfo]:
        """The cached FileInfo of each path whose size and mtime are unchanged, read in a few queries (one
        query per file cost more than the decode it saves on a warm run of a large folder)."""
        rows: dict[bytes, tuple] = {}
        keys = [self._key(p) for p in paths]
        for i in range(0, len(keys), self.LOOKUP_CHUNK):
            chunk = keys[i : i + self.LOOKUP_CHUNK]
            query = "SELECT path, size, mtime_ns, info FROM files WHERE version = ? AND path IN ("
            rows.update(
                (row[0], row[1:])
                for row in self.db.execute(query + ",".join("?" * len(chunk)) + ")", (CACHE_VERSION, *chunk))
            )
        hits = {}
        for path, key in zip(paths, keys, strict=True):
            row = rows.get(key)
            if row is None:
                continue
            try:
                st = os.stat(path)
            except OSError:  # gone since the folder was listed: inspected again, and reported unreadable
                continue
            if (row[0], row[1]) == (st.st_size, st.st_mtime_ns):
                hits[path] = self._info(path, row[2])
        return hits

    @staticmethod
    def _info(path: str, text: str) -> FileInfo:
        info = json.loads(text)
        info.update(path=path, rgb_mean=tuple(info["rgb_mean"]), rgb_sq_mean=tuple(info["rgb_sq_mean"]))
        return FileInfo(**info)

    def put(self, info: FileInfo) -> None:
        st = os.stat(info.path)
        with self.full_disk_named():
            self.db.execute(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)",
                (self._key(info.path), st.st_size, st.st_mtime_ns, CACHE_VERSION, json.dumps(asdict(info))),
            )
        self.pending += 1
        if self.pending >= self.COMMIT_EVERY:
            self.save()

    def save(self) -> None:
        with self.full_disk_named():
            self.db.commit()
        self.pending = 0


def inspect_files(paths: list[str], cache_path: Path | None, workers: int, max_pixels: int) -> list[FileInfo]:
    """FileInfo for every path, in order; uncached files are decoded in `workers` processes. Only readable
    files are cached: a failed one is tried again next time (it may have been fixed, or the cap raised)."""
    inspect = functools.partial(inspect_file, max_pixels=max_pixels)
    cache = InspectionCache(cache_path) if cache_path else None
    infos = cache.lookup(paths) if cache else {}
    todo = [p for p in paths if p not in infos]
    if todo:
        progress = Progress("data", "decoded and hashed files", len(todo))
        with contextlib.ExitStack() as stack:
            if cache:
                stack.callback(cache.save)  # also when interrupted: what was decoded is kept
            if workers > 1 and len(todo) > 64:
                pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=worker_context()))
                fresh = pool.map(inspect, todo, chunksize=64)
            else:
                fresh = map(inspect, todo)
            for info in fresh:
                progress.advance()
                infos[info.path] = info
                if cache and info.ok:
                    cache.put(info)
    return [infos[p] for p in paths]


FINGERPRINT_CHARS = 16  # 64 bits of the SHA-256: no accidental collision among millions of images


def fingerprint(info: FileInfo) -> str:
    return info.sha256[:FINGERPRINT_CHARS]


def fingerprints(infos: list[FileInfo]) -> list[str]:
    """Content fingerprints of the readable files, sorted: what a checkpoint keeps of its training set, so
    validation can tell when it is shown images the model was trained on, whatever their paths are now."""
    return sorted({fingerprint(i) for i in infos if i.ok})


@dataclass
class Findings:
    corrupt: list[dict]
    exact_duplicates: list[dict]  # pairs with the same bytes
    near_duplicates: list[dict]  # within the perceptual distance, or alike in content (`embedding`)
    leakage: list[dict]  # exact or near pairs that sit in different splits
    label_conflicts: list[dict]  # exact or near pairs under different labels

    def summary(self) -> dict[str, int]:
        return {k: len(v) for k, v in asdict(self).items()}


def find_problems(
    records: list[Record],
    infos: list[FileInfo],
    class_names: list[str],
    max_distance: int,
    similar: list[tuple[int, int, float]] = (),
) -> Findings:
    """`similar`: pairs (positions among the readable records, cosine similarity) the audit found alike."""
    corrupt = [{"path": i.path, "error": i.error} for i in infos if not i.ok]
    good = [(r, i) for r, i in zip(records, infos, strict=True) if i.ok]
    by_sha: dict[str, list[int]] = {}
    for k, (_, info) in enumerate(good):
        by_sha.setdefault(info.sha256, []).append(k)
    exact = {(a, b) for group in by_sha.values() for n, a in enumerate(group) for b in group[n + 1 :]}
    near = {(a, b): d for a, b, d in near_duplicate_pairs([i.phash for _, i in good], max_distance)}

    def describe(a: int, b: int, kind: str, distance: float) -> dict:  # bits, or cosine distance
        (ra, _), (rb, _) = good[a], good[b]
        return {
            "kind": kind,
            "distance": distance,
            "a": ra.path,
            "a_split": ra.split,
            "a_label": label_text(ra, class_names),
            "b": rb.path,
            "b_split": rb.split,
            "b_label": label_text(rb, class_names),
        }

    pairs = [describe(a, b, "exact", 0) for a, b in sorted(exact)]
    pairs += [describe(a, b, "near", d) for (a, b), d in sorted(near.items()) if (a, b) not in exact]
    known = exact | set(near)
    pairs += [describe(a, b, "embedding", round(1 - s, 4)) for a, b, s in similar if (a, b) not in known]
    return Findings(
        corrupt=corrupt,
        exact_duplicates=[p for p in pairs if p["kind"] == "exact"],
        near_duplicates=[p for p in pairs if p["kind"] != "exact"],
        leakage=[p for p in pairs if p["a_split"] != p["b_split"]],
        label_conflicts=[p for p in pairs if p["a_label"] != p["b_label"]],
    )


def apply_policies(index: DatasetIndex, findings: Findings, on_corrupt: str, on_leakage: str) -> DatasetIndex:
    """Skip or refuse corrupt files; warn about, refuse, or drop the held-out side of leaking pairs."""
    if findings.corrupt and on_corrupt == "fail":
        first = findings.corrupt[0]
        raise PipelineError(
            f"{len(findings.corrupt)} unreadable image(s), e.g. {first['path']} ({first['error']}); "
            "fix them or set data.on_corrupt=skip"
        )
    if findings.leakage and on_leakage == "fail":
        first = findings.leakage[0]
        raise PipelineError(
            f"{len(findings.leakage)} duplicate pair(s) across splits, e.g. "
            f"{first['a']} ({first['a_split']}) and {first['b']} ({first['b_split']}); "
            "set data.on_leakage=drop to remove the held-out copies"
        )
    removed = {c["path"] for c in findings.corrupt}
    if on_leakage == "drop":
        for pair in findings.leakage:
            removed.add(pair["b"] if pair["b_split"] != "train" else pair["a"])
    kept = [r for r in index.records if r.path not in removed]
    if not kept:
        raise PipelineError(f"no readable images in {index.root}: all {len(index.records)} files are corrupt")
    return require_train_images(replace(index, records=kept))
