"""An MLflow tracking server on this machine: runs in SQLite, artifacts served from a folder beside it.

`mlflow server` starts helper processes (uvicorn and its workers), so it runs in its own process group and
is stopped as a group: Ctrl-C or SIGTERM here leaves nothing behind and nothing listening. MLflow's
GenAI job runner (several more processes) is switched off; image-classification tracking never uses it.

    python scripts/mlflow_server.py [--port 5000] [--dir mlruns/server]     # or: make server PORT=5000
    python scripts/mlflow_server.py --host 0.0.0.0 --allowed-hosts <name>:5000   # other options go to mlflow
    make train tracking=server                     # tracking.uri=http://127.0.0.1:<port> for another port
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

from pipeline.logs import to_console
from pipeline.process_group import foreground, start_in_own_group
from pipeline.tracking import UI_PORT


def command(store_dir: Path, host: str, port: int, workers: int, extra: tuple[str, ...] = ()) -> list[str]:
    store_dir = store_dir.resolve()
    return [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{store_dir / 'mlflow.db'}",
        "--artifacts-destination", str(store_dir / "artifacts"),
        "--host", host,
        "--port", str(port),
        "--workers", str(workers),
        *extra,
    ]  # fmt: skip


def start(
    store_dir: Path,
    host: str = "127.0.0.1",
    port: int = UI_PORT,
    workers: int = 1,
    extra: tuple[str, ...] = (),
) -> subprocess.Popen:
    """The server in its own process group (pipeline.process_group)."""
    store_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return start_in_own_group(command(store_dir, host, port, workers, extra), env)


def serve(store_dir: Path, host: str, port: int, workers: int, extra: tuple[str, ...]) -> int:
    url = f"http://{host}:{port}"
    proc = start(store_dir, host, port, workers, extra)
    ready = f"MLflow tracking server on {url}, store {store_dir.resolve()}; Ctrl-C stops it"
    return foreground(proc, url, ready)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog="Other options go to `mlflow server` as they are."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=UI_PORT)
    parser.add_argument("--dir", type=Path, default=Path("mlruns/server"), help="mlflow.db and artifacts/")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    args, extra = parser.parse_known_args()
    to_console()
    sys.exit(serve(args.dir, args.host, args.port, args.workers, tuple(extra)))


if __name__ == "__main__":
    main()
