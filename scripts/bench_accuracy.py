"""`make bench-accuracy`: does the default training recipe win or tie on every real folder, and what it costs.

Folders, each skipped with a line when absent (../shared/datasets): the hand signs (photos far from ImageNet),
the flowers (close to it), a seeded 10-a-class subset of the flowers' train folder (test folder whole), the
clothing photos (imbalanced, with their own train/validation/test folders) and the built-in digits; or, with
`--matrix DIR`, every shape of the folder matrix `../shared/folder_matrix.py DIR` built (its manifest.json).
On each, the default recipe runs `--repeats` times (seeds 42, 43, ...) for the spread and every other recipe
once (on the matrix every recipe `--repeats` times), one run after another, never two at once: whole pipeline
runs (data, sanity, train, calibrate, validate), their test accuracy, macro-F1, balanced accuracy and wall
time. On an imbalanced copy of the hand signs (classes cut to 50%, 20% and 10% in turn, as symbolic links) the
default handling of imbalance runs against class weights and against none. Writes bench/accuracy.md and
bench/accuracy.json.

    python scripts/bench_accuracy.py [--folders flowers,flowers_10] [--only default,probe] [--repeats 3]
    python scripts/bench_accuracy.py --matrix DIR --only default,probe
"""

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench_common import (
    CLOTHING,
    FLOWERS,
    HAND_SIGNS,
    ROOT,
    SHARED,
    machine,
    machine_line,
    run_pipeline,
    write_report,
)

PRETRAINED = ["model=efficientnet_lite0"]
RECIPES = {  # name -> (what it is, overrides); "default" is the baseline every other is judged against
    "default": ("EfficientNet-Lite0, ImageNet weights, the default recipe (finetune=auto)", PRETRAINED),
    "probe": ("same weights, linear probe (finetune=linear_probe)", [*PRETRAINED, "finetune=linear_probe"]),
    "one_rate": (
        "same weights, head first, then every layer at one lr, no averaging (the default until 2026-12)",
        [*PRETRAINED, "finetune.backbone_lr_factor=1", "train.ema_decay=null"],
    ),
    "no_ema": ("same weights, the default without weight averaging", [*PRETRAINED, "train.ema_decay=null"]),
    "full": ("same weights, every layer at one lr from the first step", [*PRETRAINED, "finetune=full"]),
    "discriminative": (
        "same weights, head first, then backbone at 0.1x lr down to 0.01x at the stem (fastai's rates)",
        [*PRETRAINED, "finetune.backbone_lr_factor=0.1", "finetune.first_stage_lr_factor=0.01"],
    ),
    "scratch": ("ResNet-18 from random init (the default model)", ["model=resnet18"]),
    "lp_ft": (
        "same weights, the head fitted on cached features first, then every layer (finetune.head_fit=true)",
        [*PRETRAINED, "finetune.head_fit=true"],
    ),
    "probe_fit": (
        "same weights, the linear probe as that fit alone, no epoch (finetune.head_fit=true)",
        [*PRETRAINED, "finetune=linear_probe", "finetune.head_fit=true"],
    ),
    "lite1": ("EfficientNet-Lite1, ImageNet weights, the default recipe", ["model=efficientnet_lite1"]),
    "lite2": ("EfficientNet-Lite2, ImageNet weights, the default recipe", ["model=efficientnet_lite2"]),
}
IMBALANCED = {  # on the imbalanced copy of the hand signs
    "imbalanced_default": ("ResNet-18, imbalance handled by default", ["model=resnet18"]),
    "imbalanced_class_weights": (
        "ResNet-18, class-weighted loss, checkpoint by val/bal_acc",
        ["model=resnet18", "data.balance=class_weights"],
    ),
    "imbalanced_none": (
        "ResNet-18, no balancing, checkpoint by val/acc",
        ["model=resnet18", "data.balance=none", "objective=val/acc"],
    ),
}
KEEP = (1.0, 0.5, 0.2, 0.1)  # share of images kept per class in the imbalanced copy, cycling over classes
SMALL_PER_CLASS = 10  # training images per class in the flowers subset
METRICS = (
    "test/acc", "test/f1_macro", "test/bal_acc", "train/last_val_acc", "data/imbalance_ratio",
    "test/acc_ci_low", "test/acc_ci_high", "test/ece_uncalibrated", "test/ece", "val/temperature",
    "test/conformal_coverage", "test/conformal_set_size", "test/conformal_empty", "test/unknown_rate",
)  # fmt: skip
TIE = 0.01  # the default ties when its mean is within this of the best other recipe
# on the folder matrix, against the linear probe: no shape's mean below the probe's by more than the first,
# the mean over the shapes above it by the second
PROBE_SHORTFALL, PROBE_MARGIN = 0.005, 0.01


