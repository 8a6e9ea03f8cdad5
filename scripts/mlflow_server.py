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
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

READY_TIMEOUT_S = 120  # startup takes ~10 s on 2 idle cores, longer when the CPU is busy
STOP_TIMEOUT_S = 20


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
    store_dir: Path, host: str = "127.0.0.1", port: int = 5000, workers: int = 1, extra: tuple[str, ...] = ()
) -> subprocess.Popen:
    """The server in a new session (its own process group, out of reach of the terminal's Ctrl-C)."""
    store_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return subprocess.Popen(command(store_dir, host, port, workers, extra), env=env, start_new_session=True)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with code {proc.returncode}; its messages are above")
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2).close()
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"mlflow server did not answer on {url} within {timeout:.0f} s")


def group_alive(pgid: int) -> bool:
    return _signal_group(pgid, 0)


def group_rss_mb(pgid: int) -> float:
    """Resident memory of every process in a process group (a server and the workers it spawned)."""
    pages = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[2]) == pgid:
            pages += int(fields[21])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _signal_group(pgid: int, sig: int) -> bool:
    """False when no process of the group is left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def stop(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM to the whole group, SIGKILL to whatever is left after `timeout`; returns when it is gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not _signal_group(proc.pid, sig):
            break
        deadline = time.monotonic() + timeout
        while group_alive(proc.pid) and time.monotonic() < deadline:
            proc.poll()  # reaps the group leader once it exits
            time.sleep(0.2)
    proc.wait()


def serve(store_dir: Path, host: str, port: int, workers: int, extra: tuple[str, ...]) -> int:
    url = f"http://{host}:{port}"
    proc = start(store_dir, host, port, workers, extra)
    ready = f"MLflow tracking server on {url}, store {store_dir.resolve()}; Ctrl-C stops it"
    return foreground(proc, url, ready)


def foreground(proc: subprocess.Popen, url: str, ready: str) -> int:
    """Wait for the server at `url`, print `ready`, and run until Ctrl-C or SIGTERM; then stop the server's
    whole process group."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM ends it like Ctrl-C
    try:
        wait_ready(url, proc)
        print(ready, flush=True)
        return proc.wait()
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog="Other options go to `mlflow server` as they are."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--dir", type=Path, default=Path("mlruns/server"), help="mlflow.db and artifacts/")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    args, extra = parser.parse_known_args()
    sys.exit(serve(args.dir, args.host, args.port, args.workers, tuple(extra)))


if __name__ == "__main__":
    main()
