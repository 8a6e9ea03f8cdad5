"""Calibrate stage: on the calib split (data.calib_fraction: images that neither trained the model nor picked
its checkpoint), fit what makes the model's answers trustworthy, and store it with the checkpoint, where
validate scores it and export puts it into the ONNX file: a temperature, the prediction sets' threshold and
the unknown answer (a score on the network's features and its threshold). A folder whose classes are too
small to spare a calib split is fitted on val instead, with a line saying what that costs."""

import logging
import math

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from pipeline import devices
from pipeline.context import Context
from pipeline.cpu_share import scoring_workers
from pipeline.data.datamodule import image_loader
from pipeline.data.feature_cache import Layers
from pipeline.data.images import ImageDataset
from pipeline.data.sources import MIN_CLASS_FOR_CALIB
from pipeline.data.transforms import Preprocess, eval_transform
from pipeline.evaluation.calibration import safe_temperature
from pipeline.evaluation.conformal import (
    APPROXIMATE_BELOW,
    class_balanced_weights,
    conformal_threshold,
    effective_size,
)
from pipeline.evaluation.unknown import (
    TOLERANCE_CONFIDENCE,
    fit_detector,
    stratified_sample,
    tolerance_factor,
    unknown_threshold,
)
from pipeline.models.checkpoint_io import store_trust
from pipeline.models.module import load_classifier
from pipeline.models.reference import pretrained_reference, stored_reference
from pipeline.models.trusted import JointSplit, detector, split_network
from pipeline.plan import takes_steps
from pipeline.progress import Progress
from pipeline.recipe import conformal_mix
from pipeline.stages import calibrate_labels
from pipeline.stages.checkpoints import checkpoint_path
from pipeline.stages.frozen import split_features
from pipeline.stages.index import ensure_index
from pipeline.tasks import MULTILABEL
from pipeline.tracking import Tracker

log = logging.getLogger("pipeline.calibrate")


def run(cfg: DictConfig, ctx: Context, tracker: Tracker) -> Context:
    ckpt = checkpoint_path(cfg, ctx, "calibrate")
    index = ensure_index(cfg, ctx)
    records, split_name = fitting_split(cfg, index)
    if index.task == MULTILABEL:
        return stored(ctx, tracker, ckpt, *calibrate_labels.fit(cfg, ckpt, records, split_name))
    classifier = load_classifier(ckpt)
    preprocess = Preprocess.from_dict(classifier.hparams.preprocess)
    device = devices.of_trainer(cfg.trainer)
    reference = unknown_reference(cfg, classifier)
    split = split_network(classifier.model, preprocess.image_size, reference).to(device)
    logits, features, targets = embed(cfg, split, records, preprocess, device)
    c, trust = cfg.calibrate, {"images": len(records), "split": split_name}
    metrics = {"calib/images": len(records), "calib/acc": float((logits.argmax(1) == targets).float().mean())}
    metrics["calib/on_val"] = float(split_name == "val")
    if c.temperature:
        trust["temperature"], why = safe_temperature(logits, targets, cfg.seed)
        log.info(
            "temperature: %s (%s)", f"{trust['temperature']:.3f}" if trust["temperature"] else "none", why
        )
        metrics["calib/temperature"] = trust["temperature"] or 1.0
    calibrated = logits / (trust.get("temperature") or 1.0)
    if c.conformal_alpha is not None:
        sets = fit_conformal(calibrated, targets, float(c.conformal_alpha), sets_mix(cfg, index))
        trust["conformal"] = sets
        metrics |= {f"calib/conformal_{k}": sets[k] for k in ("threshold", "alpha", "effective_images")}
        metrics["calib/conformal_balanced"] = float(sets["mix"] == "balanced")
    if c.unknown_accept is not None:
        spec, num_classes = classifier.trained_from, classifier.hparams.num_classes
        kept = None if reference is None else stored_reference(spec, num_classes, reference)
        train = training_layers(cfg, ctx, classifier, split, preprocess, device)
        trust["unknown"] = fit_unknown(cfg, len(index.class_names), train, (features, logits), kept)
        metrics["calib/unknown_threshold"] = trust["unknown"]["threshold"]
        metrics["calib/unknown_mb"] = trust["unknown"]["bytes"] / 2**20
    return stored(ctx, tracker, ckpt, trust, metrics)