def imbalanced_copy(source: Path, target: Path, seed: int) -> Path:
    """source/<class>/* as symbolic links under target, class i keeping KEEP[i % 4] of its images."""
    rng = random.Random(seed)
    classes = sorted(p for p in source.iterdir() if p.is_dir())
    for i, class_dir in enumerate(classes):
        files = sorted(p for p in class_dir.iterdir() if p.is_file())
        kept = rng.sample(files, max(1, round(KEEP[i % len(KEEP)] * len(files))))
        (target / class_dir.name).mkdir(parents=True)
        for f in kept:
            (target / class_dir.name / f.name).symlink_to(f.resolve())
    return target


def small_copy(source: Path, target: Path, per_class: int, seed: int) -> Path:
    """source/train/<class>/* cut to `per_class` seeded images a class and source/test whole, as links."""
    rng = random.Random(seed)
    for split in ("train", "test"):
        for class_dir in sorted(p for p in (source / split).iterdir() if p.is_dir()):
            files = sorted(p for p in class_dir.iterdir() if p.is_file())
            kept = rng.sample(files, min(per_class, len(files))) if split == "train" else files
            (target / split / class_dir.name).mkdir(parents=True)
            for f in kept:
                (target / split / class_dir.name / f.name).symlink_to(f.resolve())
    return target


def folder(path: Path) -> Callable[[Path, int], list[str] | None]:
    return lambda work, seed: ["data=folder", f"data.root={path}"] if path.is_dir() else None


def made(build: Callable[[Path, int], Path], source: Path) -> Callable[[Path, int], list[str] | None]:
    def data(work: Path, seed: int) -> list[str] | None:
        return ["data=folder", f"data.root={build(work, seed)}"] if source.is_dir() else None

    return data


FOLDERS = {  # name -> (what it is, its data overrides built under a work folder, the recipes run on it)
    "hand_signs": ("hand-sign photos, 10 classes, 100 px, flat folder", folder(HAND_SIGNS), RECIPES),
    "flowers": ("flower photos, 12 species, 224 px, train/ and test/", folder(FLOWERS), RECIPES),
    "flowers_10": (
        f"the flowers' train folder cut to {SMALL_PER_CLASS} a class (seeded), test/ whole",
        made(lambda work, seed: small_copy(FLOWERS, work / "flowers_10", SMALL_PER_CLASS, seed), FLOWERS),
        RECIPES,
    ),
    "clothing": ("clothing photos, 10 classes, ~400x533 px, 6.5:1, train/validation/test", folder(CLOTHING),
                 RECIPES),
    "digits": ("scikit-learn's 8x8 digit scans (built in)", lambda work, seed: ["data=digits"], RECIPES),
    "hand_signs_imbalanced": (
        "the hand signs with classes cut to 100/50/20/10% in turn (seeded links)",
        made(lambda work, seed: imbalanced_copy(HAND_SIGNS, work / "imbalanced", seed), HAND_SIGNS),
        IMBALANCED,
    ),
}  # fmt: skip


def matrix_folders(matrix: Path) -> dict:
    """FOLDERS' form for each shape of a built folder matrix, every recipe on it."""
    manifest = json.loads((matrix / "manifest.json").read_text())
    return {
        name: (
            f"folder matrix shape {name}",
            lambda work, seed, config=shape["config"]: config.split(),
            RECIPES,
        )
        for name, shape in manifest.items()
    }


def probe_margins(results: dict) -> dict | None:
    """The default's mean minus the probe's on each folder that ran both, and whether the matrix's rule
    holds: none short by more than PROBE_SHORTFALL, their mean at least PROBE_MARGIN."""
    margins = {}
    for name, folder_result in results.items():
        recipes = folder_result["recipes"]
        if "default" in recipes and "probe" in recipes:
            metric = judged_metric(recipes["default"])
            mean = {k: statistics.fmean(r[metric] for r in recipes[k]) for k in ("default", "probe")}
            margins[name] = mean["default"] - mean["probe"]
    if not margins:
        return None
    overall = statistics.fmean(margins.values())
    holds = min(margins.values()) >= -PROBE_SHORTFALL and overall >= PROBE_MARGIN
    return {"margins": margins, "overall": overall, "holds": holds}


