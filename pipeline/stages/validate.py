"""Validate stage: metrics, curves, a per-class report and the top losses on val (and test when present).

What is scored is a checkpoint (this run's, `ckpt_path=` or the best one of MLflow run `from_run=`) or an ONNX
file (`onnx_path=`); each becomes a Scorer, so everything after choosing it is one code path.
"""

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from pipeline import devices, plots
from pipeline.context import Context
from pipeline.cpu_share import scoring_workers
from pipeline.data.datamodule import ImageDataModule
from pipeline.data.decode import decode_rgb
from pipeline.data.images import ImageDataset
from pipeline.data.integrity import fingerprint
from pipeline.errors import PipelineError
from pipeline.evaluation import explain
from pipeline.evaluation import metrics as m
from pipeline.evaluation.intervals import SCORES
from pipeline.evaluation.report import report_rows, to_csv, to_markdown
from pipeline.evaluation.scorers import Scorer, checkpoint_scorer, onnx_scorer, predict
from pipeline.stages import validate_labels
from pipeline.stages.checkpoints import checkpoint_path, has_checkpoint
from pipeline.stages.index import ensure_index, inspect_split
from pipeline.stages.trust_scores import folder_names, trust_metrics, unknown_images_metrics
from pipeline.tasks import MULTILABEL
from pipeline.tracking import Tracker

log = logging.getLogger("pipeline.validate")

# repeated on the parent run; {k} is validate.top_k capped at the number of classes
HEADLINE = (
    "acc", "bal_acc", "top{k}_acc", "f1_macro", "auc_macro", "ece", "ece_uncalibrated",
    "conformal_coverage", "conformal_set_size", "conformal_empty", "unknown_rate",
    "tta_acc", "tta_acc_change",
    *(f"{name}_ci_{end}" for name in SCORES for end in ("low", "high")),
)  # fmt: skip
CURVES = (  # file name, curves, score in the legend, title, axis labels
    ("roc", m.roc_curves, "auc", "ROC curves, one-vs-rest", ("false positive rate", "true positive rate")),
    ("pr", m.pr_curves, "ap", "Precision-recall curves, one-vs-rest", ("recall", "precision")),
)


def choose_scorer(cfg: DictConfig, ctx: Context) -> Scorer:
    """A checkpoint (this run's, ckpt_path=, from_run=, in that order), else the ONNX file onnx_path=."""
    if cfg.onnx_path and not has_checkpoint(cfg, ctx):
        return onnx_scorer(Path(cfg.onnx_path))
    ckpt = checkpoint_path(cfg, ctx, "validate")
    if cfg.onnx_path:
        log.warning("onnx_path=%s not scored: a checkpoint comes first (%s)", cfg.onnx_path, ckpt)
    return checkpoint_scorer(ckpt, devices.of_trainer(cfg.trainer))


def scored_splits(cfg: DictConfig, splits: list[str]) -> list[str]:
    """val and test, saying what a missing test split means; a sweep's trial leaves test out (trials are
    compared on val; the sweep scores its best trial on test, once)."""
    if "test" not in splits:
        log.info(
            "no test split: val scores picked the checkpoint, so they are optimistic "
            "(a flat folder gets one with data.test_fraction > 0, split folders with data.holdout=auto; "
            "or add a test/ folder)"
        )
    elif cfg.trial.number is not None:
        log.info("test split left out: the sweep scores it once, for its best trial, when the sweep ends")
        return [s for s in splits if s != "test"]
    return splits


