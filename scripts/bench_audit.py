"""`make bench-audit`: does the data audit find planted problems in a real photo folder, and at what cost.

A copy of the folder (symbolic links) gets 5% of its images moved to another class folder (seeded) and 10
off-domain images (4 rendered "image not found" placeholders, 3 flat colours, 3 scikit-learn digit scans
scaled up). `python -m pipeline stages=[data]` runs on it twice, cold (empty caches) and warm; the audit's
CSVs are scored: recall and precision of the moved images in audit/label_issues.csv, and how many
off-domain images audit/outliers.csv or audit/quality.csv name. The photos are
../shared/datasets/sign_language_digits (skipped with a line when absent). Writes bench/audit.md and .json.

    python scripts/bench_audit.py [--data FOLDER] [--noise 0.05] [--seed 0]
"""

import argparse
import csv
import os
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
from bench_common import HAND_SIGNS, ROOT, machine, machine_line, run_data_stage, write_report
from PIL import Image, ImageDraw

DEFAULT_DATA = HAND_SIGNS
PLACEHOLDERS = ("Sorry, this image\ncould not be found", "IMAGE NOT\nAVAILABLE", "404", "no preview")


def noisy_copy(source: Path, target: Path, share: float, seed: int) -> set[str]:
    """source/<class>/* linked under target, `share` of them under another class; the moved paths."""
    rng = random.Random(seed)
    classes = sorted(p.name for p in source.iterdir() if p.is_dir())
    files = sorted((c, f) for c in classes for f in (source / c).iterdir() if f.is_file())
    moved = set(rng.sample(range(len(files)), round(share * len(files))))
    wrong = set()
    for c in classes:
        (target / c).mkdir(parents=True)
    for i, (label, f) in enumerate(files):
        link = target / label / f.name
        if i in moved:  # renamed too: two classes may hold files of the same name
            link = target / rng.choice([c for c in classes if c != label]) / f"{label}_{f.name}"
            wrong.add(str(link))
        link.symlink_to(f.resolve())
    return wrong


def off_domain_images(target: Path, classes: list[str], seed: int) -> set[str]:
    """10 images no photo folder should hold, spread over the class folders; their paths."""
    from sklearn.datasets import load_digits

    rng = random.Random(seed)
    images = []
    for text in PLACEHOLDERS:
        img = Image.new("RGB", (100, 100), (240, 240, 240))
        ImageDraw.Draw(img).multiline_text((8, 35), text, fill=(90, 90, 90))
        images.append(img)
    images += [
        Image.new("RGB", (100, 100), colour) for colour in ((255, 255, 255), (30, 30, 30), (200, 40, 40))
    ]
    for scan in load_digits().images[:3]:
        images.append(Image.fromarray((scan * 255 / 16).astype(np.uint8)).resize((100, 100)).convert("RGB"))
    paths = set()
    for n, img in enumerate(images):
        path = target / rng.choice(classes) / f"off_domain_{n}.png"
        img.save(path)
        paths.add(str(path))
    return paths


def audited_run(data: Path, work: Path, name: str) -> dict:
    """One `stages=[data]` run: wall time, the audit's own time, and the paths each audit CSV names."""
    wall, _ = run_data_stage(data, work, name)
    out = work / "runs" / name
    found = {}
    for table in ("label_issues", "outliers", "quality"):
        with (out / "audit" / f"{table}.csv").open() as f:
            found[table] = {row["path"] for row in csv.DictReader(f)}
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'mlruns' / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    newest = client.search_runs(experiments, "attributes.run_name = 'data'", order_by=["start_time DESC"])
    return {"wall_s": round(wall, 1), "audit_s": newest[0].data.metrics["data/audit_seconds"], "found": found}


def score(found: dict, moved: set[str], off_domain: set[str]) -> dict:
    flagged = found["label_issues"]
    hits = len(flagged & moved)
    return {
        "moved": len(moved),
        "label_issue_rows": len(flagged),
        "label_recall": round(hits / len(moved), 3),
        "label_precision": round(hits / max(1, len(flagged)), 3),
        "off_domain_found": len(off_domain & (found["outliers"] | found["quality"])),
        "outlier_rows": len(found["outliers"]),
        "outlier_rows_in_domain": len(found["outliers"] - off_domain),
        "quality_rows": len(found["quality"]),
    }


def markdown(result: dict, info: dict) -> str:
    s = result["scores"]
    return "\n".join([
        "# Data audit on a real folder with planted problems",
        "",
        f"{machine_line(info)}. Data: {info['data']} "
        f"({info['images']} images): {s['moved']} moved to a wrong class (seed {info['seed']}) and 10 "
        "off-domain images added.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| moved images named in label_issues.csv (recall) | {s['label_recall']:.3f} |",
        f"| label_issues.csv rows that were moved (precision) | {s['label_precision']:.3f} "
        f"({s['label_issue_rows']} rows) |",
        f"| off-domain images in outliers.csv or quality.csv | {s['off_domain_found']} of 10 |",
        f"| outliers.csv rows that are real photos | {s['outlier_rows_in_domain']} of {s['outlier_rows']} |",
        f"| audit time (data/audit_seconds), cold / warm | {result['cold']['audit_s']:.1f} s / "
        f"{result['warm']['audit_s']:.1f} s |",
        f"| `stages=[data]` wall time, cold / warm | {result['cold']['wall_s']:.1f} s / "
        f"{result['warm']['wall_s']:.1f} s |",
    ]) + "\n"  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="an image folder root/<class>/*")
    parser.add_argument("--noise", type=float, default=0.05, help="share of images moved to a wrong class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"bench_audit: {args.data} not found: skipped (it needs real photos, see its docstring)")
        return 0
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        work = Path(tmp)
        data = work / "data"
        moved = noisy_copy(args.data, data, args.noise, args.seed)
        off_domain = off_domain_images(data, sorted(p.name for p in data.iterdir()), args.seed)
        runs = {name: audited_run(data, work, name) for name in ("cold", "warm")}
        images = sum(1 for _ in data.rglob("*.*"))
    info = machine(load_before, data=str(args.data), images=images, seed=args.seed)
    result = {"scores": score(runs["cold"]["found"], moved, off_domain)}
    result |= {name: {k: v for k, v in run.items() if k != "found"} for name, run in runs.items()}
    write_report(args.out, "audit", markdown(result, info), {"machine": info, **result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
