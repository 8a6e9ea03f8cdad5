"""Which running trials of a study a live sweep holds, so that two sweeps can fill one study at once.

A sweep renews a time stamp on each trial it runs (a user attribute: every Optuna storage carries it, the
journal file included; Optuna's own heartbeat exists for database storages only). A running trial whose
stamp has lapsed was left by a sweep that stopped: the next sweep fails it and asks its parameters again.
"""

import threading
import time

LEASE_ATTR = "sweep_lease_until"  # seconds since the epoch
LEASE_SECONDS = 90.0
RENEW_EVERY = LEASE_SECONDS / 3


def running(study) -> list:
    import optuna

    return study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.RUNNING])


def held(trial, now: float) -> bool:
    return trial.user_attrs.get(LEASE_ATTR, 0.0) > now


def held_by_others(study) -> list:
    """Running trials a live sweep holds (between batches, every running trial is another sweep's)."""
    now = time.time()
    return [t for t in running(study) if held(t, now)]


def abandoned(study) -> list:
    """Running trials no live sweep holds: their sweep stopped (or predates leases)."""
    now = time.time()
    return [t for t in running(study) if not held(t, now)]


class Lease:
    """While the block runs, `trials` (asked of the study by this sweep) are held: their stamp is renewed
    every RENEW_EVERY seconds by a daemon thread, which stops with the block."""

    def __init__(self, trials: list) -> None:
        self.trials, self.stop = trials, threading.Event()
        self.thread = threading.Thread(target=self._renew_until_stopped, name="sweep-lease", daemon=True)

    def __enter__(self) -> "Lease":
        self.renew()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def _renew_until_stopped(self) -> None:
        while not self.stop.wait(RENEW_EVERY):
            self.renew()

    def renew(self) -> None:
        import optuna

        until = time.time() + LEASE_SECONDS
        for trial in self.trials:
            try:
                trial.set_user_attr(LEASE_ATTR, until)
            except optuna.exceptions.UpdateFinishedTrialError:  # told already (its job ended)
                pass
