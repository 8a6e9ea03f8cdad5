"""The calibrate stage for several labels an image: on the calib split (else val, as for one label an image),
a temperature and an answer threshold a label (pipeline.evaluation.multilabel), which the stage stores with
the checkpoint; prediction sets and the unknown answer are fitted for one label an image only (not a stage
itself)."""

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from pipeline import devices
from pipeline.cpu_share import scoring_workers
from pipeline.data.datamodule import image_loader
from pipeline.data.images import ImageDataset
from pipeline.data.transforms import Preprocess, eval_transform
from pipeline.evaluation.multilabel import answers, fit_temperature, fit_thresholds, multilabel_scores
from pipeline.models.module import load_classifier
from pipeline.progress import Progress

log = logging.getLogger("pipeline.calibrate")


@torch.inference_mode()
def label_logits(
    cfg: DictConfig, network: torch.nn.Module, records: list, preprocess: Preprocess, labels: int
):
    """Logits and rows of 0/1 of `records` under the eval transform, on the CPU."""
    device = next(network.parameters()).device
    images = ImageDataset(records, eval_transform(preprocess), num_labels=labels)
    loader = image_loader(images, cfg.data.batch_size, scoring_workers(cfg.data.num_workers, device.type))
    progress = Progress("calibrate", "scored images", len(images))
    logits, targets = [], []
    for x, y in loader:
        progress.advance(len(y))
        logits.append(network(x.to(device)).float().cpu())
        targets.append(y)
    return torch.cat(logits), torch.cat(targets)


def fit(cfg: DictConfig, ckpt: Path, records: list, split_name: str) -> tuple[dict, dict]:
    """The temperature (calibrate.temperature) and the thresholds of the checkpoint's labels, fitted on
    `records`, and the calib metrics."""
    classifier = load_classifier(ckpt).to(devices.of_trainer(cfg.trainer))
    preprocess = Preprocess.from_dict(classifier.hparams.preprocess)
    logits, targets = label_logits(cfg, classifier.model, records, preprocess, classifier.hparams.num_classes)
    trust = {"images": len(records), "split": split_name}
    if cfg.calibrate.temperature:
        trust["temperature"] = fit_temperature(logits, targets)
        log.info("temperature: %.3f (every label's logit divided by it)", trust["temperature"])
    probabilities = torch.sigmoid(logits / torch.tensor(trust.get("temperature", 1.0)))
    trust["thresholds"] = fit_thresholds(probabilities, targets)
    log.info("an answer threshold a label (best F1 on %s): %s", split_name,
             ", ".join(f"{t:.2f}" for t in trust["thresholds"]))  # fmt: skip
    if cfg.calibrate.conformal_alpha is not None or cfg.calibrate.unknown_accept is not None:
        log.info("prediction sets and the unknown answer are fitted for one label an image only: none here")
    at_half, fitted = (multilabel_scores(probabilities, targets, t) for t in (None, trust["thresholds"]))
    log.info("%s macro F1 at 0.5: %.4f, at the fitted thresholds: %.4f (fitted on these images)",
             split_name, at_half["f1_macro"], fitted["f1_macro"])  # fmt: skip
    return trust, {
        "calib/images": len(records),
        "calib/on_val": float(split_name == "val"),
        "calib/temperature": trust.get("temperature") or 1.0,
        "calib/labels_answered": float(answers(probabilities, trust["thresholds"]).sum(1).float().mean()),
        "calib/f1_macro": fitted["f1_macro"],
    }
