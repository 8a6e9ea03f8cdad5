"""The validate stage for several labels an image: mAP, and at the thresholds the calibrate stage fitted (0.5
without them) macro F1, subset accuracy and Hamming loss, with their bootstrap intervals, and a report a
label, for val and test (not a stage itself)."""

import logging

import torch
from omegaconf import DictConfig

from pipeline.context import Context
from pipeline.cpu_share import scoring_workers
from pipeline.data.datamodule import ImageDataModule
from pipeline.evaluation.multilabel import multilabel_scores, per_label, score_intervals
from pipeline.evaluation.report import to_csv, to_markdown
from pipeline.evaluation.scorers import Scorer, predict
from pipeline.tracking import Tracker

log = logging.getLogger("pipeline.validate")
HEADLINE = ("map", "map_micro", "f1_macro", "f1_macro_at_half", "subset_acc", "hamming_loss")
REPORT = ("label", "threshold", "precision", "recall", "f1", "support", "ap")


def split_scores(cfg: DictConfig, probabilities: torch.Tensor, targets: torch.Tensor, thresholds) -> dict:
    """The split's scores at the thresholds, macro F1 at 0.5 beside them, and the intervals."""
    metrics = multilabel_scores(probabilities, targets, thresholds)
    if thresholds:
        metrics["f1_macro_at_half"] = multilabel_scores(probabilities, targets, None)["f1_macro"]
    resamples = cfg.validate.bootstrap_resamples
    if resamples:
        intervals = score_intervals(probabilities, targets, thresholds, resamples, cfg.seed)
        for name, (low, high) in intervals.items():
            metrics |= {f"{name}_ci_low": low, f"{name}_ci_high": high}
    return metrics


def report(names: list[str], probabilities, targets, thresholds) -> list[list]:
    found = per_label(probabilities, targets, thresholds)
    limits = thresholds or [0.5] * len(names)
    return [
        [name, limits[i], *(found[c][i] for c in ("precision", "recall", "f1", "support", "ap"))]
        for i, name in enumerate(names)
    ]


def run(cfg: DictConfig, ctx: Context, tracker: Tracker, index, scorer: Scorer, splits) -> Context:
    """Score `splits` of the index (rows of 0/1 a label) with `scorer`, whose logits come calibrated."""
    thresholds = scorer.trust.get("thresholds")
    if not thresholds:
        log.info(
            "no fitted thresholds: each label answered at probability 0.5 (the calibrate stage fits them)"
        )
    workers = scoring_workers(cfg.data.num_workers, scorer.model.device.type if scorer.model else "cpu")
    datamodule = ImageDataModule(index, scorer.preprocess, [], cfg.data.batch_size, workers)
    for split in splits(list(datamodule.eval_sets)):
        scored = predict(scorer, datamodule.eval_dataloader(split), tta=False)
        probabilities, targets = torch.sigmoid(scored.logits), scored.targets
        metrics = split_scores(cfg, probabilities, targets, thresholds)
        named = {f"{split}/{name}": value for name, value in metrics.items()}
        headline = {n for n in named if n.split("/")[1].split("_ci_")[0] in HEADLINE}
        tracker.log_metrics({n: v for n, v in named.items() if n in headline}, headline=True)
        tracker.log_metrics({n: v for n, v in named.items() if n not in headline})
        ctx.metrics.update(named)
        shown = ", ".join(f"{n}={metrics[n]:.4f}" for n in HEADLINE if n in metrics)
        log.info("%s, %s (%d images): %s", scorer.source, split, len(targets), shown)
        rows = report(scorer.class_names, probabilities, targets, thresholds)
        tracker.log_text(to_csv(rows, REPORT), f"reports/per_label_{split}.csv")
        tracker.log_text(
            to_markdown(rows, f"Per-label report ({split})", REPORT), f"reports/per_label_{split}.md"
        )
    return ctx
