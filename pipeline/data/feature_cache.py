"""The frozen pretrained backbone's features of a split, computed once and kept on disk: a head fitted on the
penultimate ones (pipeline.models.head_fit) then costs seconds on a second run of the same folder, size and
backbone instead of a pass over every image, and the unknown score of a model whose backbone stayed frozen
reads the training images' layers (pipeline.models.trusted) from the same pass.

One file per key (the backbone: model name, where its weights come from, the weight file's size and time;
the preprocessing; the images' content fingerprints, in order) under `data.cache_dir/features/`, written
beside its name and renamed into place; the oldest files go when the folder passes its size bound.
"""

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.atomic import written_in_place
from pipeline.data.datamodule import image_loader
from pipeline.data.images import ImageDataset
from pipeline.data.transforms import Preprocess, eval_transform
from pipeline.models.trusted import own_split
from pipeline.models.weights import resolve_weights_path
from pipeline.progress import Progress

log = logging.getLogger("pipeline.train")
VERSION = 2  # of the file layout and of what the features are: a change writes new files


class Layers(nn.Module):
    """images -> the features pipeline.models.trusted's split reads, the penultimate ones (what the
    classifier head reads) last."""

    def __init__(self, network: nn.Module, image_size: int):
        super().__init__()
        self.split = own_split(network, image_size)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.split(x)[1]


def backbone_identity(spec: dict[str, Any]) -> dict[str, Any]:
    """What decides the pretrained backbone's weights: its config, and a local weight file's size and time."""
    identity = {key: spec.get(key) for key in ("name", "pretrained", "weights", "kwargs")}
    if spec.get("weights"):
        path = resolve_weights_path(str(spec["weights"]))
        if path.is_file():
            stat = path.stat()
            identity["weights_file"] = [stat.st_size, stat.st_mtime_ns]
    return identity


def cache_key(identity: dict[str, Any], preprocess: Preprocess, fingerprints: list[str]) -> str:
    described = json.dumps(
        [VERSION, identity, preprocess.to_dict(), fingerprints], sort_keys=True, default=str
    )
    return hashlib.sha256(described.encode()).hexdigest()[:32]


def cached_features(
    layers: nn.Module,
    records: list,
    fingerprints: list[str],
    preprocess: Preprocess,
    folder: Path,
    identity: dict[str, Any],
    loader: dict[str, int],
    limit_mb: float,
) -> list[np.ndarray]:
    """One (len(records), D) float32 array a layer, of `records` (their content `fingerprints` in the same
    order) through `layers` (images -> a list of features, in eval mode), from `folder` when it holds them;
    `loader`: batch_size and workers."""
    target = folder / f"{cache_key(identity, preprocess, fingerprints)}.npz"
    if target.is_file():
        target.touch()  # recently used: the last to go
        with np.load(target) as saved:
            return [saved[f"arr_{i}"] for i in range(len(saved.files))]
    features = computed(layers, records, preprocess, loader["batch_size"], loader["workers"])
    folder.mkdir(parents=True, exist_ok=True)
    with written_in_place(target) as partial, open(partial, "wb") as sink:
        np.savez(sink, *features)
    keep_within(folder, limit_mb * 2**20)
    return features


@torch.inference_mode()
def computed(layers: nn.Module, records: list, preprocess: Preprocess, batch_size: int, workers: int):
    images = ImageDataset(records, eval_transform(preprocess))
    progress = Progress("train", "features of the frozen backbone", len(images))
    device = next(layers.parameters()).device
    batches = []
    for x, _ in image_loader(images, batch_size, workers):
        batches.append([f.float().cpu() for f in layers(x.to(device))])
        progress.advance(len(x))
    return [torch.cat(layer).numpy() for layer in zip(*batches, strict=True)]


def keep_within(folder: Path, limit_bytes: float) -> None:
    """Remove the least recently used feature files until the folder holds at most `limit_bytes`."""
    files = sorted(folder.glob("*.npz"), key=lambda p: p.stat().st_mtime)
    total = sum(p.stat().st_size for p in files)
    for path in files[:-1]:  # the newest stays, whatever its size
        if total <= limit_bytes:
            break
        total -= path.stat().st_size
        path.unlink(missing_ok=True)
