"""Files written beside their target and renamed into place: a kill or a full disk mid-write never leaves a
half file under the final name, and the previous file stays whole until the new one is."""

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
