"""Images decoded and resized once, kept in a memory-mapped file, instead of decoded again every epoch.

Every transform starts with the same deterministic step, decode then `resize_and_crop` to the model's input
size (pipeline.data.transforms); this caches its uint8 output, so augmentation runs on the cached arrays and
sees exactly the pixels it saw before. On 2 cores, decoding each JPEG again each epoch in loader workers took
CPU from the two compute threads for images that do not change.

One file per key (the images' content fingerprints, in order, and the resize settings) under
`data.cache_dir/resized/`, written whole and then renamed into place, read through the page cache by every
loader worker (np.memmap, opened in each process: a memmap would be pickled by value). `data.resized_cache`:
`auto` builds it when it fits `data.resized_cache_mb`, else `always` or `never`.
"""

import hashlib
import logging
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from pipeline.cpu_share import worker_context
from pipeline.data.decode import decode_checked
from pipeline.data.resize import resize_and_crop

log = logging.getLogger("pipeline.data")
VERSION = 1  # of the file layout and the resize code: a change writes new files
CACHED_SPLITS = ("train", "val")  # what training reads; the test split stays untouched until validate


@dataclass
class ResizedImages:
    """(count, side, side, 3) uint8 pixels in a file; `rows` maps an image path to its row."""

    path: Path
    count: int
    side: int
    rows: dict[str, int]
    _array: np.ndarray | None = field(default=None, repr=False, compare=False)

    def pixels(self, image_path: str) -> np.ndarray:
        if self._array is None:  # opened lazily, once per process
            self._array = np.memmap(self.path, np.uint8, "r", shape=(self.count, self.side, self.side, 3))
        return np.array(self._array[self.rows[image_path]])  # a copy: transforms may write to it

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}


def nbytes(count: int, side: int) -> int:
    return count * side * side * 3


def cache_key(fingerprints: list[str], side: int, interpolation: str, crop_pct: float | None) -> str:
    text = f"{VERSION}|{side}|{interpolation}|{crop_pct}|" + ",".join(fingerprints)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _decode_resized(path: str, side: int, interpolation: str, crop_pct: float | None) -> np.ndarray:
    return resize_and_crop(decode_checked(path), side, interpolation, crop_pct)


def load_or_build(
    paths: list[str], fingerprints: list[str], pre, folder: Path, workers: int
) -> ResizedImages:
    """The cached pixels of `paths` (their content `fingerprints` in the same order) for Preprocess `pre`;
    decoded in `workers` processes the first time."""
    side = pre.image_size
    key = cache_key(fingerprints, side, pre.interpolation, pre.crop_pct)
    target = folder / f"{key}.u8"
    rows = {p: i for i, p in enumerate(paths)}
    if target.is_file() and target.stat().st_size == nbytes(len(paths), side):
        return ResizedImages(target, len(paths), side, rows)
    folder.mkdir(parents=True, exist_ok=True)
    decode = partial(_decode_resized, side=side, interpolation=pre.interpolation, crop_pct=pre.crop_pct)
    handle, staging = tempfile.mkstemp(prefix=f".{key}-", dir=folder)
    os.close(handle)
    try:
        out = np.memmap(staging, np.uint8, "w+", shape=(len(paths), side, side, 3))
        if workers > 1 and len(paths) > 64:
            with ProcessPoolExecutor(workers, mp_context=worker_context()) as pool:
                for i, pixels in enumerate(pool.map(decode, paths, chunksize=32)):
                    out[i] = pixels
        else:
            for i, path in enumerate(paths):
                out[i] = decode(path)
        out.flush()
        del out
        os.replace(staging, target)  # atomic: a crash never leaves a half-written cache under its key
    finally:
        Path(staging).unlink(missing_ok=True)
    size_mb = nbytes(len(paths), side) / 2**20
    log.info("decoded and resized %d images to %d px once: %s (%.0f MB)", len(paths), side, target, size_mb)
    return ResizedImages(target, len(paths), side, rows)
