"""How a run answers Ctrl-C and SIGTERM, in one place, with the library internals it relies on beside it.

- The whole run: SIGTERM (a scheduler, `kill`) ends it like Ctrl-C, a KeyboardInterrupt: runs marked KILLED,
  checkpoints intact (`sigterm_as_interrupt`, the runner). A helper server in the foreground (`make serve`,
  `make ui`): SIGTERM and SIGHUP (its terminal closed) stop its process group (pipeline.process_group).
- An MLflow write: both signals are held back until it is done (`uninterrupted`, the tracker).
- Loader workers: SIGTERM ignored (`ignore_sigterm`); the main process ends them when it stops.
- Several DDP ranks: SIGTERM only sets Lightning's flag, so the ranks stop at the same step
  (`sigterm_sets_lightning_flag`, the trainer's StopRanksTogether callback).
Private library attributes used here, and only here (tests/test_signals.py pins each): Lightning's
`Trainer._signal_connector` (what `trainer.received_sigterm` reads) and MLflow's `Dataset._to_mlflow_entity`
(what `mlflow.log_input` calls, for logging a dataset to a run that is not the active one).
"""

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

INTERRUPT_SIGNALS = (signal.SIGINT, signal.SIGTERM)
INTERRUPTS = (KeyboardInterrupt, SystemExit)  # what they arrive as (Lightning turns both into SystemExit)


@contextlib.contextmanager
def sigterm_as_interrupt(hangup: bool = False) -> Iterator[None]:
    """SIGTERM (a scheduler, `kill`) ends the run like Ctrl-C: runs marked KILLED, checkpoints intact. With
    `hangup`, SIGHUP too (the terminal closed), unless the process was started to ignore it (nohup)."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signums = [signal.SIGTERM]
    if hangup and signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signums.append(signal.SIGHUP)
    previous = {signum: signal.signal(signum, interrupt) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Ctrl-C or SIGTERM during an MLflow write is held back until the write is done. Raised mid-write, the
    KeyboardInterrupt skips SQLAlchemy's rollback (it is not an Exception), the SQLite connection keeps its
    write lock, and marking the run KILLED then fails with "database is locked". Signal handlers can only be
    swapped in the main thread; elsewhere the write runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _: held.append(signum)) for sig in INTERRUPT_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if held:
            signal.raise_signal(held[0])  # now handled as it would have been, outside the write


def ignore_sigterm(worker_id: int) -> None:
    """In a loader worker: a scheduler's SIGTERM (scancel, a time limit) reaches every process of the job, and
    a worker it killed would fail the run ("DataLoader worker ... is killed") before the main process stops it
    as interrupted (KILLED). The main process ends its workers when it stops; SIGKILL ends stragglers."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def sigterm_sets_lightning_flag(trainer: Any) -> None:
    """From now on SIGTERM only sets the flag `trainer.received_sigterm` reads, which Lightning's training
    loop broadcasts from rank 0 before every step. Lightning restores its own handlers when fitting ends."""
    connector = trainer._signal_connector
    signal.signal(signal.SIGTERM, lambda signum, frame: setattr(connector, "received_sigterm", True))


def dataset_entity(dataset: Any) -> Any:
    """An mlflow.data dataset as the entity a run's inputs hold, for a run that need not be the active one."""
    return dataset._to_mlflow_entity()
