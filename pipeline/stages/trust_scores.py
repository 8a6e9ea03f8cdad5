"""How far a model's answers can be trusted, as the validate stage scores it: calibration before and after the
temperature the calibrate stage fitted, the prediction sets' coverage, the unknown answer's rate and how well
it tells folders of strange images apart, and bootstrap intervals of the scores (not a stage itself)."""

import logging
import math
import re
from pathlib import Path

import numpy as np
import torch.nn.functional as F
from omegaconf import DictConfig

from pipeline import plots
from pipeline.cpu_share import scoring_workers
from pipeline.data.datamodule import image_loader
from pipeline.data.images import ImageDataset
from pipeline.data.sources import Record
from pipeline.data.transforms import eval_transform
from pipeline.evaluation import metrics as m
from pipeline.evaluation.calibration import reliability
from pipeline.evaluation.conformal import (
    MIX_DIFFERS_BELOW,
    class_mix_p,
    per_class_sets,
    prediction_sets,
    set_metrics,
)
from pipeline.evaluation.intervals import bootstrap_intervals
from pipeline.evaluation.scorers import Scored, Scorer, predict
from pipeline.evaluation.unknown import separation
from pipeline.export.inference import expand_inputs
from pipeline.models.trusted import Energy
from pipeline.tracking import Tracker

log = logging.getLogger("pipeline.validate")


def trust_metrics(cfg: DictConfig, tracker: Tracker, scorer: Scorer, split: str, scored: Scored) -> dict:
    """How far the scores can be trusted: calibration before and after the temperature, prediction sets'
    coverage, the unknown answer's rate, and intervals."""
    v, metrics = cfg.validate, {}
    logits, targets = scored.logits, scored.targets
    if scorer.temperature is not None:
        metrics |= uncalibrated_metrics(
            tracker, split, logits, targets, scorer.temperature, v.calibration_bins
        )
    if scorer.conformal is not None:
        metrics |= conformal_metrics(tracker, split, scorer, logits, targets)
    if scored.unknown_scores is not None:
        metrics["unknown_rate"] = float((scored.unknown_scores > scorer.unknown["threshold"]).float().mean())
    if v.bootstrap_resamples:
        metrics |= interval_metrics(logits, targets, logits.shape[1], v.bootstrap_resamples, cfg.seed)
    return metrics


def uncalibrated_metrics(
    tracker: Tracker, split: str, logits, targets, temperature: float, bins: int
) -> dict:
    """ECE and NLL of the network's own logits beside the calibrated ones, and their reliability diagram."""
    raw = logits * temperature
    num_classes = logits.shape[1]
    before = m.classification_metrics(raw, targets, num_classes, 1, bins)
    after_ece = m.classification_metrics(logits, targets, num_classes, 1, bins)["ece"]
    curves = {
        f"uncalibrated (ECE {before['ece']:.3f})": reliability(raw.softmax(1), targets, bins),
        f"temperature {temperature:.2f} (ECE {after_ece:.3f})": reliability(logits.softmax(1), targets, bins),
    }
    points = {label: (c["confidence"], c["accuracy"]) for label, c in curves.items()}
    fig = plots.curves({}, points, f"Reliability ({split})", ("confidence", "accuracy"), diagonal=True)
    tracker.log_figure(fig, f"plots/reliability_{split}.png")
    plots.close(fig)
    nll = F.cross_entropy(logits.float(), targets).item()
    return {"ece_uncalibrated": before["ece"], "nll": nll, "nll_uncalibrated": before["loss"]}


def conformal_metrics(tracker: Tracker, split: str, scorer: Scorer, logits, targets) -> dict:
    """Coverage and mean size of the prediction sets, overall and per class (reports/prediction_sets_*.md)."""
    members = prediction_sets(logits.softmax(1).numpy(), scorer.conformal["threshold"])
    per_class = per_class_sets(members, targets.numpy(), logits.shape[1])
    rows = ["| class | coverage | mean set size |", "|---|---|---|"]
    rows += [
        f"| {name} | {coverage:.3f} | {size:.2f} |"
        for name, coverage, size in zip(
            scorer.class_names, per_class["coverage"], per_class["set_size"], strict=True
        )
    ]
    title = f"# Prediction sets ({split}), target coverage {1 - scorer.conformal['alpha']:.2f}\n\n"
    tracker.log_text(title + "\n".join(rows) + "\n", f"reports/prediction_sets_{split}.md")
    return set_metrics(members, targets.numpy()) | mix_metrics(
        split, scorer.conformal, targets, logits.shape[1]
    )


