"""`make bench-sweep`: the same Optuna search with and without pruning, side by side in one session: wall
time and best objective of each (the digits_optuna search space on the built-in digits, or `--set` for
another folder and model). Each search is a real `python -m pipeline hparams_search=...` command, with its
own study and MLflow store under --work.
"""

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna
from bench_common import ROOT, child_env, machine, machine_line, write_report

SEARCH = ["hparams_search=digits_optuna", "experiment=digits_cnn"]
UNPRUNED = "unpruned"


def modes(pruners: list[str]) -> dict[str, list[str]]:
    """Search name -> its overrides: without pruning, then with each pruner named (an optuna.pruners class
    with its own defaults), or with conf/hydra/sweeper/optuna.yaml's when none is named."""
    out = {UNPRUNED: ["hydra.sweeper.pruner=null"]}
    for pruner in pruners:
        out[pruner.rsplit(".", 1)[-1]] = [
            "~hydra.sweeper.pruner",
            f"+hydra.sweeper.pruner={{_target_: {pruner}}}",
        ]
    return out if pruners else {**out, "pruned": []}


def search(mode: str, overrides: list[str], repeat: int, args, work: Path) -> dict:
    """One sweep of `args.trials` trials: its wall seconds and what its study holds."""
    name = f"{mode}-{repeat}"
    command = [
        sys.executable, "-m", "pipeline", *SEARCH, *overrides, *args.set,
        f"hydra.sweeper.n_trials={args.trials}", f"hydra.sweeper.study_name={name}", f"seed={42 + repeat}",
        f"tracking.dir={work / 'mlruns'}", f"hydra.sweep.dir={work / name}",
        f"data.cache_dir={work / 'cache'}",
    ]  # fmt: skip
    print(f"bench_sweep: {name} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=child_env(), capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{name} exited with {done.returncode}:\n{done.stderr[-3000:]}")
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{work / 'mlruns' / 'optuna.db'}")
    states = [t.state.name for t in study.trials]
    return {
        "mode": mode,
        "repeat": repeat,
        "wall_s": round(wall, 1),
        "best_value": study.best_value,
        "best_trial": study.best_trial.number,
        "complete": states.count("COMPLETE"),
        "pruned": states.count("PRUNED"),
    }


def report(results: list[dict], info: dict, args) -> str:
    lines = [
        "# Optuna search with and without pruning",
        "",
        f"{machine_line(info)}. Search: "
        f"`{' '.join(SEARCH + args.set)}`, {args.trials} trials each, seeds 42 + repeat.",
        "",
        "| repeat | search | wall (s) | best objective | completed | pruned |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['repeat']} | {r['mode']} | {r['wall_s']:.0f} | {r['best_value']:.4f} | {r['complete']} "
            f"| {r['pruned']} |"
        )
    lines += ["", "| repeat | search | wall, / unpruned | best objective, - unpruned |", "|---|---|---|---|"]
    for repeat in sorted({r["repeat"] for r in results}):
        runs = {r["mode"]: r for r in results if r["repeat"] == repeat}
        base = runs.get(UNPRUNED)
        for mode, r in runs.items():
            if base and mode != UNPRUNED:
                ratio, gap = r["wall_s"] / base["wall_s"], r["best_value"] - base["best_value"]
                lines.append(f"| {repeat} | {mode} | {ratio:.2f}x | {gap:+.4f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1, help="pairs of searches, each with its own seed")
    parser.add_argument("--set", action="append", default=[], help="an override for every search")
    parser.add_argument(
        "--pruners",
        default="",
        help="comma-separated optuna.pruners classes to compare (default: the config's)",
    )
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "sweep_work")
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    load_before = os.getloadavg()[0]
    searches = modes([p for p in args.pruners.split(",") if p])
    results = [
        search(mode, overrides, r, args, args.work)
        for r in range(args.repeats)
        for mode, overrides in searches.items()
    ]
    info = machine(load_before)
    write_report(args.out, "sweep", report(results, info, args), {"machine": info, "results": results})


if __name__ == "__main__":
    try:
        main()
    except (RuntimeError, subprocess.SubprocessError) as err:
        sys.exit(f"bench_sweep: {err}")
