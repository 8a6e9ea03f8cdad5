"""A run's share of the CPU, so that runs side by side, or loader workers beside compute, do not oversubscribe
it.

Hydra's parallel launcher (joblib's loky backend) starts each of its n jobs with OMP_NUM_THREADS set to
cores / n, which torch reads for its compute threads. Worker processes are the pipeline's own choice: they
are fitted to the same share here: oversubscribed cores slow every process many times over (docs/design.md).
"""

import logging
import multiprocessing
import os
from multiprocessing.context import BaseContext

from omegaconf import DictConfig

log = logging.getLogger("pipeline")
WORKER_SETTINGS = ("data.num_workers", "data.inspect_workers")
# scikit-learn's fits on image features (the audit's label issues, the head fit): OpenBLAS's threads contend
# with scikit-learn's OpenMP loss threads and torch's; one BLAS thread was several times faster, with the same
# results (docs/design.md)
BLAS_THREADS = 1


def one_blas_thread():
    """A context in which BLAS runs BLAS_THREADS threads, the setting restored on leaving."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=BLAS_THREADS, user_api="blas")


def loader_workers(requested: int, resized: bool) -> int:
    """Loader worker processes for training. With the images resized once (pipeline.data.resized_cache) a
    sample costs only its augmentation, and workers mostly take CPU from the compute threads (docs/design.md).
    So with the cache, at most a quarter of the cores."""
    cap = len(os.sched_getaffinity(0)) // 4
    if not resized or requested <= cap:
        return requested
    log.info("data.num_workers=%d lowered to %d: images come resized from the cache", requested, cap)
    return cap


def scoring_workers(requested: int, device_type: str) -> int:
    """Loader worker processes for a pass that decodes and scores, without augmentation (head-fit features,
    calibration, validation, the export's checks). On the CPU the network's threads already take every core,
    and decoding workers beside them added processes, not speed (docs/design.md): at most a quarter of the
    cores. On an accelerator they decode while it computes: as requested."""
    if device_type != "cpu":
        return requested
    return min(requested, len(os.sched_getaffinity(0)) // 4)


def thread_budget() -> int | None:
    """The compute threads a launcher gave this process (OMP_NUM_THREADS), or None when none was set."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def fit_workers_to_share(cfg: DictConfig) -> None:
    """Lower data.num_workers and data.inspect_workers to this process's thread budget, saying so."""
    budget = thread_budget()
    if budget is None:
        return
    for key in WORKER_SETTINGS:
        section, name = key.split(".")
        wanted = cfg[section][name]
        if wanted > budget:
            cfg[section][name] = budget
            log.info(
                "%s=%d lowered to %d: this run's share of the CPU (OMP_NUM_THREADS=%d)",
                key,
                wanted,
                budget,
                budget,
            )


def worker_context() -> BaseContext:
    """How loader and pool workers start: the platform's default, whatever this process was handed. A job of
    the parallel launcher runs with loky's start method as its default, whose processes neither torch's
    DataLoader nor ProcessPoolExecutor can start ('Process' object has no attribute 'env')."""
    return multiprocessing.get_context(multiprocessing.get_all_start_methods()[0])