def run_recipe(data: list[str], overrides: list[str], work: Path, name: str) -> dict:
    """One pipeline run in a child process; its wall time and the parent run's headline metrics."""
    stages = "stages=[data,sanity,train,calibrate,validate]"
    wall, run_id, metrics = run_pipeline([*data, *overrides, stages], work, name)
    unknown = {k: v for k, v in metrics.items() if k.startswith("test/ood_")}  # validate.ood_roots, if set
    return {"wall_s": round(wall, 1), "run_id": run_id, **{k: metrics.get(k) for k in METRICS}, **unknown}


def judged_metric(runs: list[dict]) -> str:
    """Macro-F1 on an imbalanced folder (accuracy rewards the big classes there), else accuracy."""
    return "test/f1_macro" if (runs[0].get("data/imbalance_ratio") or 1) >= 3 else "test/acc"


def verdict(recipes: dict[str, list[dict]]) -> dict | None:
    """The default's mean and worst run against the best other recipe's best run: won (its worst run is
    at least as good), tied (its mean within TIE) or lost."""
    if "default" not in recipes or len(recipes) < 2:
        return None
    metric = judged_metric(recipes["default"])
    scores = [r[metric] for r in recipes["default"]]
    best_name, best = max(
        ((name, max(r[metric] for r in runs)) for name, runs in recipes.items() if name != "default"),
        key=lambda item: item[1],
    )
    mean, worst = statistics.fmean(scores), min(scores)
    outcome = "won" if worst >= best else "tied" if mean >= best - TIE else "lost"
    return {"metric": metric, "default_mean": mean, "default_worst": worst, "best_other": best_name,
            "best_other_score": best, "outcome": outcome}  # fmt: skip


def spread(values: list[float | None], digits: int = 4) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return ""
    low, high = min(values), max(values)
    return f"{low:.{digits}f}" if low == high else f"{low:.{digits}f}-{high:.{digits}f}"


def unknown_inputs(runs: list[dict]) -> list[str]:
    """The default's runs against folders of strange images (validate.ood_roots via --set), if measured."""
    folders = sorted(
        {k.removeprefix("test/ood_").removesuffix("_auroc") for r in runs for k in r if k.endswith("_auroc")}
    )
    if not folders:
        return []
    lines = [
        "",
        "Unknown inputs, the default's runs: each folder of other images against the test split.",
        "",
        "| images | AUROC | accepted when 95% of test is (FPR) | flagged by the stored threshold |",
        "|---|---|---|---|",
    ]
    for name in folders:
        cells = [spread([r.get(f"test/ood_{name}_{k}") for r in runs]) for k in ("auroc", "fpr95", "flagged")]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return lines


def markdown(results: dict, info: dict) -> str:
    lines = [
        "# Does the default recipe win or tie on every real folder?",
        "",
        f"{machine_line(info)}. Budget: {info['budget']}. "
        "A range spans a recipe's runs (seeds 42, 43, ...): the default's, and on the folder matrix every "
        "recipe's; elsewhere other recipes ran once.",
    ]
    for name, folder_result in results.items():
        lines += ["", f"## {name}: {folder_result['what']}", ""]
        lines += [
            "| recipe | runs | test acc | test macro-F1 | test balanced acc | test ECE before / after "
            "calibration | wall time |",
            "|---|---|---|---|---|---|---|",
        ]
        for recipe, runs in folder_result["recipes"].items():
            cells = [spread([r[k] for r in runs]) for k in ("test/acc", "test/f1_macro", "test/bal_acc")]
            cells.append(
                " / ".join(spread([r.get(k) for r in runs], 3) for k in ("test/ece_uncalibrated", "test/ece"))
            )
            wall = spread([r["wall_s"] for r in runs], 0)
            what = folder_result["what_recipe"][recipe]
            lines.append(f"| {recipe}: {what} | {len(runs)} | {' | '.join(cells)} | {wall} s |")
        lines += unknown_inputs(folder_result["recipes"].get("default", []))
        v = folder_result.get("verdict")
        if v:
            lines += [
                "",
                f"Default {v['outcome']} on {v['metric']}: mean {v['default_mean']:.4f}, worst "
                f"{v['default_worst']:.4f}; best other {v['best_other']} {v['best_other_score']:.4f}.",
            ]
    margins = probe_margins(results)
    if margins:
        lines += ["", "## The default against the linear probe (mean of its runs minus the probe's)", ""]
        lines += [f"- {name}: {margin:+.4f}" for name, margin in margins["margins"].items()]
        lines += [
            f"- over the folders: {margins['overall']:+.4f}; the rule (none below -{PROBE_SHORTFALL}, "
            f"the mean at least +{PROBE_MARGIN}) {'holds' if margins['holds'] else 'does not hold'}"
        ]
    return "\n".join(lines) + "\n"  # fmt: skip


