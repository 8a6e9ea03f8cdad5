"""Checkpoints written next to their target and renamed into place, so a kill mid-write (SIGKILL, a full
disk) never leaves a truncated last.ckpt behind: the previous one stays intact."""

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        try:
            torch.save(checkpoint, partial)
            os.replace(partial, path)  # atomic on one filesystem
        finally:
            partial.unlink(missing_ok=True)
