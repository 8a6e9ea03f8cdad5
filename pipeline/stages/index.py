"""The inspected index of the run's images: built and inspected by the data stage, rebuilt the same way
(same split, same policies) by a stage run alone (not a stage itself)."""

import logging
import re
from pathlib import Path

from omegaconf import DictConfig

from pipeline.context import Context
from pipeline.data.audit import AuditReport, audit, drop_flagged
from pipeline.data.decisions import ARTIFACT, Decisions, kept
from pipeline.data.decisions import apply as apply_decisions
from pipeline.data.decisions import load as load_decisions
from pipeline.data.integrity import (
    FileInfo,
    Findings,
    apply_policies,
    find_problems,
    inspect_files,
)
from pipeline.data.sources import DatasetIndex, Labelling, build_index, resolve_root
from pipeline.errors import PipelineError
from pipeline.schema import plain

log = logging.getLogger("pipeline.data")
RUN_ID = re.compile(r"[0-9a-f]{32}")


def inspected_index(
    cfg: DictConfig, decisions: Decisions | None = None
) -> tuple[DatasetIndex, list[FileInfo], Findings, AuditReport | None]:
    """The index from cfg.data (seeded split) with a review's `decisions` applied, every file decoded and
    hashed (cached by path, size and mtime), the audit's report (data.audit; embeddings cached by content;
    what a reviewer kept not flagged again) and what the integrity checks found, near duplicates in content
    included; no policy applied yet."""
    root = resolve_root(cfg.data.root, cfg.data.cache_dir)
    d = cfg.data
    labelling = Labelling(d.task, d.label_separator, d.on_corrupt == "fail")
    index = build_index(
        root, d.val_fraction, d.test_fraction, d.split_seed, d.holdout, d.calib_fraction, labelling
    )
    if decisions is not None:
        index, unmatched = apply_decisions(index, decisions)
        log.info("decisions of run %s applied: %s", decisions.run or "?", described(decisions.counts()))
        if unmatched:
            log.warning("%d decision(s) name no image of this folder, e.g. %s", len(unmatched), unmatched[0])
    infos = inspect_records(cfg, index.records)
    report = None
    if cfg.data.audit:
        cache = Path(cfg.data.cache_dir) / "audit"
        from pipeline.devices import of_trainer  # torch: imported when the audit runs

        device = str(of_trainer(cfg.trainer))
        settings = plain(cfg.audit)
        report = audit(index.records, infos, index.class_names, settings, cache, cfg.seed, device, index.task)
        report = report.without(kept(decisions, index.root))
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
        index, infos, findings, report = inspected_index(cfg, review_decisions(cfg, ctx))
        ctx.infos = {i.path: i for i in infos}
        ctx.index, _ = apply_all_policies(cfg, index, findings, report)
    return ctx.index


def described(counts: dict[str, int]) -> str:
    past = {"relabel": "relabelled", "drop": "dropped", "keep": "kept"}
    return ", ".join(f"{n} {past[action]}" for action, n in counts.items())


def review_decisions(cfg: DictConfig, ctx: Context) -> Decisions | None:
    """data.decisions, read once a run: a decisions file, or the id of the run whose review saved one."""
    if cfg.data.decisions is None:
        return None
    if ctx.decisions is None:
        ctx.decisions = load_decisions(decisions_file(cfg, cfg.data.decisions))
    return ctx.decisions


def decisions_file(cfg: DictConfig, value: str) -> Path:
    """The decisions file data.decisions names: a path, or a run id whose review logged one to MLflow."""
    path = Path(value).expanduser()
    if path.is_file():
        return path
    if not RUN_ID.fullmatch(value):
        raise PipelineError(f"data.decisions={value}: no such file, and not an MLflow run id")
    from pipeline.tracking import run_artifact  # MLflow: only when a run id names the decisions

    target = Path(cfg.data.cache_dir) / "decisions" / value
    return run_artifact(cfg.tracking.uri, cfg.tracking.dir, value, ARTIFACT, target)


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
