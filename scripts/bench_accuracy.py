"""`make bench-accuracy`: what each training recipe scores on a real photo folder, and what it costs.

Every recipe is one whole pipeline run (data, sanity, train, validate) at the same budget (image size,
epochs, batch), one after another, never two at once: test accuracy, macro-F1 and balanced accuracy on the
held-out test split, and wall time. Recipes: the default for pretrained weights (`finetune=auto`), the
same with discriminative rates, a linear probe, full fine-tuning at one rate and ResNet-18 from scratch;
then, on an imbalanced copy of the folder (some classes cut to 50%, 20% and 10% of their images, seeded,
as symbolic links), the default handling of imbalance against class weights and against none. The photos
are ../shared/datasets/sign_language_digits (skipped with a line when absent). Writes bench/accuracy.md and
bench/accuracy.json.

    python scripts/bench_accuracy.py [--data FOLDER] [--image-size 128] [--epochs 12] [--only default,probe]
"""

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import ROOT, child_env, machine, write_report

DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "sign_language_digits" / "Dataset"
PRETRAINED = ["model=efficientnet_lite0"]
RECIPES = {  # name -> (what it is, overrides)
    "default": ("EfficientNet-Lite0, ImageNet weights, the default recipe (finetune=auto)", PRETRAINED),
    "discriminative": (
        "same weights, head first, then backbone at 0.1x lr down to 0.01x at the stem (fastai's rates)",
        [*PRETRAINED, "finetune.backbone_lr_factor=0.1", "finetune.first_stage_lr_factor=0.01"],
    ),
    "probe": ("same weights, linear probe (finetune=linear_probe)", [*PRETRAINED, "finetune=linear_probe"]),
    "full": ("same weights, every layer at one lr (finetune=full)", [*PRETRAINED, "finetune=full"]),
    "scratch": ("ResNet-18 from random init (the default model)", ["model=resnet18"]),
}
IMBALANCED = {  # on the imbalanced copy
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
METRICS = ("test/acc", "test/f1_macro", "test/bal_acc", "train/last_val_acc", "data/imbalance_ratio")
RUN_ID = re.compile(r"MLflow run ([0-9a-f]{32})")


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


def run_recipe(data: Path, overrides: list[str], work: Path, name: str) -> dict:
    """One pipeline run in a child process; its wall time and the parent run's headline metrics."""
    command = [
        sys.executable, "-m", "pipeline", "data=folder", f"data.root={data}", *overrides,
        "stages=[data,sanity,train,validate]", f"tracking.dir={work / 'mlruns'}",
        f"hydra.run.dir={work / 'runs' / name}", f"data.cache_dir={work / 'cache'}",
    ]  # fmt: skip
    env = child_env()
    log = work / f"{name}.log"
    start = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.run(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - start
    text = log.read_text()
    if code != 0:
        raise RuntimeError(f"{name} exited with {code}; see {log}:\n" + "\n".join(text.splitlines()[-10:]))
    from mlflow.tracking import MlflowClient

    run_id = RUN_ID.search(text).group(1)
    metrics = MlflowClient(f"sqlite:///{work / 'mlruns' / 'mlflow.db'}").get_run(run_id).data.metrics
    return {"wall_s": round(wall, 1), "run_id": run_id, **{k: metrics.get(k) for k in METRICS}}


def markdown(rows: dict, info: dict) -> str:
    lines = [
        "# Accuracy on a real folder",
        "",
        f"{info['date']}, commit {info['commit']}, {info['cpu_count']} CPUs, load average "
        f"{info['load_before']:.2f} before and {info['load_after']:.2f} after. Data: {info['data']}; "
        f"budget: {info['budget']}.",
        "",
        "| recipe | test acc | test macro-F1 | test balanced acc | last epoch's val acc | wall time |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        cells = [row.get(k) for k in ("test/acc", "test/f1_macro", "test/bal_acc", "train/last_val_acc")]
        shown = " | ".join("" if v is None else f"{v:.4f}" for v in cells)
        lines.append(f"| {name}: {row['what']} | {shown} | {row['wall_s']:.0f} s |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="an image folder root/<class>/*")
    parser.add_argument("--image-size", type=int, default=None, help="data.image_size (default: preset's)")
    parser.add_argument("--epochs", type=int, default=None, help="trainer.max_epochs (default: the preset's)")
    parser.add_argument("--only", default=None, help="comma-separated recipe names")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"bench_accuracy: {args.data} not found: skipped (it needs real photos, see its docstring)")
        return 0
    budget = [f"seed={args.seed}"]
    budget += [f"data.image_size={args.image_size}"] if args.image_size else []
    budget += [f"trainer.max_epochs={args.epochs}"] if args.epochs else []
    chosen = set(args.only.split(",")) if args.only else set(RECIPES) | set(IMBALANCED)
    rows: dict[str, dict] = {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-accuracy-") as tmp:
        work = Path(tmp)
        skewed = imbalanced_copy(args.data, work / "imbalanced", args.seed)
        for recipes, data in ((RECIPES, args.data), (IMBALANCED, skewed)):
            for name, (what, overrides) in recipes.items():
                if name in chosen:
                    print(f"bench_accuracy: {name} ...", flush=True)
                    rows[name] = {"what": what, **run_recipe(data, [*overrides, *budget], work, name)}
                    print(f"bench_accuracy: {name}: {json.dumps(rows[name])}", flush=True)
    budget_line = " ".join(budget) + " (other settings: the presets' defaults)"
    info = machine(load_before, data=str(args.data), budget=budget_line)
    write_report(args.out, "accuracy", markdown(rows, info), {"machine": info, "recipes": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
