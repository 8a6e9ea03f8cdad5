"""How the project's log lines look and who writes them (conf/hydra/job_logging/pipeline.yaml wires these).

Each stage logs to `logging.getLogger("pipeline.<stage>")` and the runner to `pipeline`; the console shows
`[<stage>] message` (warnings as `[<stage>] warning: message`; errors say "failed" themselves), the way the
pipeline has always printed, while Hydra's job log file gets the same records with time stamps. Only DDP
rank 0 writes.
"""

import logging
import sys

from pipeline.ranks import is_rank_zero

OTHERS = "[%(name)s][%(levelname)s] - %(message)s"  # library records: say whose they are


class ConsoleFormatter(logging.Formatter):
    def __init__(self):
        super().__init__(OTHERS)

    def format(self, record: logging.LogRecord) -> str:
        if record.name != "pipeline" and not record.name.startswith("pipeline."):
            return super().format(record)
        tag = record.name.rsplit(".", 1)[-1]
        level = "warning: " if record.levelno == logging.WARNING else ""
        return f"[{tag}] {level}{record.getMessage()}"


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
