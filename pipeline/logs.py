"""How the project's log lines look and who writes them (conf/hydra/job_logging/pipeline.yaml wires these).

Each stage logs to `logging.getLogger("pipeline.<stage>")` and the runner to `pipeline`; the console shows
`[<stage>] message` (warnings as `[<stage>] warning: message`; errors say "failed" themselves), the way the
pipeline has always printed, while Hydra's job log file gets the same records with time stamps. Only DDP
rank 0 writes.
"""

import logging
import sys
from pathlib import PurePath

from pipeline.ranks import is_rank_zero

OTHERS = "[%(name)s][%(levelname)s] - %(message)s"  # library records: say whose they are


# control characters as escapes: a file or class name holding a new-line must not split a console line
ESCAPES = {c: f"\\x{c:02x}" for c in (*range(32), 127)} | {
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
}


def on_one_line(value):
    """A str or path argument with its control characters escaped; any other value as it is."""
    if isinstance(value, str | PurePath):
        return str(value).translate(ESCAPES)
    return value


class ConsoleFormatter(logging.Formatter):
    """The project's records as `[<stage>] message`, each argument on one line (the format string's own
    new-lines stay); other libraries' records with their logger's name."""

    def __init__(self):
        super().__init__(OTHERS)

    def format(self, record: logging.LogRecord) -> str:
        if record.name != "pipeline" and not record.name.startswith("pipeline."):
            return super().format(record)
        tag = record.name.rsplit(".", 1)[-1]
        level = "warning: " if record.levelno == logging.WARNING else ""
        message = record.msg
        if isinstance(record.args, tuple) and record.args:
            message = str(record.msg) % tuple(on_one_line(a) for a in record.args)
        elif record.args:
            message = record.getMessage()
        return f"[{tag}] {level}{message}"


class RankZeroFilter(logging.Filter):
    """Drops every record in a DDP process other than rank 0, which speaks for the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return is_rank_zero()


def to_console(level: int = logging.INFO) -> None:
    """The console half of the Hydra logging config, for callers outside Hydra (benchmarks, notebooks)."""
    root = logging.getLogger()
    if any(isinstance(h.formatter, ConsoleFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(ConsoleFormatter())
    handler.addFilter(RankZeroFilter())
    root.addHandler(handler)
    root.setLevel(level)
