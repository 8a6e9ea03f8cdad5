"""The inspected index of the run's images: built and inspected by the data stage, rebuilt the same way
(same split, same policies) by a stage run alone (not a stage itself)."""

import logging
from pathlib import Path

from omegaconf import DictConfig

from pipeline.context import Context
from pipeline.data.audit import AuditReport, audit, drop_flagged
from pipeline.data.integrity import (
    FileInfo,
    Findings,
    apply_policies,
    find_problems,
    inspect_files,
)
from pipeline.data.sources import DatasetIndex, build_index, resolve_root
from pipeline.schema import plain

log = logging.getLogger("pipeline.data")


def inspected_index(cfg: DictConfig) -> tuple[DatasetIndex, list[FileInfo], Findings, AuditReport | None]:
    """The index from cfg.data (seeded split), every file decoded and hashed (cached by path, size and
    mtime), the audit's report (data.audit; embeddings cached by content) and what the integrity checks
    found, near duplicates in content included; no policy applied yet."""
    root = resolve_root(cfg.data.root, cfg.data.cache_dir)
    d = cfg.data
    index = build_index(root, d.val_fraction, d.test_fraction, d.split_seed, d.holdout, d.calib_fraction)
    infos = inspect_records(cfg, index.records)
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
        index, infos, findings, report = inspected_index(cfg)
        ctx.infos = {i.path: i for i in infos}
        ctx.index, _ = apply_all_policies(cfg, index, findings, report)
    return ctx.index


def inspect_split(cfg: DictConfig, ctx: Context, split: str | None) -> list[FileInfo]:
    """FileInfo of a split's files (None: all) of the run's index, inspected once a run."""
    index = ensure_index(cfg, ctx)
    if ctx.infos is None:  # an index handed over without its inspection
        ctx.infos = {i.path: i for i in inspect_records(cfg, index.records)}
    return [ctx.infos[r.path] for r in (index.split(split) if split else index.records)]


def inspect_records(cfg: DictConfig, records: list) -> list[FileInfo]:
    """Each file decoded and hashed, or read from the inspection cache (by path, size and mtime)."""
    paths = [r.path for r in records]
    return inspect_files(paths, inspection_cache(cfg), cfg.data.inspect_workers, cfg.data.max_pixels)


def inspection_cache(cfg: DictConfig) -> Path:
    return Path(cfg.data.cache_dir) / "inspection.sqlite"
