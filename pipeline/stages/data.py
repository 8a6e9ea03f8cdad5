"""Data stage: build the index (split once, seeded), measure the dataset, log the figures."""

import json

from omegaconf import DictConfig

from pipeline import plots
from pipeline.context import Context
from pipeline.data.stats import channel_mean_std, dataset_stats
from pipeline.stages._shared import ensure_index
from pipeline.tracking import Tracker


def _table(stats: dict) -> str:
    splits = list(stats["counts"])
    lines = [f"{'class':<20}" + "".join(f"{s:>8}" for s in splits)]
    for name in stats["class_names"]:
        lines.append(f"{name:<20}" + "".join(f"{stats['counts'][s][name]:>8}" for s in splits))
    return "\n".join(lines)


def run(cfg: DictConfig, ctx: Context, tracker: Tracker) -> Context:
    index = ensure_index(cfg, ctx)
    stats = dataset_stats(index)
    mean, std = channel_mean_std(index.split("train"), seed=cfg.seed)
    ctx.dataset_mean_std = (mean, std)
    stats["train_channel_mean"], stats["train_channel_std"] = list(mean), list(std)
    print(f"[data] {stats['num_images']} images, {stats['num_classes']} classes from {index.root}")
    print(_table(stats))

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
        {"data/width_median": stats["width"]["median"], "data/height_median": stats["height"]["median"]}
    )
    tracker.log_artifact(ctx.output_dir / "stats.json")
    tracker.log_artifact(index_csv)
    fig = plots.class_distribution(stats["counts"])
    tracker.log_figure(fig, "plots/class_distribution.png")
    plots.close(fig)
    ctx.metrics.update(metrics)
    return ctx
