"""Helper servers (`mlflow server`, the model server) in their own process group, stopped as a group.

Such servers spawn workers of their own; started in a new session they are out of reach of the terminal's
Ctrl-C, and stopping the whole group leaves nothing behind and nothing listening.
"""

import logging
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from pipeline.signals import sigterm_as_interrupt

READY_TIMEOUT_S = 120  # startup takes seconds on idle cores, many times longer on busy ones
STOP_TIMEOUT_S = 20

log = logging.getLogger("pipeline.serve")


def start_in_own_group(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    """The command in a new session: its own process group, whose id is its pid."""
    return subprocess.Popen(command, env=env, start_new_session=True)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = READY_TIMEOUT_S) -> None:
    """Returns once `url`/health answers; RuntimeError when the server exits or stays silent."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}; its messages are above")
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2).close()
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the server did not answer on {url} within {timeout:.0f} s")


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


def foreground(proc: subprocess.Popen, url: str, ready: str) -> int:
    """Wait for the server at `url`, log `ready`, and run until Ctrl-C, SIGTERM or SIGHUP (its terminal
    closed; not under nohup); then stop the server's whole process group, which is in a session of its own
    and hears none of them. The exit code: 0 when stopped, 1 when it never answered, else the server's own."""
    try:
        with sigterm_as_interrupt(hangup=True):
            wait_ready(url, proc)
            log.info(ready)
            return proc.wait()
    except RuntimeError as err:
        log.error("error: %s", err)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop(proc)
