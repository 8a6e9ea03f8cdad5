"""`make bench-review`: what accepting the review page's suggestions is worth, in test accuracy.

The folder (default: the hand signs in ../shared/datasets) is split once per class into train/ and test/
(seeded, 15% test, as symbolic links). For each seed, 10% of each class's training images are given the
label of one other class (a seeded pairing of the classes: class-conditional noise, as when two classes get
confused); the test labels stay true. Three whole runs per seed (data with its audit, train, validate;
EfficientNet-Lite0 and the default recipe), one after another: clean labels, noisy labels, and noisy labels
with `data.decisions=` every suggested relabel the noisy run's audit made in train/ accepted (what a user who
trusts the page does). Reported: the test accuracy of each, the share of the noise's loss recovered, and of
the planted errors how many the audit named and the accepted suggestions fixed, with the clean images the
suggestions made wrong. Writes bench/review.md and bench/review.json.

    python scripts/bench_review.py [--data FOLDER] [--seeds 0,1,2] [--noise 0.1] [--set KEY=VALUE]
"""

import argparse
import csv
import os
import random
import statistics
import sys
import tempfile
from pathlib import Path

from bench_common import HAND_SIGNS, ROOT, machine, machine_line, run_pipeline, write_report

from pipeline.data import decisions as decisions_file
from pipeline.data.decisions import Decision, Decisions

TEST_SHARE = 0.15
RECIPE = ["data=folder", "model=efficientnet_lite0", "stages=[data,train,validate]"]


def split_folder(source: Path, target: Path, seed: int) -> dict[str, list[Path]]:
    """source/<class>/* linked as target/train|test/<class>/*, TEST_SHARE of each class in test (seeded); the
    training files by class."""
    rng = random.Random(seed)
    train: dict[str, list[Path]] = {}
    for class_dir in sorted(p for p in source.iterdir() if p.is_dir()):
        files = sorted(p for p in class_dir.iterdir() if p.is_file())
        test = set(rng.sample(range(len(files)), round(TEST_SHARE * len(files))))
        for i, f in enumerate(files):
            split = "test" if i in test else "train"
            (target / split / class_dir.name).mkdir(parents=True, exist_ok=True)
            (target / split / class_dir.name / f.name).symlink_to(f.resolve())
            if split == "train":
                train.setdefault(class_dir.name, []).append(f)
    return train


def noisy_folder(clean: Path, train: dict[str, list[Path]], target: Path, share: float, seed: int) -> dict:
    """The clean split with `share` of each class's training images under the class it is paired with (a
    seeded cycle through the classes): {training link: (its true class, whether it was moved)}."""
    rng = random.Random(seed)
    classes = sorted(train)
    cycle = rng.sample(classes, len(classes))
    paired = {c: cycle[(cycle.index(c) + 1) % len(cycle)] for c in classes}
    for f in (clean / "test").rglob("*"):
        if f.is_symlink():
            (target / f.relative_to(clean)).parent.mkdir(parents=True, exist_ok=True)
            (target / f.relative_to(clean)).symlink_to(f.resolve())
    truth = {}
    for label, files in train.items():
        wrong = set(rng.sample(range(len(files)), round(share * len(files))))
        for i, f in enumerate(files):
            shown = paired[label] if i in wrong else label
            link = target / "train" / shown / f"{label}_{f.name}"
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(f.resolve())
            truth[str(link)] = (label, i in wrong)
    return truth


def accepted_suggestions(audit_csv: Path, root: Path) -> dict[str, str]:
    """Every suggested relabel of a training image in the audit's label_issues.csv: {path: suggested}."""
    with audit_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    train = str(root / "train") + os.sep
    return {r["path"]: r["suggested_label"] for r in rows if r["path"].startswith(train)}