def run(cfg: DictConfig, ctx: Context, tracker: Tracker) -> Context:
    index = ensure_index(cfg, ctx)
    scorer = choose_scorer(cfg, ctx)
    names = scorer.class_names
    check_classes(scorer, index.class_names)
    if index.task == MULTILABEL:
        return validate_labels.run(cfg, ctx, tracker, index, scorer, lambda found: scored_splits(cfg, found))
    workers = scoring_workers(cfg.data.num_workers, scorer.model.device.type if scorer.model else "cpu")
    datamodule = ImageDataModule(index, scorer.preprocess, [], cfg.data.batch_size, workers)
    v = cfg.validate
    k = m.top_k(v.top_k, len(names))
    headline = tuple(name.format(k=k) for name in HEADLINE)
    log_setup(tracker, scorer, k, v.tta)
    if not scorer.calibrated:
        log.info(
            "not calibrated: probabilities as the network gives them, no prediction sets, no unknown answer "
            "(the calibrate stage fits them: stages=[calibrate,validate] ckpt_path=<file>)"
        )
    splits = scored_splits(cfg, list(datamodule.eval_sets))
    for split in splits:
        dataset = datamodule.eval_sets[split]
        scored = predict(scorer, datamodule.eval_dataloader(split), v.tta)
        logits, targets = scored.logits, scored.targets
        if split == splits[-1]:  # test when there is one, else val
            log_gradcam(tracker, scorer, split, logits, targets, dataset, v)
        metrics = split_metrics(logits, targets, scored.tta_logits, len(names), k, v.calibration_bins)
        metrics |= trust_metrics(cfg, tracker, scorer, split, scored)
        if split == splits[-1]:
            for name, folder in folder_names(list(v.ood_roots)).items():
                metrics |= unknown_images_metrics(cfg, scorer, scored, name, folder)
        if scorer.train_fingerprints is not None:
            metrics["train_overlap"] = train_overlap(cfg, ctx, split, scorer.train_fingerprints)
        named = {f"{split}/{name}": value for name, value in metrics.items()}
        on_parent = {n for n in named if n.split("/")[1] in headline or n.split("/")[1].startswith("ood_")}
        tracker.log_metrics({n: x for n, x in named.items() if n in on_parent}, headline=True)
        tracker.log_metrics({n: x for n, x in named.items() if n not in on_parent})
        ctx.metrics.update(named)
        log.info(
            "%s, %s (%d images): %s", scorer.source, split, len(targets), shown_scores(metrics, headline)
        )

        log_reports(tracker, split, names, logits, targets, dataset, metrics, v.top_losses)
    return ctx


def check_classes(scorer: Scorer, class_names: list[str]) -> None:
    names = scorer.class_names
    if class_names != names:
        raise PipelineError(
            f"the {scorer.kind}'s {len(names)} classes {names[:5]}... do not match the data's "
            f"{len(class_names)} classes {class_names[:5]}..."
        )


def log_reports(
    tracker: Tracker, split: str, names, logits, targets, dataset, metrics, top_losses: int
) -> None:
    """The per-class report, confusion matrices, curves and top losses of one split."""
    per_class = m.per_class_metrics(logits, targets, len(names))
    rows = report_rows(names, per_class, metrics)
    tracker.log_text(to_csv(rows), f"reports/per_class_{split}.csv")
    tracker.log_text(to_markdown(rows, f"Per-class report ({split})"), f"reports/per_class_{split}.md")
    log_confusion_matrices(tracker, split, names, logits, targets)
    log_curves(tracker, split, names, logits, targets, per_class, metrics)
    if top_losses > 0:
        log_top_losses(tracker, split, names, logits, targets, dataset, top_losses)


def log_setup(tracker: Tracker, scorer: Scorer, k: int, tta: bool) -> None:
    """What is scored, where, and how."""
    device = str(scorer.model.device) if scorer.model is not None else "cpu (onnxruntime)"
    log.info("scoring on %s", device)
    params = {"validate.source": scorer.source, "validate.top_k": k, "validate.tta": tta}
    tracker.log_params({**params, "validate.device": device})


def train_overlap(cfg: DictConfig, ctx: Context, split: str, trained_on: frozenset[str]) -> int:
    """How many of the split's images the model was trained on (same content, any path): a split rebuilt
    over a folder that changed since training, or the training images themselves, inflate every figure."""
    seen = sum(i.ok and fingerprint(i) in trained_on for i in inspect_split(cfg, ctx, split))
    if seen:
        log.warning(
            "%d of the %d %s images were in the model's training set (same content): its figures on this "
            "split overstate what it does on new images",
            seen,
            len(ctx.index.split(split)),
            split,
        )
    return seen


def split_metrics(logits, targets, tta_logits, num_classes: int, k: int, bins: int) -> dict[str, float]:
    """With test-time augmentation, each metric also as tta_<name>, and the accuracy change it brings."""
    metrics = m.classification_metrics(logits, targets, num_classes, k, bins)
    if tta_logits is not None:
        tta = m.classification_metrics(tta_logits, targets, num_classes, k, bins)
        metrics |= {f"tta_{name}": value for name, value in tta.items()}
        metrics["tta_acc_change"] = tta["acc"] - metrics["acc"]
    return metrics


def shown_scores(metrics: dict[str, float], headline: tuple[str, ...]) -> str:
    """`acc=0.9417 [0.9125, 0.9667]`: each headline score, with its interval when it has one."""
    shown = []
    for name in (n for n in headline if n in metrics and "_ci_" not in n):
        interval = (metrics.get(f"{name}_ci_low"), metrics.get(f"{name}_ci_high"))
        ends = f" [{interval[0]:.4f}, {interval[1]:.4f}]" if None not in interval else ""
        shown.append(f"{name}={metrics[name]:.4f}{ends}")
    return ", ".join(shown)


