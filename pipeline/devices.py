"""The device of the stages that run in one process (the sanity checks, validation and Grad-CAM, the audit's
embeddings): the training accelerator's first device, so that a GPU run checks, scores and embeds on the GPU
it trains on. The ONNX export and its parity check stay on the CPU, where an exported file is deployed.
torch is imported where a device is chosen: a data-only run never loads it."""

import logging
from collections.abc import Sequence
from typing import Any

from pipeline.errors import PipelineError

log = logging.getLogger("pipeline")


def stage_device(accelerator: str, devices: Any = "auto"):
    """`trainer.accelerator` and `trainer.devices` as one torch device: the first CUDA device asked for (or
    MPS) when the accelerator allows it and the machine has it, else the CPU."""
    import torch

    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        chosen = list(devices) if isinstance(devices, Sequence) and not isinstance(devices, str) else [0]
        return torch.device("cuda", int(chosen[0]) if chosen else 0)
    if accelerator in ("auto", "gpu", "mps") and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def of_trainer(trainer_cfg):
    """stage_device for the `trainer` config."""
    return stage_device(str(trainer_cfg.get("accelerator", "auto")), trainer_cfg.get("devices", "auto"))


def parallel_job_device(n_jobs: int, job_num: int, gpus: int) -> list[int]:
    """The one GPU a job of Hydra's parallel launcher trains on: jobs running at the same time take distinct
    GPUs (job k the (k mod n_jobs)-th), so n_jobs must not exceed the GPUs there are."""
    if n_jobs > gpus:
        raise PipelineError(
            f"hydra/launcher=parallel runs {n_jobs} jobs at once and this machine has {gpus} GPU(s): set "
            f"hydra.launcher.n_jobs={max(gpus, 1)} or fewer, or train on the CPU (trainer=cpu)"
        )
    return [job_num % n_jobs]


def place_parallel_job(cfg) -> None:
    """A GPU job of Hydra's parallel launcher gets a GPU of its own (trainer.devices), saying so."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra = HydraConfig.get()
    if "Joblib" not in str(hydra.launcher.get("_target_", "")) or of_trainer(cfg.trainer).type != "cuda":
        return
    import torch

    chosen = parallel_job_device(int(hydra.launcher.n_jobs), int(hydra.job.num), torch.cuda.device_count())
    cfg.trainer.devices = chosen
    log.info("parallel job %d trains on GPU %d (trainer.devices=%s)", hydra.job.num, chosen[0], chosen)
