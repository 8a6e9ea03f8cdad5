"""Which process this is in a multi-process (DDP) run, and the silent tracker that non-zero ranks use.

Lightning's DDP launcher starts ranks 1..N-1 as new `python -m pipeline ...` processes. They must only join
training: the data and sanity checks, validation, export and all MLflow records belong to rank 0.
"""

import atexit
import contextlib
import os
import sys
from collections.abc import Iterator

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


LAUNCH_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")  # Lightning sets


@contextlib.contextmanager
def ranks_run_this_job() -> Iterator[None]:
    """In a Hydra multirun job, fitting starts and ends this job's own ranks. Lightning's DDP launcher starts
    the other ranks by re-running the command line (the whole sweep, `-m` and every value) in hydra.run.dir
    (not the job's folder in a sweep); while fitting, both are this job's. It then leaves its rendezvous
    variables (LOCAL_RANK makes it take the next job's ranks as started by someone else) and the process group
    (its peers gone) behind: the next job in this process would wait for ranks that never come."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    if hydra is None or hydra.mode != RunMode.MULTIRUN:
        yield
        return
    argv, run_dir = sys.argv, hydra.run.dir
    launch = {name: os.environ.get(name) for name in LAUNCH_VARIABLES}
    sys.argv = [argv[0], *hydra.overrides.task]
    set_run_dir(hydra, hydra.runtime.output_dir)
    try:
        yield
    finally:
        sys.argv = argv
        set_run_dir(hydra, run_dir)
        end_launch(launch)


def set_run_dir(hydra, folder: str) -> None:
    from omegaconf import read_write

    with read_write(hydra):
        hydra.run.dir = folder


def end_launch(launch: dict[str, str | None]) -> None:
    """The rendezvous variables as they were before fitting, and no process group."""
    for name, value in launch.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    leave_process_group()


def leave_process_group() -> None:
    """End this process's part in the process group, if it has one."""
    import torch.distributed

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def leave_process_group_at_exit() -> None:
    """Lightning ends an NCCL group at exit but leaves a Gloo one (CPU DDP) to the interpreter's teardown,
    where its threads can end in `terminate called without an active exception`: the rank aborts after its
    work is done and torchrun reports the node failed."""
    atexit.unregister(leave_process_group)  # once, however many runs this process fits
    atexit.register(leave_process_group)


def worker_stages(stages: list[str]) -> list[str]:
    """What a non-zero rank runs of the configured stages."""
    return [s for s in stages if s == "train"]


class SilentTracker:
    """Accepts every Tracker call and records nothing."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None
