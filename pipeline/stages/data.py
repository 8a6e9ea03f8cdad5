"""Data stage: build the index (split once, seeded), measure the dataset, log the figures."""

import json
import logging
import random
from dataclasses import asdict

from omegaconf import DictConfig

from pipeline import plots
from pipeline.context import Context
from pipeline.data.images import load_rgb
from pipeline.data.integrity import apply_policies
from pipeline.data.stats import channel_mean_std, dataset_stats
from pipeline.stages._shared import inspected_index
from pipeline.tracking import Tracker

log = logging.getLogger("pipeline.data")


def _table(stats: dict) -> str:
    splits = list(stats["counts"])
    lines = [f"{'class':<20}" + "".join(f"{s:>8}" for s in splits)]
    for name in stats["class_names"]:
        lines.append(f"{name:<20}" + "".join(f"{stats['counts'][s][name]:>8}" for s in splits))
    return "\n".join(lines)


def _check_integrity(cfg: DictConfig, ctx: Context, tracker: Tracker):
    """Decode and hash every file, apply the corrupt and leakage policies, log the findings."""
    index, infos, findings = inspected_index(cfg)
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
    ctx.index = apply_policies(index, findings, cfg.data.on_corrupt, cfg.data.on_leakage)
    kept = {r.path for r in ctx.index.records}
    return ctx.index, [i for i in infos if i.path in kept]


def _samples(index, per_class: int, seed: int) -> dict[str, list]:
    rng = random.Random(seed)
    out = {}
    for label, name in enumerate(index.class_names):
        records = [r for r in index.split("train") if r.label == label]
        out[name] = [load_rgb(r.path) for r in rng.sample(records, min(per_class, len(records)))]
    return out


def run(cfg: DictConfig, ctx: Context, tracker: Tracker) -> Context:
    index, infos = _check_integrity(cfg, ctx, tracker)
    stats = dataset_stats(index, infos)
    train_paths = {r.path for r in index.split("train")}
    mean, std = channel_mean_std([i for i in infos if i.path in train_paths])
    ctx.dataset_mean_std = (mean, std)
    stats["train_channel_mean"], stats["train_channel_std"] = list(mean), list(std)
    log.info(
        "%d images, %d classes from %s\n%s",
        stats["num_images"],
        stats["num_classes"],
        index.root,
        _table(stats),
    )

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
    for name, fig in (
        ("class_distribution", plots.class_distribution(stats["counts"])),
        ("image_sizes", plots.image_sizes([i.width for i in infos], [i.height for i in infos])),
        ("samples", plots.sample_grid(_samples(index, per_class=6, seed=cfg.seed))),
    ):
        tracker.log_figure(fig, f"plots/{name}.png")
        plots.close(fig)
    ctx.metrics.update(metrics)
    return ctx
