"""The validate stage for several labels an image: mAP, and at the thresholds the calibrate stage fitted (0.5
without them) macro F1, subset accuracy and Hamming loss, with their bootstrap intervals, a report a label,
for val and test, and Grad-CAM a label (not a stage itself)."""

import logging

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from pipeline import plots
from pipeline.context import Context
from pipeline.cpu_share import scoring_workers
from pipeline.data.datamodule import ImageDataModule
from pipeline.evaluation import explain
from pipeline.evaluation.multilabel import multilabel_scores, per_label, score_intervals
from pipeline.evaluation.report import to_csv, to_markdown
from pipeline.evaluation.scorers import Scorer, predict
from pipeline.tracking import Tracker

log = logging.getLogger("pipeline.validate")
HEADLINE = ("map", "map_micro", "f1_macro", "f1_macro_at_half", "subset_acc", "hamming_loss")
REPORT = ("label", "threshold", "precision", "recall", "f1", "support", "ap")
LABELS_SHOWN = 8  # labels explained an image among the top losses: a row of the grid


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
    scored_splits = splits(list(datamodule.eval_sets))
    for split in scored_splits:
        scored = predict(scorer, datamodule.eval_dataloader(split), tta=False)
        probabilities, targets = torch.sigmoid(scored.logits), scored.targets
        if split == scored_splits[-1]:  # test when there is one, else val
            limits = torch.tensor(thresholds or [0.5] * len(scorer.class_names))
            scored_split = (probabilities, targets, limits)
            log_gradcam(tracker, scorer, split, scored_split, datamodule.eval_sets[split], cfg.validate)
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


def gradcam_pairs(
    probabilities, targets, limits, worst: int, per_label: int
) -> dict[str, list[tuple[int, int]]]:
    """Which (image, label) pairs to explain: for the `worst` images by summed BCE, the labels predicted or
    given, worst first; and for each label its first `per_label` images where it is given and predicted."""
    predicted, given = probabilities >= limits, targets.bool()
    losses = F.binary_cross_entropy(probabilities.clamp(1e-7, 1 - 1e-7), targets.float(), reduction="none")
    top, worst_images = [], losses.sum(1).topk(min(worst, len(losses))).indices.tolist() if worst else []
    for i in worst_images:
        shown = torch.nonzero(predicted[i] | given[i]).flatten().tolist()
        top += [(i, c) for c in sorted(shown, key=lambda c: -float(losses[i, c]))[:LABELS_SHOWN]]
    right = predicted & given
    first = [
        (i, c)
        for c in range(right.shape[1])
        for i in torch.nonzero(right[:, c]).flatten()[:per_label].tolist()
    ]
    return {"top_losses": top, "per_label": first}


def log_gradcam(tracker: Tracker, scorer: Scorer, split: str, scored: tuple, dataset, v: DictConfig) -> None:
    """Where the model looked for each label (plots/gradcam_top_losses.png and gradcam_per_label.png): a cell
    an (image, label), captioned with the label's probability, red where the answer and the given label
    differ."""
    if scorer.model is None:
        log.info("no Grad-CAM for an ONNX file: it needs a checkpoint")
        return
    probabilities, targets, limits = scored
    for name, pairs in gradcam_pairs(probabilities, targets, limits, v.gradcam, v.gradcam_per_class).items():
        if not pairs:
            continue
        batch = torch.stack([dataset[i][0] for i, _ in pairs])
        images = explain.overlays(scorer.model, scorer.preprocess, batch, [c for _, c in pairs])
        given = [bool(targets[i, c]) for i, c in pairs]
        captions = [
            f"{scorer.class_names[c]} {float(probabilities[i, c]):.2f}\n{'given' if g else 'not given'}"
            for (i, c), g in zip(pairs, given, strict=True)
        ]
        wrong = [bool(probabilities[i, c] >= limits[c]) != g for (i, c), g in zip(pairs, given, strict=True)]
        title = f"Grad-CAM, {name.replace('_', ' ')}: evidence for each label ({split})"
        fig = plots.image_grid(images, captions, wrong, title, groups=[i for i, _ in pairs])
        tracker.log_figure(fig, f"plots/gradcam_{name}.png")
        plots.close(fig)
