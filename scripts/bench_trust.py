"""Trust on every shape of folder: calibration, prediction sets and the unknown answer over the folder matrix.

    python scripts/bench_trust.py --matrix DIR [--shapes flowers_2,digits] [--seeds 42,43,44]
    make bench-trust ARGS="--matrix DIR"

DIR is built by `python3 ../shared/folder_matrix.py DIR` (its manifest.json lists each shape, its config and
its folders of unknown inputs). Per shape and seed, one run trains the default model (EfficientNet-Lite0 on
photos, the digits' own default); each unknown method (--methods) calibrates and scores that checkpoint
on the test split and every unknown folder
(stages=[calibrate,validate]), so methods are compared on identical models; a work folder (--work) that
holds a shape and seed's training run already is reused, so calibration rules can be re-measured without
training again (the report says which runs were reused). --cost also trains each
shape and seed without a calib split (data.calib_fraction=0): what the slice costs in accuracy. The data
audit is off in these runs (it changes no default's outcome; data.on_label_issue=warn). Writes
bench/trust.md and bench/trust.json.
"""

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from bench_common import ROOT, machine, machine_line, run_pipeline, write_report

PHOTO_MODEL = "model=efficientnet_lite0"
METRICS = (
    "test/acc", "test/bal_acc", "test/f1_macro", "test/ece", "test/ece_uncalibrated",
    "test/conformal_coverage", "test/conformal_set_size", "test/conformal_empty", "test/unknown_rate",
    "calib/images", "calib/acc", "calib/temperature", "calib/unknown_mb",
)  # fmt: skip
COLUMNS = (  # report column, metric, digits
    ("test acc", "test/acc", 4), ("ECE before", "ece_before", 4), ("ECE after", "test/ece", 4),
    ("T", "calib/temperature", 3), ("coverage", "test/conformal_coverage", 3),
    ("set size", "test/conformal_set_size", 2), ("empty", "test/conformal_empty", 3),
    ("unknown rate (test)", "test/unknown_rate", 3),
)  # fmt: skip


def pipeline_run(args: list[str], work: Path, name: str) -> dict:
    """One pipeline run in a child process: wall seconds, run id, output folder and the parent's metrics."""
    wall, run_id, metrics = run_pipeline([*args, "data.audit=false"], work, name)
    found = {k: metrics.get(k) for k in METRICS} | {k: v for k, v in metrics.items() if "/ood_" in k}
    found["ece_before"] = (
        found["test/ece_uncalibrated"] if found["test/ece_uncalibrated"] is not None else found["test/ece"]
    )
    return {"wall_s": round(wall, 1), "run_id": run_id, "out": str(work / "runs" / name), **found}


def shape_runs(shape: dict, seed: int, methods: list[str], cost: bool, work: Path, name: str) -> dict:
    """One shape and seed: the training run (kept from an earlier bench in the same work folder, when there
    is one), each method's calibrate and validate stages on its checkpoint, and the run without a calib split
    when asked."""
    config = shape["config"].split()
    model = [] if "data=digits" in config else [PHOTO_MODEL]
    unknown = f"validate.ood_roots=[{','.join(shape['unknown'])}]"
    base = [*config, *model, f"seed={seed}"]
    ckpt = work / "runs" / f"{name}-{seed}-train" / "checkpoints" / "best.ckpt"
    found = {"train": {"reused": str(ckpt)}}
    if not ckpt.is_file():
        found["train"] = pipeline_run([*base, "stages=[data,train]"], work, f"{name}-{seed}-train")
    for method in methods:
        found[method] = pipeline_run(
            [*base, unknown, "stages=[calibrate,validate]", f"ckpt_path={ckpt}",
             f"calibrate.unknown_method={method}"],
            work, f"{name}-{seed}-{method}",
        )  # fmt: skip
    if cost:
        found["no_calib"] = pipeline_run(
            [*base, "stages=[data,train,validate]", "data.calib_fraction=0"], work, f"{name}-{seed}-no-calib"
        )
    return found