def run_folder(name: str, folder_spec: tuple, args, work: Path, budget: list[str], failures: list) -> dict:
    """Every chosen recipe on one folder, each `args.repeats` times where it repeats: its runs by recipe."""
    _, data_of, recipes = folder_spec
    data = data_of(work, args.seed)
    if data is None:
        print(f"bench_accuracy: {name}: its folder is not in {SHARED}: skipped", flush=True)
        return {}
    runs: dict[str, list[dict]] = {}
    for recipe in [r for r in recipes if not args.only or r in args.only.split(",")]:
        for repeat in range(args.repeats if recipe == "default" or args.matrix else 1):
            seeded = [*recipes[recipe][1], *budget, f"seed={args.seed + repeat}"]
            print(f"bench_accuracy: {name} {recipe} (run {repeat + 1}) ...", flush=True)
            try:
                row = run_recipe(data, seeded, work, f"{name}-{recipe}-{repeat}")
            except RuntimeError as err:  # one failed run is a finding, not the end of the bench
                print(f"bench_accuracy: {name} {recipe} failed: {err}", flush=True)
                failures.append({"folder": name, "recipe": recipe, "seed": args.seed + repeat,
                                 "error": str(err).splitlines()[-1]})  # fmt: skip
                continue
            print(f"bench_accuracy: {name} {recipe}: {json.dumps(row)}", flush=True)
            runs.setdefault(recipe, []).append(row)
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--folders", default=None, help=f"comma-separated, of {', '.join(FOLDERS)} (default: all)"
    )
    parser.add_argument("--matrix", type=Path, default=None, help="built by ../shared/folder_matrix.py")
    parser.add_argument("--only", default=None, help="comma-separated recipe names (default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the default recipe per folder")
    parser.add_argument("--image-size", type=int, default=None, help="data.image_size (default: preset's)")
    parser.add_argument("--epochs", type=int, default=None, help="trainer.max_epochs (default: the preset's)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--set", action="append", default=[], help="an override for every run, e.g. validate.ood_roots=[...]"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    args = parser.parse_args(argv)
    folders = matrix_folders(args.matrix) if args.matrix else FOLDERS
    names = args.folders.split(",") if args.folders else list(folders)
    unknown = set(names) - set(folders)
    if unknown:
        parser.error(f"unknown folder(s) {', '.join(sorted(unknown))}; choose from {', '.join(folders)}")
    budget = [f"data.image_size={args.image_size}"] if args.image_size else []
    budget += [f"trainer.max_epochs={args.epochs}"] if args.epochs else []
    budget += args.set
    results: dict[str, dict] = {}
    failures: list[dict] = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-accuracy-") as tmp:
        for name in names:
            runs = run_folder(name, folders[name], args, Path(tmp), budget, failures)
            if runs:
                what, _, recipes = folders[name]
                what_recipe = {recipe: recipes[recipe][0] for recipe in runs}
                results[name] = {
                    "what": what,
                    "what_recipe": what_recipe,
                    "recipes": runs,
                    "verdict": verdict(runs),
                }
    if not results and not failures:
        return 0
    budget_line = (" ".join(budget) or "none") + " beyond the presets' defaults"
    info = machine(load_before, budget=budget_line)
    text = markdown(results, info) + "".join(
        f"\nFailed: {f['folder']} {f['recipe']} (seed {f['seed']}): {f['error']}\n" for f in failures
    )
    margins = probe_margins(results)
    report = {"machine": info, "folders": results, "failures": failures, "probe_margins": margins}
    write_report(args.out, "accuracy", text, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