def stored(ctx: Context, tracker: Tracker, ckpt, trust: dict, metrics: dict) -> Context:
    """`trust` stored with the checkpoint (beside it in this run's output when it came from elsewhere),
    the calib metrics logged."""
    owned = ckpt.resolve().is_relative_to(ctx.output_dir.resolve())
    target = ckpt if owned else ctx.output_dir / "checkpoints" / ckpt.name
    store_trust(ckpt, target, trust)
    ctx.ckpt_path = target
    log.info("stored with the checkpoint %s", target)
    tracker.log_metrics(metrics, headline=True)
    ctx.metrics.update(metrics)
    return ctx


def sets_mix(cfg: DictConfig, index) -> str:
    """The class mix the prediction sets promise their coverage for (calibrate.conformal_mix, resolved)."""
    counts = list(index.counts()["train"].values())  # as the training plan reads them
    return conformal_mix(str(cfg.calibrate.conformal_mix), counts, cfg.data.imbalance_threshold)


def unknown_reference(cfg: DictConfig, classifier) -> torch.nn.Module | None:
    """The pretrained network the model was fine-tuned from, where the unknown score reads it too."""
    c = cfg.calibrate
    if c.unknown_accept is None or str(c.unknown_method) != "mahalanobis" or not c.unknown_pretrained:
        return None
    num_classes = classifier.hparams.num_classes
    reference = pretrained_reference(classifier.trained_from, num_classes, classifier.model)
    if reference is not None:
        log.info("the unknown score reads the pretrained network the model was fine-tuned from, besides it")
    return reference


def fitting_split(cfg: DictConfig, index) -> tuple[list, str]:
    """The calib split's records, else val's: the split that picked the checkpoint looks better than new
    images, but an uncalibrated model with no sets or unknown answer is worse (docs/reports/trust.md)."""
    calib = index.split("calib")
    if calib:
        log.info(
            "calib split: %d images (data.calib_fraction %g), none of which trained the model or picked its "
            "checkpoint", len(calib), cfg.data.calib_fraction,
        )  # fmt: skip
        return calib, "calib"
    log.warning(
        "no calib split (data.calib_fraction=%g; classes of fewer than %d training images give none): fitted "
        "on the val split, which picked the checkpoint: the model may be a little surer than it should be, "
        "and the prediction sets' coverage and the unknown threshold are approximate",
        cfg.data.calib_fraction, MIN_CLASS_FOR_CALIB,
    )  # fmt: skip
    return index.split("val"), "val"


@torch.inference_mode()
def embed(cfg: DictConfig, split: nn.Module, records: list, preprocess: Preprocess, device: torch.device):
    """Logits, the features the unknown score reads (a list of layers: pipeline.models.trusted.split_network)
    and labels of `records` under the eval transform, on the CPU."""
    images = ImageDataset(records, eval_transform(preprocess))
    loader = image_loader(images, cfg.data.batch_size, scoring_workers(cfg.data.num_workers, device.type))
    progress = Progress("calibrate", "embedded images", len(images))
    logits, layers, labels = [], [], []
    for x, y in loader:
        progress.advance(len(y))
        out, features = split(x.to(device))
        logits.append(out.float().cpu())
        layers.append([f.float().cpu() for f in features])
        labels.append(y)
    return torch.cat(logits), [torch.cat(layer) for layer in zip(*layers, strict=True)], torch.cat(labels)


