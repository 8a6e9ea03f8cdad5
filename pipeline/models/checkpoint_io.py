"""Checkpoints written next to their target and renamed into place (pipeline.atomic), so a kill mid-write
(SIGKILL, a full disk) never leaves a truncated last.ckpt behind: the previous one stays intact."""

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from pipeline.atomic import written_in_place

FULL_BELOW_BYTES = 2**20  # free space left on a disk that refused a checkpoint: it is full


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with written_in_place(path) as partial:
                torch.save(checkpoint, partial)
        except RuntimeError as err:  # torch's zip writer reports a short write on a full disk without errno
            if shutil.disk_usage(path.parent).free < FULL_BELOW_BYTES:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from err
            raise


# what a whole checkpoint holds beyond ModelCheckpoint(save_weights_only=True)'s, WeightAveraging's included
TRAINING_STATE = ("optimizer_states", "lr_schedulers", "callbacks", "current_model_state", "averaging_state")


def keep_weights_only(path: Path) -> None:
    """Rewrite a whole checkpoint as a weights-only one, in place and atomically. With averaged weights the
    best checkpoint is saved whole (Lightning puts the average in state_dict only then); the optimizer state
    and the raw weights beside it would make the file about four times the model's size."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    for key in TRAINING_STATE:
        checkpoint.pop(key, None)
    AtomicCheckpointIO().save_checkpoint(checkpoint, path)


def store_trust(source: Path, target: Path, trust: dict[str, Any]) -> None:
    """The checkpoint at `source` with what the calibrate stage fitted under "trust" (temperature, prediction
    sets, unknown answer), written to `target` (the same file or a copy) atomically: load_classifier reads it
    back as `classifier.trust`."""
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    checkpoint["trust"] = trust
    AtomicCheckpointIO().save_checkpoint(checkpoint, target)
