"""Data stage: build the index (split once, seeded), measure the dataset, log the figures."""

import json
import logging
import random
from dataclasses import asdict

import numpy as np
from omegaconf import DictConfig

from pipeline import plots
from pipeline.context import Context
from pipeline.data.audit import AuditReport, write_csvs
from pipeline.data.decode import decode_rgb, thumbnail_rgb
from pipeline.data.stats import channel_mean_std, dataset_stats
from pipeline.run_story import data_name, split_datasets
from pipeline.stages.index import apply_all_policies, inspected_index, review_decisions
from pipeline.tracking import Tracker

log = logging.getLogger("pipeline.data")


def warn_unscored_classes(stats: dict) -> None:
    """A class with no val or test image gets no score there, while the split's accuracy looks whole."""
    for split in ("val", "test"):
        missing = [name for name in stats["class_names"] if stats["counts"].get(split, {}).get(name, 1) == 0]
        if missing:
            log.warning(
                "no %s images of %d class(es) (%s): the %s scores leave them out; add images to them",
                split,
                len(missing),
                ", ".join(missing[:5]),
                split,
            )


def _table(stats: dict) -> list[str]:
    splits = list(stats["counts"])
    lines = [f"{'label' if 'co_occurrence' in stats else 'class':<20}" + "".join(f"{s:>8}" for s in splits)]
    for name in stats["class_names"]:
        lines.append(f"{name:<20}" + "".join(f"{stats['counts'][s][name]:>8}" for s in splits))
    return lines


def _quality_by_image(report: AuditReport) -> dict[str, list[tuple[str, float]]]:
    by_image: dict[str, list[tuple[str, float]]] = {}
    for row in report.quality:
        by_image.setdefault(row["path"], []).append((row["issue"].replace("_", " "), row["score"]))
    return by_image


def _audit_grids(report: AuditReport, per_plot: int) -> dict[str, plots.Figure]:
    """The flagged images a person should look at, captioned with what the audit says of each (an image
    with several quality issues is shown once, with all of them)."""
    quality = _quality_by_image(report)
    captioned = {
        "label_issues": [(r["path"], f"given {r['given_label']}\nsuggested {r['suggested_label']}")
                         for r in report.label_issues],
        "outliers": [(r["path"], f"{r['label']} ({r['split']})\ndistance {r['score']:.3f}")
                     for r in report.outliers],
        "quality": [(path, "\n".join(f"{issue} {score:g}" for issue, score in found))
                    for path, found in quality.items()],
    }  # fmt: skip
    grids = {}
    for name, rows in captioned.items():
        if rows:
            shown = rows[:per_plot]
            images = [thumbnail_rgb(path) for path, _ in shown]
            title = f"{name.replace('_', ' ').capitalize()}: {len(shown)} of {len(rows)} images shown"
            grids[name] = plots.image_grid(images, [c for _, c in shown], [True] * len(shown), title)
    return grids


def _log_audit(cfg: DictConfig, ctx: Context, tracker: Tracker, report: AuditReport) -> None:
    """Counts and the most suspect paths on the console; CSVs, metrics and image grids in MLflow."""
    summary = report.summary()
    counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in summary.items())
    log.info("audit (%.1f s, embedded on %s): %s", report.seconds, report.device, counts)
    tracker.log_params({"data.audit_device": report.device})
    for row in report.label_issues[:3]:
        given, suggested = row["given_label"], row["suggested_label"]
        log.warning("suspected label issue: %s (given %s, looks like %s)", row["path"], given, suggested)
    for row in report.outliers[:3]:
        log.warning("outlier: %s (%s, %s)", row["path"], row["label"], row["split"])
    for path, found in list(_quality_by_image(report).items())[:3]:
        log.warning("%s: %s", ", ".join(issue for issue, _ in found), path)
    for path in write_csvs(report, ctx.output_dir / "audit"):
        tracker.log_artifact(path, "audit")
    tracker.log_metrics({f"data/{k}": v for k, v in summary.items()}, headline=True)
    tracker.log_metrics({"data/audit_seconds": report.seconds})
    for name, fig in _audit_grids(report, cfg.audit.grid_images).items():
        tracker.log_figure(fig, f"plots/{name}.png")
        plots.close(fig)


