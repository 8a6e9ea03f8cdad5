"""What the benchmark scripts share: the machine line each report starts with, and a child's environment.

Imported by name (`from bench_common import ...`): a script's own folder is first on sys.path.
"""

import datetime
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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


def child_env() -> dict[str, str]:
    """This environment for a pipeline run in a child process: its own store, not the caller's or make's."""
    return {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MAKEFLAGS")}
