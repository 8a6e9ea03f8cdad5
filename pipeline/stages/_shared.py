"""Inputs several stages need and rebuild when run alone (not a stage itself): the inspected index, the
resized images, the checkpoint."""

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from pipeline.context import Context
from pipeline.data.audit import AuditReport, audit, drop_flagged
from pipeline.data.integrity import (
    FileInfo,
    Findings,
    apply_policies,
    find_problems,
    fingerprint,
    inspect_files,
)
from pipeline.data.resized_cache import CACHED_SPLITS, ResizedImages, load_or_build, nbytes
from pipeline.data.sources import DatasetIndex, build_index, resolve_root
from pipeline.errors import PipelineError
from pipeline.schema import plain
from pipeline.tracking import download_best_checkpoint, resolve_tracking_uri

if TYPE_CHECKING:
    from pipeline.data.transforms import Preprocess

log = logging.getLogger("pipeline.data")


def inspected_index(cfg: DictConfig) -> tuple[DatasetIndex, list[FileInfo], Findings, AuditReport | None]:
    """The index from cfg.data (seeded split), every file decoded and hashed (cached by path, size and
    mtime), the audit's report (data.audit; embeddings cached by content) and what the integrity checks
    found, near duplicates in content included; no policy applied yet."""
    root = resolve_root(cfg.data.root, cfg.data.cache_dir)
    d = cfg.data
    index = build_index(root, d.val_fraction, d.test_fraction, d.split_seed, d.holdout, d.calib_fraction)
    infos = inspect_split(cfg, index, None)
    report = None
    if cfg.data.audit:
        cache = Path(cfg.data.cache_dir) / "audit"
        from pipeline.devices import of_trainer  # torch: imported when the audit runs

        device = str(of_trainer(cfg.trainer))
        report = audit(index.records, infos, index.class_names, plain(cfg.audit), cache, cfg.seed, device)
    similar = report.similar if report else []
    max_distance = cfg.data.near_duplicate_distance
    findings = find_problems(index.records, infos, index.class_names, max_distance, similar)
    return index, infos, findings, report


def apply_all_policies(cfg: DictConfig, index, findings, report) -> tuple[DatasetIndex, dict[str, int]]:
    """The index the later stages train on: the corrupt-file, leakage, label-issue and outlier policies
    applied; with how many training images each audit policy dropped."""
    index = apply_policies(index, findings, cfg.data.on_corrupt, cfg.data.on_leakage)
    if findings.corrupt:
        first = findings.corrupt[0]
        log.warning(
            "skipped %d unreadable file(s), e.g. %s (%s)",
            len(findings.corrupt),
            first["path"],
            first["error"],
        )
    if report is None:
        return index, {}
    return drop_flagged(index, report, cfg.data.on_label_issue, cfg.data.on_outlier)


def ensure_index(cfg: DictConfig, ctx: Context) -> DatasetIndex:
    """The data stage's index, or, for a stage run alone, the same index rebuilt: same split, same
    policies, so an unreadable image is skipped (or refused) and a flagged one dropped here too."""
    if ctx.index is None:
        index, _, findings, report = inspected_index(cfg)
        ctx.index, _ = apply_all_policies(cfg, index, findings, report)
    return ctx.index


def inspect_split(cfg: DictConfig, index: DatasetIndex, split: str | None) -> list[FileInfo]:
    """FileInfo of a split's files (None: all), from the inspection cache the data stage filled."""
    paths = [r.path for r in (index.split(split) if split else index.records)]
    return inspect_files(paths, inspection_cache(cfg), cfg.data.inspect_workers, cfg.data.max_pixels)


def resized_images(cfg: DictConfig, index: DatasetIndex, preprocess: "Preprocess") -> ResizedImages | None:
    """The train and val images decoded and resized once (pipeline.data.resized_cache), or None to decode
    them each epoch: data.resized_cache=never, or auto and larger than data.resized_cache_mb."""
    records = [r for split in CACHED_SPLITS for r in index.split(split)]
    size = nbytes(len(records), preprocess.image_size)
    mode = cfg.data.resized_cache
    if mode == "never" or (mode == "auto" and size > cfg.data.resized_cache_mb * 2**20):
        if mode == "auto":
            log.info(
                "resized images would take %.0f MB, above data.resized_cache_mb=%d: decoding each epoch",
                size / 2**20,
                cfg.data.resized_cache_mb,
            )
        return None
    content = {info.path: fingerprint(info) for info in inspect_split(cfg, index, None)}
    paths = [r.path for r in records]
    folder = Path(cfg.data.cache_dir) / "resized"
    return load_or_build(paths, [content[p] for p in paths], preprocess, folder, cfg.data.inspect_workers)


def inspection_cache(cfg: DictConfig) -> Path:
    return Path(cfg.data.cache_dir) / "inspection.sqlite"


def has_checkpoint(cfg: DictConfig, ctx: Context) -> bool:
    return ctx.ckpt_path is not None or bool(cfg.ckpt_path) or bool(cfg.from_run)


def checkpoint_path(cfg: DictConfig, ctx: Context, stage: str) -> Path:
    """The checkpoint the train stage just wrote, else `ckpt_path=`, else the best checkpoint of the MLflow
    run `from_run=` (downloaded once; later stages reuse it through ctx.ckpt_path)."""
    if ctx.ckpt_path is not None:
        return ctx.ckpt_path
    if cfg.ckpt_path:
        return Path(cfg.ckpt_path)
    if cfg.from_run:
        uri = resolve_tracking_uri(cfg.tracking.uri, cfg.tracking.dir)
        run_id = str(cfg.from_run)
        ctx.ckpt_path = download_best_checkpoint(run_id, uri, ctx.output_dir / "from_run" / run_id)
        logging.getLogger(f"pipeline.{stage}").info(
            "from_run=%s: best checkpoint downloaded to %s", cfg.from_run, ctx.ckpt_path
        )
        return ctx.ckpt_path
    onnx = " or onnx_path=<file>" if stage == "validate" else ""
    raise PipelineError(
        f"{stage} needs a checkpoint: run the train stage first or pass ckpt_path=<file>, "
        f"from_run=<MLflow run id>{onnx}"
    )