def one_seed(clean: Path, train: dict, work: Path, seed: int, share: float) -> dict:
    root = work / f"noisy-{seed}"
    truth = noisy_folder(clean, train, root, share, seed)
    planted = {path for path, (_, moved) in truth.items() if moved}
    runs = {}
    for name, data in (("clean", clean), ("noisy", root)):
        overrides = [*RECIPE, f"data.root={data}", f"seed={42 + seed}"]
        wall, _, metrics = run_pipeline(overrides, work, f"{name}-{seed}")
        runs[name] = {"test_acc": metrics["test/acc"], "wall_s": round(wall, 1)}
        print(f"bench_review: seed {seed} {name}: {runs[name]}", flush=True)
    suggestions = accepted_suggestions(work / "runs" / f"noisy-{seed}" / "audit" / "label_issues.csv", root)
    decided = {
        decisions_file.relative(path, str(root)): Decision("relabel", "label_issues", label)
        for path, label in suggestions.items()
    }
    file = work / f"decisions-{seed}.yaml"
    decisions_file.save(file, Decisions(f"noisy-{seed}", str(root), decided))
    overrides = [*RECIPE, f"data.root={root}", f"seed={42 + seed}", f"data.decisions={file}"]
    wall, _, metrics = run_pipeline(overrides, work, f"reviewed-{seed}")
    runs["reviewed"] = {"test_acc": metrics["test/acc"], "wall_s": round(wall, 1)}
    print(f"bench_review: seed {seed} reviewed: {runs['reviewed']}", flush=True)
    fixed = sum(suggestions[p] == truth[p][0] for p in planted & set(suggestions))
    introduced = sum(suggestions[p] != truth[p][0] for p in set(suggestions) - planted)  # clean made wrong
    lost = runs["clean"]["test_acc"] - runs["noisy"]["test_acc"]
    regained = runs["reviewed"]["test_acc"] - runs["noisy"]["test_acc"]
    return {
        "seed": seed, "runs": runs, "planted": len(planted), "named": len(planted & set(suggestions)),
        "suggested": len(suggestions), "fixed": fixed, "introduced": introduced,
        "recovered": regained / lost if lost > 0 else None,
    }  # fmt: skip


def markdown(results: list[dict], info: dict) -> str:
    lines = [
        "# What accepting the review page's suggestions is worth",
        "",
        f"{machine_line(info)}. {info['data']}: "
        f"{info['noise']:.0%} of each class's training labels moved to its paired class (seeded), test "
        "labels true; EfficientNet-Lite0, the default recipe.",
        "",
        "| seed | test acc clean | noisy | noisy + suggestions accepted | loss recovered | planted | "
        "named by the audit | suggestions | fixed | new errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        acc = [f"{r['runs'][k]['test_acc']:.4f}" for k in ("clean", "noisy", "reviewed")]
        recovered = "-" if r["recovered"] is None else f"{r['recovered']:.0%}"
        lines.append(
            f"| {r['seed']} | {' | '.join(acc)} | {recovered} | {r['planted']} | {r['named']} | "
            f"{r['suggested']} | {r['fixed']} | {r['introduced']} |"
        )
    shares = [r["recovered"] for r in results if r["recovered"] is not None]
    if shares:
        lines += ["", f"Loss recovered, mean over seeds: {statistics.fmean(shares):.0%}."]
    lost = sum(r["runs"]["clean"]["test_acc"] - r["runs"]["noisy"]["test_acc"] for r in results)
    if lost > 0:  # a seed whose noise cost a single image weighs as much as one whose noise cost ten
        regained = sum(r["runs"]["reviewed"]["test_acc"] - r["runs"]["noisy"]["test_acc"] for r in results)
        lines.append(f"Pooled over seeds (accuracy regained / accuracy lost): {regained / lost:.0%}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HAND_SIGNS, help="an image folder root/<class>/*")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--noise", type=float, default=0.1, help="share of each class's train labels moved")
    parser.add_argument("--set", action="append", default=[], help="an override for every run")
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    args = parser.parse_args(argv)
    RECIPE.extend(args.set)
    if not args.data.is_dir():
        print(f"bench_review: {args.data} not found: skipped (it needs real photos, see its docstring)")
        return 0
    load_before = os.getloadavg()[0]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-review-") as tmp:
        work = Path(tmp)
        train = split_folder(args.data, work / "clean", seed=0)
        for seed in (int(s) for s in args.seeds.split(",")):
            results.append(one_seed(work / "clean", train, work, seed, args.noise))
    info = machine(load_before, data=str(args.data), noise=args.noise)
    write_report(args.out, "review", markdown(results, info), {"machine": info, "seeds": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
