"""Progress lines for long work, readable in a log file (CI, nohup, SLURM) as well as on a terminal."""

import logging
import sys
import time


def duration(seconds: float) -> str:
    """12s, 3m05s, 1h02m."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Counts done items and logs `[stage] what: done/total (pct), rate, ETA` at most every `interval`
    seconds, and nothing for work that ends sooner. The rate is the current phase's: work that changes
    speed midway (the audit exports its backbone, then runs several times faster) starts a new phase, so
    the ETA is not held back by the slow start."""

    def __init__(self, stage: str, what: str, total: int, interval: float = 15.0):
        self.stage, self.what, self.total, self.interval = stage, what, total, interval
        self.done = self.done_before_phase = 0
        self.start = self.last = time.perf_counter()

    def new_phase(self) -> None:
        """From now on the rate counts only what is done from now on."""
        self.start, self.done_before_phase = time.perf_counter(), self.done

    def advance(self, count: int = 1) -> None:
        self.done += count
        now = time.perf_counter()
        settled = now - self.start >= min(1.0, self.interval)  # a phase a moment old has no rate yet
        if now - self.last >= self.interval and settled and self.done < self.total:
            self.last = now
            rate = (self.done - self.done_before_phase) / (now - self.start)
            eta = (self.total - self.done) / rate if rate > 0 else 0.0
            logging.getLogger(f"pipeline.{self.stage}").info(
                f"{self.what}: {self.done}/{self.total} ({self.done / self.total:.0%}), "
                f"{rate:.0f}/s, ETA {duration(eta)}"
            )


def interactive() -> bool:
    """A terminal watches stdout: a live progress bar suits it; a file gets one line per epoch instead."""
    return sys.stdout.isatty()
