"""The one exception type whose message is shown to users as a single line, and the lines for failures that
come from outside the pipeline but are the user's to fix (a SLURM job the cluster refuses, a full disk)."""

import sqlite3


class PipelineError(Exception):
    """Bad input or a failed check: the message says what is wrong and what to do."""


def message(err: BaseException) -> str:
    """An exception's own message. One raised in a DataLoader worker comes back from torch with the worker's
    traceback put in front of it (`Caught ... Original Traceback ...`): its last line is the original."""
    text = str(err).strip()
    if "\nOriginal Traceback" in text:
        text = text.rsplit("\n", 1)[-1].split(": ", 1)[-1]  # "pipeline.errors.PipelineError: <message>"
    return text


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none."""
    text = message(err)
    return text.splitlines()[0] if text else type(err).__name__


# sbatch's refusal -> the setting that asked for it (conf/hydra/launcher/slurm.yaml)
SBATCH_HINTS = {
    "generic resource": "no GPUs there? trainer=cpu requests none, or hydra.launcher.gpus_per_node=<n>",
    "CPU count": "hydra.launcher.cpus_per_task=<cores a task may use>",
    "Memory specification": "hydra.launcher.mem_gb=<memory a node has>",
    "partition": "hydra.launcher.partition=<a partition sinfo lists>",
    "time limit": "hydra.launcher.timeout_min=<minutes the partition allows>",
}


def scheduler_refusal(err: BaseException) -> str | None:
    """`SLURM refused the job: <sbatch's line> (<the setting to change>)` for a submitit submission error."""
    if type(err).__module__.split(".")[0] != "submitit" or "sbatch" not in str(err):
        return None
    lines = [x.strip() for x in str(err).splitlines() if "error" in x] or [first_line(err)]
    for line in lines:  # the first line a hint matches, else the first
        for key, hint in SBATCH_HINTS.items():
            if key.lower() in line.lower():
                return f"SLURM refused the job: {line} ({hint})"
    return f"SLURM refused the job: {lines[0]}"


def sqlite_full(err: BaseException) -> bool:
    """SQLite's "database or disk is full": a full disk, which SQLite reports without naming its file."""
    return isinstance(err, sqlite3.OperationalError) and (
        getattr(err, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(err)
    )