def log_confusion_matrices(tracker: Tracker, split: str, names: list[str], logits, targets) -> None:
    counts = m.confusion_matrix(logits, targets, len(names)).numpy()
    shares = m.confusion_matrix(logits, targets, len(names), normalize="true").numpy()
    title = f"Confusion matrix ({split})"
    _log(tracker, plots.confusion_matrix(counts, shares, names, title), f"plots/confusion_matrix_{split}.png")
    title = f"Confusion matrix, shares of each true class ({split})"
    fig = plots.confusion_matrix(shares, shares, names, title)
    _log(tracker, fig, f"plots/confusion_matrix_normalized_{split}.png")


def log_curves(tracker: Tracker, split: str, names, logits, targets, per_class: dict, metrics: dict) -> None:
    """One-vs-rest ROC and precision-recall curves, each class's AUC or AP and both averages in the legend."""
    for kind, compute, score, title, axes in CURVES:
        curves = compute(logits, targets, len(names))
        label = score.upper()
        classes = {
            f"{name} ({label} {value:.3f})": xy
            for name, value, xy in zip(names, per_class[score], curves.per_class, strict=True)
        }
        averages = {
            f"micro avg ({label} {metrics[f'{score}_micro']:.3f})": curves.micro,
            f"macro avg ({label} {metrics[f'{score}_macro']:.3f})": curves.macro,
        }
        fig = plots.curves(classes, averages, f"{title} ({split})", axes, diagonal=kind == "roc")
        _log(tracker, fig, f"plots/{kind}_{split}.png")


def log_top_losses(
    tracker: Tracker, split: str, names, logits, targets, dataset: ImageDataset, n: int
) -> None:
    """The highest losses, most confidently wrong first, captioned with true class, prediction, confidence."""
    chosen = m.top_losses(logits, targets, n).tolist()
    captions, wrong = _captions(names, logits, targets, chosen)
    images = [decode_rgb(dataset.records[i].path) for i in chosen]
    fig = plots.image_grid(images, captions, wrong, f"Top losses ({split})")
    _log(tracker, fig, f"plots/top_losses_{split}.png")


def _captions(names, logits, targets, chosen: list[int]) -> tuple[list[str], list[bool]]:
    """`true: <class>`, `pred: <class> (<confidence>)` under each chosen image; which are wrong."""
    confidence, preds = torch.softmax(logits, 1).max(1)
    captions = [f"true: {names[targets[i]]}\npred: {names[preds[i]]} ({confidence[i]:.2f})" for i in chosen]
    return captions, [bool(preds[i] != targets[i]) for i in chosen]


def gradcam_choices(logits, targets, v: DictConfig) -> dict[str, tuple[list[int], torch.Tensor]]:
    """Which images to explain, and for which class: the top losses for the class they were taken for,
    and the first correctly classified images of each class for their own class."""
    preds = logits.argmax(1)
    right = [torch.nonzero((targets == c) & (preds == c)).flatten() for c in range(logits.shape[1])]
    return {
        "top_losses": (m.top_losses(logits, targets, v.gradcam).tolist() if v.gradcam else [], preds),
        "per_class": (torch.cat([r[: v.gradcam_per_class] for r in right]).tolist(), targets),
    }


def log_gradcam(
    tracker: Tracker, scorer: Scorer, split: str, logits, targets, dataset, v: DictConfig
) -> None:
    """Where the model looked (plots/gradcam_top_losses.png and gradcam_per_class.png)."""
    if scorer.model is None:
        log.info("no Grad-CAM for an ONNX file: it needs a checkpoint")
        return
    for name, (indices, explained) in gradcam_choices(logits, targets, v).items():
        if not indices:
            continue
        batch = torch.stack([dataset[i][0] for i in indices])
        images = explain.overlays(
            scorer.model, scorer.preprocess, batch, [int(explained[i]) for i in indices]
        )
        captions, wrong = _captions(scorer.class_names, logits, targets, indices)
        title = f"Grad-CAM, {name.replace('_', ' ')}: evidence for the predicted class ({split})"
        _log(tracker, plots.image_grid(images, captions, wrong, title), f"plots/gradcam_{name}.png")


def _log(tracker: Tracker, fig, name: str) -> None:
    tracker.log_figure(fig, name)
    plots.close(fig)
