"""What the benchmark scripts share: the machine line each report starts with, and a child's environment.

Imported by name (`from bench_common import ...`): a script's own folder is first on sys.path.
"""

import datetime
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN_ID = re.compile(r"MLflow run ([0-9a-f]{32})")  # in a pipeline run's log
SHARED = ROOT.parent / "shared" / "datasets"  # real photo folders beside the clone (their SOURCE.md), if any
HAND_SIGNS = SHARED / "sign_language_digits" / "Dataset"
FLOWERS = SHARED / "flowers17_subset"
CLOTHING = SHARED / "clothing_small"


def machine(load_before: float, **extra) -> dict:
    """Date, commit, CPU count and the load average before and now, plus what the report adds."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "commit": commit.stdout.strip(),
        "cpu_count": os.cpu_count(),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        **extra,
    }


def machine_line(info: dict) -> str:
    """The report's first words: when, which commit, how many CPUs and how loaded (from machine())."""
    return (
        f"{info['date']}, commit {info['commit']}, {info['cpu_count']} CPUs, load average "
        f"{info['load_before']:.2f} before and {info['load_after']:.2f} after"
    )


def write_report(out: Path, name: str, text: str, data: dict) -> None:
    """out/<name>.md for people and out/<name>.json for tools; the markdown is printed too."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(text)
    (out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    print(text)


def child_env() -> dict[str, str]:
    """This environment for a pipeline run in a child process: its own store, not the caller's or make's."""
    return {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MAKEFLAGS")}


def run_pipeline(args: list[str], work: Path, name: str) -> tuple[float, str, dict[str, float]]:
    """`python -m pipeline` in a child process, its store, caches and outputs (runs/<name>) under `work` and
    its log in work/<name>.log: wall seconds, the parent run's id and its metrics."""
    command = [
        sys.executable, "-m", "pipeline", *args, f"tracking.dir={work / 'mlruns'}",
        f"hydra.run.dir={work / 'runs' / name}", f"data.cache_dir={work / 'cache'}",
    ]  # fmt: skip
    work.mkdir(parents=True, exist_ok=True)
    log = work / f"{name}.log"
    start = time.perf_counter()
    with open(log, "w") as sink:
        code = subprocess.run(
            command, cwd=ROOT, env=child_env(), stdout=sink, stderr=subprocess.STDOUT
        ).returncode
    wall = time.perf_counter() - start
    text = log.read_text()
    if code != 0:
        raise RuntimeError(f"{name} exited with {code}; see {log}:\n" + "\n".join(text.splitlines()[-10:]))
    from mlflow.tracking import MlflowClient

    run_id = RUN_ID.search(text).group(1)
    return (
        wall,
        run_id,
        MlflowClient(f"sqlite:///{work / 'mlruns' / 'mlflow.db'}").get_run(run_id).data.metrics,
    )


def run_data_stage(
    data: Path, work: Path, name: str, *overrides: str, wrapper: tuple[str, ...] = ()
) -> tuple[float, subprocess.CompletedProcess]:
    """`python -m pipeline stages=[data]` on the folder `data` in a child process (behind `wrapper`, e.g.
    /usr/bin/time), its store, caches and outputs (runs/<name>) under `work`; wall seconds and the result."""
    command = [
        *wrapper, sys.executable, "-m", "pipeline", "data=folder", f"data.root={data}", "stages=[data]",
        *overrides, f"tracking.dir={work / 'mlruns'}", f"hydra.run.dir={work / 'runs' / name}",
        f"data.cache_dir={work / 'cache'}",
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=child_env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{name} exited with {done.returncode}:\n{done.stderr[-2000:]}")
    return time.perf_counter() - start, done
