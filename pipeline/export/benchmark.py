"""Latency and throughput of inference runners on random inputs of the model's size.

Median of timed runs after a warm-up (first runs allocate buffers and pick kernels), so one slow run on a
shared machine does not decide the figure.
"""

import time
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch and onnxruntime stay out of this module at run time
    from pipeline.onnx_io import Runner

WARMUP_RUNS = 3
BATCH_SIZES = (1, 32)  # one image at a time (serving) and a batch (offline scoring)
# A large model at batch 32 on a few CPU cores takes most of a second a run: past this many seconds per
# runner and batch, warm-up and timing stop early (at least MIN_RUNS timed), so the export's figures do not
# cost it half its time; `make bench-serve` measures latency properly.
BUDGET_S, MIN_RUNS = 1.0, 5


def median_ms(run: "Runner", batch: np.ndarray, runs: int) -> float:
    started = time.perf_counter()
    for _ in range(WARMUP_RUNS):
        run(batch)
        if time.perf_counter() - started > BUDGET_S / 2:  # one warm-up run at least
            break
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < runs and (len(times) < MIN_RUNS or time.perf_counter() - started < BUDGET_S):
        start = time.perf_counter()
        run(batch)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1000


def latency(
    runners: "dict[str, Runner]", image_size: int, batch_sizes: tuple[int, ...], runs: int
) -> dict[str, float]:
    """{'latency_ms_<runner>_b<n>': median ms per batch, 'throughput_<runner>_b<n>': images per second}."""
    rng = np.random.default_rng(0)
    out = {}
    for n in batch_sizes:
        batch = rng.standard_normal((n, 3, image_size, image_size), dtype=np.float32)
        for name, run in runners.items():
            ms = median_ms(run, batch, runs)
            out[f"latency_ms_{name}_b{n}"] = ms
            out[f"throughput_{name}_b{n}"] = n / ms * 1000
    return out