def mix_metrics(split: str, conformal: dict, targets, num_classes: int) -> dict[str, float]:
    """conformal_mix_p: how likely the split's classes are mixed as the coverage is promised for (like the
    calib split, or every class equally often), with one line when they are not."""
    if not conformal.get("class_counts"):  # fitted before the counts were stored
        return {}
    counts = np.bincount(targets.numpy(), minlength=num_classes).tolist()
    balanced = conformal.get("mix") == "balanced"
    p = class_mix_p(conformal["class_counts"], counts, balanced)
    if p < MIX_DIFFERS_BELOW:  # a balanced promise holds class by class: said, not warned
        (log.info if balanced else log.warning)(
            "%s's classes are mixed unlike %s (chi-square p = %.2g): the prediction sets' %.0f%% coverage is "
            "promised for images mixed like that; per class: reports/prediction_sets_%s.md",
            split, "every class equally often" if balanced else "the calib split's", p,
            100 * (1 - conformal["alpha"]), split,
        )  # fmt: skip
    return {"conformal_mix_p": p}


def interval_metrics(logits, targets, num_classes: int, resamples: int, seed: int) -> dict[str, float]:
    """<score>_ci_low and <score>_ci_high: the 95% bootstrap interval of each of acc, bal_acc and f1_macro."""
    found = bootstrap_intervals(targets.numpy(), logits.argmax(1).numpy(), num_classes, resamples, seed)
    out = {}
    for name, (low, high) in found.items():
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = low, high
    return out


GENERIC_NAMES = {"train", "val", "valid", "validation", "test", "images", "data"}


def folder_names(folders: list[str]) -> dict[str, str]:
    """A metric-safe name for each folder: its own name, or parent_name where that says nothing (`test`) or
    repeats another's."""
    own = [Path(f).expanduser().resolve() for f in folders]
    names = {}
    for path, folder in zip(own, folders, strict=True):
        name = path.name
        if name.lower() in GENERIC_NAMES or [p.name for p in own].count(name) > 1:
            name = f"{path.parent.name}_{name}"
        names[re.sub(r"[^A-Za-z0-9_.-]", "_", name)] = folder
    return names


def unknown_scores(scored: Scored) -> np.ndarray:
    """The model's unknown scores; without an unknown answer, the energy of its logits, for comparison."""
    if scored.unknown_scores is not None:
        return scored.unknown_scores.numpy()
    return Energy()(None, scored.logits).numpy()


def unknown_images_metrics(cfg: DictConfig, scorer: Scorer, known: Scored, name: str, folder: str) -> dict:
    """A folder of strange images (validate.ood_roots) scored as unknown inputs against the known split's:
    ood_<name>_auroc, ood_<name>_fpr95 (accepted when 95% of the known images are) and ood_<name>_flagged
    (by the stored threshold) (pipeline.evaluation.unknown)."""
    paths = expand_inputs([folder])
    if not paths:
        log.warning("validate.ood_roots: %s holds no images: nothing to tell apart", folder)
        return {}
    images = ImageDataset([Record(str(p), 0, "test") for p in paths], eval_transform(scorer.preprocess))
    workers = scoring_workers(cfg.data.num_workers, scorer.model.device.type if scorer.model else "cpu")
    loader = image_loader(images, cfg.data.batch_size, workers)
    strange = predict(scorer, loader, tta=False)
    threshold = scorer.unknown["threshold"] if scorer.unknown else math.inf
    found = separation(unknown_scores(known), unknown_scores(strange), threshold)
    log.info(
        "unknown images %s (%d): AUROC %.4f, %.1f%% accepted where 95%% of known are, %.1f%% flagged",
        name, len(paths), found["ood_auroc"], 100 * found["ood_fpr95"], 100 * found["ood_flagged"],
    )  # fmt: skip
    return {f"ood_{name}_{key.removeprefix('ood_')}": value for key, value in found.items()}
