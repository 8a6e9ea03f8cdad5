"""`make bench-scale`: how the data stage's time and memory grow with the number of images.

For each size, a folder of small distinct images (10 classes of 32x32 PNG noise patterns, 1% of them exact
copies and 1% re-encoded near copies) is written once, then `python -m pipeline stages=[data]
data.audit=false` runs on it cold (empty caches) and warm; wall time, images/s and peak memory (the
process's maximum resident set) are recorded, with the near-duplicate search time over the inspected hashes
and the growth exponent between consecutive sizes (1.0 = linear). Writes bench/scale.md and bench/scale.json.

    python scripts/bench_scale.py [--sizes 10000,50000,200000]
"""

import argparse
import json
import math
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_common import ROOT, machine, machine_line, run_data_stage, write_report
from PIL import Image

CLASSES = 10


def synthesize(folder: Path, n: int, seed: int) -> None:
    """n distinct 32x32 PNGs in CLASSES folders; 1% exact copies and 1% JPEG-recompressed near copies."""
    rng = np.random.default_rng(seed)
    for c in range(CLASSES):
        (folder / f"class_{c}").mkdir(parents=True)
    copies = max(1, n // 100)
    for i in range(n - 2 * copies):
        pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).resize((32, 32)).save(folder / f"class_{i % CLASSES}" / f"{i:07d}.png")
    originals = sorted(folder.rglob("*.png"))[:copies]
    for k, original in enumerate(originals):
        (folder / original.parent.name / f"copy_{k:07d}.png").write_bytes(original.read_bytes())
        Image.open(original).save(folder / original.parent.name / f"near_{k:07d}.jpg", quality=90)


def data_stage(data: Path, work: Path, name: str) -> dict:
    """One `stages=[data]` run in a child process: wall time and its peak resident memory."""
    wall, done = run_data_stage(data, work, name, "data.audit=false", wrapper=("/usr/bin/time", "-f", "%M"))
    return {"wall_s": round(wall, 1), "peak_mb": round(int(done.stderr.strip().splitlines()[-1]) / 1024)}


def search_time(cache: Path) -> tuple[float, int]:
    """The near-duplicate search over every cached hash (default distance 2): seconds and pairs found."""
    from pipeline.data.hash_search import near_duplicate_pairs

    with sqlite3.connect(cache) as db:
        hashes = [json.loads(info)["phash"] for (info,) in db.execute("SELECT info FROM files")]
    start = time.perf_counter()
    pairs = near_duplicate_pairs(hashes, 2)
    return round(time.perf_counter() - start, 2), len(pairs)


def exponent(rows: list[dict], key: str) -> list[float | None]:
    """Growth exponent of `key` between each size and the one before: log(t2/t1) / log(n2/n1)."""
    out: list[float | None] = [None]
    for a, b in zip(rows, rows[1:], strict=False):
        out.append(round(math.log(b[key] / a[key]) / math.log(b["images"] / a["images"]), 2))
    return out


def markdown(rows: list[dict], info: dict) -> str:
    lines = [
        "# Data stage at scale",
        "",
        f"{machine_line(info)}; `stages=[data] data.audit=false`.",
        "",
        "| images | cold | warm | warm / cold | images/s cold | peak memory cold | hash search (pairs) | "
        "growth exponent cold |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row, grows in zip(rows, exponent(rows, "cold_s"), strict=True):
        lines.append(
            f"| {row['images']:,} | {row['cold_s']:.1f} s | {row['warm_s']:.1f} s "
            f"| {row['warm_s'] / row['cold_s']:.2f} | {row['images'] / row['cold_s']:.0f} "
            f"| {row['cold_peak_mb']} MB | {row['search_s']:.2f} s ({row['pairs']}) "
            f"| {'' if grows is None else grows} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,50000", help="comma-separated image counts")
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            work = Path(tmp)
            synthesize(work / "data", n, seed=n)
            cold, warm = (data_stage(work / "data", work, name) for name in ("cold", "warm"))
            search_s, pairs = search_time(work / "cache" / "inspection.sqlite")
        rows.append({"images": n, "cold_s": cold["wall_s"], "warm_s": warm["wall_s"],
                     "cold_peak_mb": cold["peak_mb"], "warm_peak_mb": warm["peak_mb"],
                     "search_s": search_s, "pairs": pairs})  # fmt: skip
        print(f"bench_scale: {json.dumps(rows[-1])}", flush=True)
    info = machine(load_before)
    write_report(args.out, "scale", markdown(rows, info), {"machine": info, "sizes": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
