"""The device of the stages that run in one process (the sanity checks, validation and Grad-CAM, the audit's
embeddings): the training accelerator's first device, so that a GPU run checks, scores and embeds on the GPU
it trains on. The ONNX export and its parity check stay on the CPU, where an exported file is deployed."""

from collections.abc import Sequence
from typing import Any

import torch


def stage_device(accelerator: str, devices: Any = "auto") -> torch.device:
    """`trainer.accelerator` and `trainer.devices` as one torch device: the first CUDA device asked for (or
    MPS) when the accelerator allows it and the machine has it, else the CPU."""
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        chosen = list(devices) if isinstance(devices, Sequence) and not isinstance(devices, str) else [0]
        return torch.device("cuda", int(chosen[0]) if chosen else 0)
    if accelerator in ("auto", "gpu", "mps") and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def of_trainer(trainer_cfg) -> torch.device:
    """stage_device for the `trainer` config."""
    return stage_device(str(trainer_cfg.get("accelerator", "auto")), trainer_cfg.get("devices", "auto"))
