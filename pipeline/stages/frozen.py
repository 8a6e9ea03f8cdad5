"""The frozen pretrained backbone's features of one split of the run's index, cached by
pipeline.data.feature_cache: what the train stage fits a head on, and what the calibrate stage fits a fitted
probe's unknown score on, from the same pass (not a stage itself)."""

from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig
from torch import nn

from pipeline.context import Context
from pipeline.cpu_share import scoring_workers
from pipeline.data.feature_cache import backbone_identity, cached_features
from pipeline.data.integrity import fingerprint
from pipeline.data.transforms import Preprocess
from pipeline.stages.index import ensure_index, inspect_split


def split_features(
    cfg: DictConfig, ctx: Context, layers: nn.Module, preprocess: Preprocess, spec: dict[str, Any], split: str
) -> tuple[list[np.ndarray], np.ndarray]:
    """(one array a layer, labels) of `split` through `layers` (pipeline.data.feature_cache.Layers) of the
    backbone `spec` (the model config it was built from)."""
    records = ensure_index(cfg, ctx).split(split)
    device_type = next(layers.parameters()).device.type
    content = {info.path: fingerprint(info) for info in inspect_split(cfg, ctx, split)}
    features = cached_features(
        layers,
        records,
        [content[r.path] for r in records],
        preprocess,
        Path(cfg.data.cache_dir) / "features",
        backbone_identity(spec),
        {"batch_size": cfg.data.batch_size, "workers": scoring_workers(cfg.data.num_workers, device_type)},
        cfg.data.feature_cache_mb,
    )
    return features, np.array([r.label for r in records])