def _check_integrity(cfg: DictConfig, ctx: Context, tracker: Tracker):
    """Decode and hash every file, audit the content, apply the policies, log the findings."""
    index, infos, findings, report = inspected_index(cfg, review_decisions(cfg, ctx))
    ctx.infos = {i.path: i for i in infos}
    if ctx.decisions is not None:
        tracker.log_params({"data.decisions_version": ctx.decisions.digest()})
        tracker.log_dict(ctx.decisions.as_file(), "decisions/decisions.yaml")
    summary = findings.summary()
    log.info("integrity: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in summary.items()))
    for pair in findings.leakage[:5]:
        log.warning(
            "leakage (%s): %s [%s] ~ %s [%s]",
            pair["kind"],
            pair["a"],
            pair["a_split"],
            pair["b"],
            pair["b_split"],
        )
    tracker.log_dict(asdict(findings), "integrity.json")
    tracker.log_metrics({f"data/{k}": v for k, v in summary.items()}, headline=True)
    if report is not None:
        _log_audit(cfg, ctx, tracker, report)
    ctx.index, dropped = apply_all_policies(cfg, index, findings, report)
    for kind, count in dropped.items():
        if count:
            policy = "on_label_issue" if kind == "label_issues" else "on_outlier"
            log.info("dropped %d training image(s) flagged in %s (data.%s=drop)", count, kind, policy)
    kept = {r.path for r in ctx.index.records}
    return ctx.index, [i for i in infos if i.path in kept]


def _samples(index, per_class: int, seed: int) -> dict[str, list]:
    rng = random.Random(seed)
    out = {}
    for label, name in enumerate(index.class_names):
        records = [r for r in index.split("train") if label in (r.labels or (r.label,))]
        out[name] = [decode_rgb(r.path) for r in rng.sample(records, min(per_class, len(records)))]
    return out


def log_label_sets(stats: dict, root: str, tracker: Tracker) -> None:
    """A multi-label index's labels an image, and which labels show together (a plot)."""
    per_image = stats["labels_per_image"]
    log.info(
        "%d images, %d labels (%.2f an image, %d to %d) from %s", stats["num_images"], stats["num_classes"],
        per_image["mean"], per_image["min"], per_image["max"], root,
    )  # fmt: skip
    tracker.log_metrics({"data/labels_per_image": per_image["mean"]}, headline=True)
    together = np.array(stats["co_occurrence"])
    shares = together / np.maximum(1, np.diag(together))[:, None]
    fig = plots.confusion_matrix(
        together, shares, stats["class_names"], "images showing both labels (colour: share of the row's)",
        axes=("also shows", "label"),
    )  # fmt: skip
    tracker.log_figure(fig, "plots/label_co_occurrence.png")
    plots.close(fig)


def say_counts(stats: dict, root: str, tracker: Tracker) -> None:
    """Images and classes (labels) per split, in the log; a class a split lacks, in a warning."""
    if "co_occurrence" in stats:
        log_label_sets(stats, root, tracker)
    else:
        log.info("%d images, %d classes from %s", stats["num_images"], stats["num_classes"], root)
    for line in _table(stats):
        log.info("%s", line)
    warn_unscored_classes(stats)


def run(cfg: DictConfig, ctx: Context, tracker: Tracker) -> Context:
    index, infos = _check_integrity(cfg, ctx, tracker)
    stats = dataset_stats(index, infos)
    train_paths = {r.path for r in index.split("train")}
    mean, std = channel_mean_std([i for i in infos if i.path in train_paths])
    ctx.dataset_mean_std = (mean, std)
    stats["train_channel_mean"], stats["train_channel_std"] = list(mean), list(std)
    say_counts(stats, index.root, tracker)
    index_csv = ctx.output_dir / "index.csv"
    index.to_csv(index_csv)
    (ctx.output_dir / "stats.json").write_text(json.dumps(stats, indent=2))

    tracker.log_params(
        {"data.source": "digits" if cfg.data.root is None else "folder", "data.root": index.root}
    )
    metrics = {
        "data/num_images": stats["num_images"],
        "data/num_classes": stats["num_classes"],
        "data/imbalance_ratio": stats["imbalance_ratio"],
        **{f"data/{split}_images": n for split, n in stats["split_sizes"].items()},
    }
    tracker.log_metrics(metrics, headline=True)
    tracker.log_metrics(
        {
            "data/width_median": stats["width"]["median"],
            "data/height_median": stats["height"]["median"],
            "data/size_outliers": len(stats["size_outliers"]),
        }
    )
    for outlier in stats["size_outliers"][:5]:
        log.info("size outlier: %s (%dx%d)", outlier["path"], outlier["width"], outlier["height"])
    tracker.log_artifact(ctx.output_dir / "stats.json")
    tracker.log_artifact(index_csv)
    version = ctx.decisions.digest() if ctx.decisions else None
    tracker.log_datasets(split_datasets(index, infos, data_name(cfg), version))
    for name, fig in (
        ("class_distribution", plots.class_distribution(stats["counts"])),
        ("image_sizes", plots.image_sizes([i.width for i in infos], [i.height for i in infos])),
        ("samples", plots.sample_grid(_samples(index, per_class=6, seed=cfg.seed))),
    ):
        tracker.log_figure(fig, f"plots/{name}.png")
        plots.close(fig)
    ctx.metrics.update(metrics)
    return ctx
