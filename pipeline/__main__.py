"""Entry point: `python -m pipeline [hydra overrides]`.

Heavy libraries load only after the config composed, so a bad override fails in about a second.
Known failures (bad config, bad input, failed checks) print one line and exit non-zero.
"""

import errno
import gc
import multiprocessing
import os
import re
import signal
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach main(), which prints one line

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from pipeline.allocator import keep_freed_memory  # noqa: E402
from pipeline.cli_help import help_text, nearest_key, wants_help  # noqa: E402
from pipeline.schema import register  # noqa: E402
from pipeline.sweeps import optuna_sweeper  # noqa: E402

register()
optuna_sweeper.register()


NOISE_PREFIXES = ("full_key:", "reference_type=", "object_type=", "To append to your config")
BAD_CHOICE = re.compile(r"Invalid value '(?P<value>.*)', expected one of \[(?P<allowed>.*)\]")


def one_line(err: BaseException | None) -> str:
    """Fold an exception and its causes into one line, without OmegaConf's key/type detail lines."""
    parts: list[str] = []
    while err is not None and len(parts) < 3:
        lines = [line.strip() for line in str(err).strip().splitlines()]
        text = " ".join(line for line in lines if line and not line.startswith(NOISE_PREFIXES))
        key = getattr(err, "full_key", None)
        if key and key not in " ".join([*parts, text]):
            text = f"{text} ({key})"
        if text and not any(text in part for part in parts):  # a cause already quoted by its wrapper
            parts.append(text.rstrip("."))
        err = err.__cause__
    return ": ".join(parts) or "unknown error"


def bad_choice(err: BaseException | None) -> str | None:
    """`data.on_corrupt='x' is not one of ['skip', 'fail']` for a value outside a schema Enum, wherever in
    the chain of causes OmegaConf's own message sits."""
    while err is not None:
        found = BAD_CHOICE.search(str(err))
        key = getattr(err, "full_key", None)
        if found and key:
            allowed = [choice.strip() for choice in found["allowed"].split(",")]
            return f"{key}={found['value']!r} is not one of {allowed}"
        err = err.__cause__
    return None


# a file or folder the run cannot write: the machine's state or a path given, not a bug
UNWRITABLE = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR}


def unwritable(err: BaseException | None) -> str | None:
    """`no space left on <folder> while writing <file>` (or why else it cannot be written) for an OSError
    with a file name anywhere in the chain of causes."""
    while err is not None:
        if isinstance(err, OSError) and err.errno in UNWRITABLE and err.filename:
            path = os.fsdecode(err.filename)
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                return f"no space left on {os.path.dirname(path) or '.'} while writing {path}"
            return f"cannot write {path}: {err.strerror}"
        err = err.__cause__ or err.__context__
    return None


def error_line(err: BaseException) -> str | None:
    """The one line the CLI prints for bad input; None for anything else (a bug keeps its traceback)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from pipeline.errors import PipelineError, message, scheduler_refusal

    if isinstance(err, PipelineError):
        return f"error: {message(err)}"
    if refusal := scheduler_refusal(err):
        return f"error: {refusal}"
    if isinstance(err, HydraException | OmegaConfBaseException):
        return f"config error: {bad_choice(err) or one_line(err)}"
    if reason := unwritable(err):
        return f"error: {reason}"
    return None


MISTYPED_KEY = re.compile(r"Could not override '(?P<key>[^']+)': Key '[^']+' (is )?not in")


def interrupted(err: BaseException | None) -> bool:
    """A Ctrl-C or SIGTERM behind `err`: one that landed in a library's cleanup (OmegaConf restoring a node's
    flags while Hydra composed a sweep's next trial) surfaces as that cleanup's own error."""
    while err is not None:
        if isinstance(err, KeyboardInterrupt):
            return True
        err = err.__cause__ or err.__context__
    return False


def exit_on_known_error(err: BaseException) -> None:
    """Print one line and exit 2 for bad input, 130 for an interrupt under another error; anything else is a
    bug and keeps its traceback."""
    if interrupted(err):
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    line = error_line(err)
    if line is not None:
        if (mistyped := MISTYPED_KEY.search(line)) and (near := nearest_key(mistyped["key"], sys.argv[1:])):
            line += f"; did you mean {near}?"
        print(line, file=sys.stderr)
        sys.exit(2)


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    from pipeline.runner import run

    try:
        return run(cfg)
    except Exception as err:  # handled here, inside the job, so Hydra adds no lines of its own
        exit_on_known_error(err)
        raise


def main() -> None:
    keep_freed_memory()  # the program's own choice, before its first tensor (not on importing this module)
    if sys.stdout.errors == "strict":  # a file name that is not UTF-8 is printed with its odd bytes escaped
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        if wants_help(sys.argv[1:]):
            print(help_text(sys.argv[1:]), end="")
            return
        _hydra_main()
    except Exception as err:  # config composition errors arrive here, before any job starts
        exit_on_known_error(err)
        raise
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    finally:
        stop_leftover_workers()
        skip_the_last_collection()


def stop_leftover_workers() -> None:
    """Kill worker processes still alive at the end (loader workers ignore SIGTERM, see
    signals.ignore_sigterm): multiprocessing's exit handler sends them SIGTERM and then waits on them,
    which would never end. By pid: the process objects of joblib's workers (hydra/launcher=parallel) have no
    kill()."""
    for child in multiprocessing.active_children():
        os.kill(child.pid, signal.SIGKILL)
        child.join()


def skip_the_last_collection() -> None:
    """Exempt every live object from the collections Python runs while it shuts down, which took seconds
    after a finished run (docs/design.md); Python promises no __del__ at exit anyway, and atexit handlers
    (MLflow's, logging's) still run."""
    gc.freeze()


if __name__ == "__main__":
    main()
