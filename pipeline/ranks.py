"""Which process this is in a multi-process (DDP) run, and the silent tracker that non-zero ranks use.

Lightning's DDP launcher starts ranks 1..N-1 as new `python -m pipeline ...` processes. They must only join
training: the data and sanity checks, validation, export and all MLflow records belong to rank 0.
"""

import contextlib
import os

RANK_VARIABLES = ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")  # global ranks, as Lightning reads them


def is_rank_zero() -> bool:
    """True unless a launcher marked this process as another rank (LOCAL_RANK and NODE_RANK together
    identify Lightning's own child processes and a second node's first process)."""
    for name in RANK_VARIABLES:
        if name in os.environ:
            return int(os.environ[name]) == 0
    return int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0


def slurm_restarted() -> bool:
    """SLURM requeued this job (preemption, `scontrol requeue`, a failed node): it starts again under the same
    id with SLURM_RESTART_COUNT set."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0


def worker_stages(stages: list[str]) -> list[str]:
    """What a non-zero rank runs of the configured stages."""
    return [s for s in stages if s == "train"]


class SilentTracker:
    """Accepts every Tracker call and records nothing."""

    def stage_run(self, name: str):
        return contextlib.nullcontext()

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None