def spread(values: list) -> str:
    """mean (min-max) of the runs that have the figure."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.mean(values):.4g} ({min(values):.4g}-{max(values):.4g})"


def markdown(results: dict, info: dict, methods: list[str]) -> str:
    lines = [
        "# Trust on the folder matrix",
        "",
        f"{machine_line(info)}. Seeds {info['seeds']}; the "
        "audit off; figures are mean (min-max) over the seeds.",
        f"Training runs reused from an earlier bench: {info['reused']}.",
        "",
        "## Scores and calibration (default unknown method)",
        "",
        "| shape | calib images | " + " | ".join(c[0] for c in COLUMNS) + " | training wall s |",
        "|---|---|" + "---|" * len(COLUMNS) + "---|",
    ]  # fmt: skip
    for shape, runs in results.items():
        default = [r[methods[0]] for r in runs]
        cells = [spread([r.get(metric) for r in default]) for _, metric, _ in COLUMNS]
        calib = spread([r.get("calib/images") for r in default])
        walls = [r["train"].get("wall_s") for r in runs]
        lines.append(f"| {shape} | {calib} | " + " | ".join(cells) + f" | {spread(walls)} |")
    lines += ["", "## Unknown inputs: AUROC / FPR at 95% TPR / share flagged by the stored threshold", ""]
    lines += ["| shape | folder | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for shape, runs in results.items():
        folders = sorted(
            {
                k.split("/ood_")[1].rsplit("_", 1)[0]
                for k in runs[0][methods[0]]
                if "/ood_" in k and k.endswith("_auroc")
            }
        )
        for folder in folders:
            cells = []
            for method in methods:
                rows = [r[method] for r in runs if method in r]
                figures = [
                    spread([row.get(f"test/ood_{folder}_{key}") for row in rows])
                    for key in ("auroc", "fpr95", "flagged")
                ]
                cells.append(" / ".join(figures))
            lines.append(f"| {shape} | {folder} | " + " | ".join(cells) + " |")
    with_cost = {shape: runs for shape, runs in results.items() if "no_calib" in runs[0]}
    if with_cost:
        lines += [
            "",
            "## What the calib split costs: test accuracy with it and without (data.calib_fraction=0)",
            "",
        ]
        lines += ["| shape | with calib | without | mean change |", "|---|---|---|---|"]
        for shape, runs in with_cost.items():
            key = "test/f1_macro" if shape.startswith("clothing") else "test/acc"
            with_, without = [r[methods[0]][key] for r in runs], [r["no_calib"][key] for r in runs]
            change = statistics.mean(with_) - statistics.mean(without)
            lines.append(f"| {shape} ({key}) | {spread(with_)} | {spread(without)} | {change:+.4f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matrix", type=Path, required=True, help="built by ../shared/folder_matrix.py")
    parser.add_argument(
        "--shapes", default=None, help="comma-separated (default: every shape of the manifest)"
    )
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--methods", default="mahalanobis,knn,energy", help="the first is the default's run")
    parser.add_argument("--cost", action="store_true", help="also train without a calib split")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "trust-work")
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    args = parser.parse_args(argv)
    manifest = json.loads((args.matrix / "manifest.json").read_text())
    shapes = args.shapes.split(",") if args.shapes else list(manifest)
    unknown = set(shapes) - set(manifest)
    if unknown:
        parser.error(f"unknown shape(s) {', '.join(sorted(unknown))}; the manifest has {', '.join(manifest)}")
    seeds, methods = [int(s) for s in args.seeds.split(",")], args.methods.split(",")
    load_before = os.getloadavg()[0]
    results: dict[str, list] = {}
    for shape in shapes:
        for seed in seeds:
            print(f"bench_trust: {shape} seed {seed} ...", flush=True)
            try:
                runs = shape_runs(manifest[shape], seed, methods, args.cost, args.work, shape)
            except RuntimeError as err:  # one failed run is a finding, not the end of the bench
                print(f"bench_trust: {shape} seed {seed} failed: {err}", flush=True)
                continue
            print(f"bench_trust: {shape} seed {seed}: {json.dumps(runs)}", flush=True)
            results.setdefault(shape, []).append(runs)
            reused = [
                f"{s} seed {r['train']['reused']}"
                for s, rs in results.items()
                for r in rs
                if "reused" in r["train"]
            ]
            info = machine(load_before, seeds=seeds, methods=methods, reused=len(reused) or "none")
            write_report(
                args.out, "trust", markdown(results, info, methods), {"machine": info, "results": results}
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