def fit_conformal(calibrated: torch.Tensor, targets: torch.Tensor, alpha: float, mix: str) -> dict:
    """The prediction sets' threshold for images mixed as `mix` says (calib or balanced), and one line on how
    far its coverage can be trusted."""
    labels = targets.numpy()
    weights = class_balanced_weights(labels) if mix == "balanced" else np.ones(len(labels))
    threshold = conformal_threshold(calibrated.softmax(1).numpy(), labels, alpha, weights)
    n = effective_size(weights)
    # coverage of one calibration is Beta(n + 1 - l, l), l = floor((n + 1) alpha): about this spread
    spread = math.sqrt(alpha * (1 - alpha) / (n + 2))
    approximate = n < APPROXIMATE_BELOW
    log.info(
        "prediction sets: a class joins an image's set when its calibrated probability is at least %.6g, "
        "for %.0f%% coverage of new images %s%s",
        threshold, 100 * (1 - alpha),
        "of every class equally often (calibrate.conformal_mix=balanced)" if mix == "balanced"
        else "mixed like the calib ones",
        f"; approximate: {len(labels)} calib images{f' worth {n:.0f} weighted' if mix == 'balanced' else ''} "
        f"(under {APPROXIMATE_BELOW}) let one calibration's coverage stray from it by about +-{spread:.2f}"
        if approximate else "",
    )  # fmt: skip
    return {
        "alpha": alpha,
        "threshold": threshold,
        "images": len(labels),
        "mix": mix,
        "effective_images": n,
        "approximate": approximate,
        "class_counts": np.bincount(labels, minlength=calibrated.shape[1]).tolist(),
    }


def training_layers(cfg: DictConfig, ctx: Context, classifier, split, preprocess, device) -> tuple:
    """(one array a layer, labels) of a sample of the training images, what the unknown score is fitted on
    (none for `energy`): a fitted probe's, whose backbone is the pretrained one unchanged, from the pass its
    head was fitted on (pipeline.stages.frozen); any other model's through `split` here."""
    c = cfg.calibrate
    if str(c.unknown_method) == "energy":
        return None
    train = ensure_index(cfg, ctx).split("train")
    labels = np.array([r.label for r in train])
    chosen = stratified_sample(labels, c.unknown_train_images, cfg.seed)
    if not takes_steps(classifier.hparams.finetune) and not isinstance(split, JointSplit):
        layers = Layers(classifier.model, preprocess.image_size).to(device)
        features, _ = split_features(cfg, ctx, layers, preprocess, classifier.trained_from, "train")
        return [layer[chosen] for layer in features], labels[chosen]
    _, layers, targets = embed(cfg, split, [train[i] for i in chosen], preprocess, device)
    return [layer.numpy() for layer in layers], targets.numpy()


def fit_unknown(
    cfg: DictConfig, num_classes: int, train: tuple | None, calib: tuple, reference: dict | None
) -> dict:
    """The unknown score fitted on `train` (training_layers), its threshold on the calib split's
    (features, logits); `reference`: the pretrained network the split reads besides the model, as stored."""
    c = cfg.calibrate
    features, logits = calib
    method = str(c.unknown_method)
    unknown = {"method": method, "accepted": float(c.unknown_accept), "neighbours": int(c.unknown_neighbours)}
    tensors = {}
    if train is not None:
        arrays = fit_detector(method, *train, num_classes)
        tensors = {name: torch.from_numpy(array) for name, array in arrays.items()}
    unknown["tensors"] = tensors
    stored = [*tensors.values(), *(reference["state"].values() if reference else ())]
    unknown["bytes"] = sum(t.numel() * t.element_size() for t in stored)
    if reference:
        unknown["reference"] = reference
    with torch.inference_mode():
        scores = detector(unknown)(features, logits).numpy()
    unknown["threshold"] = unknown_threshold(scores, unknown["accepted"])
    log.info(
        "unknown answer: %s score%s above %.4g, to accept %g%% of new images like the %d calib ones (with "
        "%.0f%% confidence: %.1f standard deviations above their mean; more calib images narrow it); %.1f MB "
        "in the model",
        method, f" over {len(features)} layers" if method == "mahalanobis" else "", unknown["threshold"],
        100 * unknown["accepted"], len(scores), 100 * TOLERANCE_CONFIDENCE,
        tolerance_factor(len(scores), unknown["accepted"]), unknown["bytes"] / 2**20,
    )  # fmt: skip
    return unknown
