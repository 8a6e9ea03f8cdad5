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


def median_ms(run: "Runner", batch: np.ndarray, runs: int) -> float:
    for _ in range(WARMUP_RUNS):
        run(batch)
    times = []
    for _ in range(runs):
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
