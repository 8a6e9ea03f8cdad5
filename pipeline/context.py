"""What one stage hands the next. Small and typed: stages share nothing else."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.data.decisions import Decisions
from pipeline.data.integrity import FileInfo
from pipeline.data.sources import DatasetIndex

if TYPE_CHECKING:  # the plan holds a Preprocess: albumentations and torch, not for a data-only run
    from pipeline.plan import Plan


@dataclass
class Context:
    output_dir: Path
    index: DatasetIndex | None = None
    decisions: Decisions | None = None  # data.decisions: a review's relabels, drops and keeps, read once
    infos: dict[str, FileInfo] | None = None  # every indexed file by path, decoded and hashed once a run
    # per-channel mean and std of the training images, in [0, 1]
    dataset_mean_std: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    plan: "Plan | None" = None  # what the stages that train resolved once (pipeline.plan)
    ckpt_path: Path | None = None
    onnx_path: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    callbacks: list = field(default_factory=list)  # Lightning callbacks the caller adds to the train stage's
    pruned_epoch: int | None = None  # the epoch after which a sweep's pruner stopped this trial
