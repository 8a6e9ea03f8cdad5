"""Files written beside their target and renamed into place: a kill or a full disk mid-write never leaves a
half file under the final name, and the previous file stays whole until the new one is. And SQLite files
whose tables one process creates while the others wait."""

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def written_in_place(path: Path) -> Iterator[Path]:
    """A path beside `path` to write to; renamed onto `path` when the block ends without an error (atomic
    on one filesystem), removed otherwise."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        yield partial
        os.replace(partial, path)
    except OSError as err:
        if err.filename is not None and os.fsdecode(err.filename) == str(partial):
            err.filename = str(path)  # errors name the file the user asked for, not its temporary name
        raise
    finally:
        partial.unlink(missing_ok=True)


@contextmanager
def one_at_a_time(uri: str) -> Iterator[None]:
    """Processes that open a new SQLite database together (an MLflow store, an Optuna study) would each create
    its tables and collide ("table ... already exists"); an exclusive lock on <db>.lock lets one create them
    while the others wait. Other URLs pass as they are."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock_path = Path(f"{uri.removeprefix('sqlite:///')}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield
