"""The LightningModule: a classifier, its loss, metrics, optimizer and schedule.

Its hyperparameters are plain dicts and lists (model spec, class names, preprocessing), so a checkpoint
rebuilds the exact model with `torch.load(weights_only=True)` and without the config that produced it.
"""

import pickle
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
import torchmetrics
from timm.data import Mixup
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MultilabelAccuracy,
    MultilabelAveragePrecision,
    MultilabelF1Score,
)

from pipeline.errors import PipelineError, first_line
from pipeline.models.factory import create_model_from_spec
from pipeline.models.finetune import param_groups
from pipeline.models.losses import task_loss
from pipeline.models.optim import build_optimizer, build_scheduler
from pipeline.tasks import MULTICLASS, MULTILABEL


def batch_mixer(train: dict[str, Any], num_classes: int) -> Mixup | None:
    """timm's Mixup/CutMix on whole batches (soft targets, label smoothing folded in); None when off."""
    if train["mixup_alpha"] <= 0 and train["cutmix_alpha"] <= 0:
        return None
    return Mixup(
        mixup_alpha=train["mixup_alpha"],
        cutmix_alpha=train["cutmix_alpha"],
        prob=train["mix_prob"],
        label_smoothing=train["label_smoothing"],
        num_classes=num_classes,
    )


def task_scores(task: str, num_classes: int) -> tuple[torchmetrics.Metric, MetricCollection]:
    """The training score and the val scores of a task, the latter by the names of
    pipeline.schema.VAL_METRICS (with val/loss, what can pick the checkpoint). One label an image: accuracy,
    its mean per class (bal_acc) and macro F1, which do not reward predicting the big classes of an
    imbalanced set. Several: each label's average precision, averaged over labels (map) and over all
    (image, label) pairs (map_micro), and macro F1 at 0.5; training reports the share of (image, label)
    pairs right at 0.5."""
    if task == MULTILABEL:
        return MultilabelAccuracy(num_classes, average="micro"), MetricCollection(
            {
                "map": MultilabelAveragePrecision(num_classes, average="macro"),
                "map_micro": MultilabelAveragePrecision(num_classes, average="micro"),
                "f1_macro": MultilabelF1Score(num_classes, average="macro"),
            },
            prefix="val/",
        )
    return MulticlassAccuracy(num_classes, average="micro"), MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "bal_acc": MulticlassAccuracy(num_classes, average="macro"),
            "f1_macro": MulticlassF1Score(num_classes, average="macro"),
        },
        prefix="val/",
    )


class Classifier(L.LightningModule):
    def __init__(
        self,
        model: dict[str, Any],
        num_classes: int,
        class_names: list[str],
        preprocess: dict[str, Any],
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        train: dict[str, Any] | None = None,
        finetune: dict[str, Any] | None = None,
        class_weights: list[float] | None = None,
        train_fingerprints: list[str] | None = None,  # pipeline.data.integrity.fingerprints of train
        task: str = MULTICLASS,  # or multilabel: several labels an image (pipeline.data.sources)
    ):
        super().__init__()
        self.save_hyperparameters()
        self.model = create_model_from_spec(model, num_classes)
        weights = torch.tensor(class_weights, dtype=torch.float) if class_weights else None
        self.register_buffer("class_weights", weights, persistent=False)
        self.label_smoothing = train["label_smoothing"] if train else 0.0
        self.loss = task_loss(task)
        self.multilabel = task == MULTILABEL  # timm's Mixup and label smoothing mix class indices only
        self.mixer = batch_mixer(train, num_classes) if train and not self.multilabel else None
        self.channels_last = bool(train and train["channels_last"])
        if self.channels_last:  # before a wrapper (DDP) sees the parameters: no copy changes their layout
            self.model.to(memory_format=torch.channels_last)
        self.compile_network = bool(train and train.get("compile"))  # checkpoints from before it lack it
        self.train_acc, self.val_scores = task_scores(task, num_classes)
        self.train_loss = MeanMetric()  # both logged once an epoch by log_train_epoch

        self.trust: dict | None = None  # what the calibrate stage fitted (pipeline.models.trusted)
        # the model config as trained, with where its first weights came from (pipeline.models.reference)
        self.trained_from: dict[str, Any] = dict(model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def on_fit_start(self) -> None:
        if self.compile_network:
            self.model.compile()  # in place: the checkpoint's parameter names stay those of the plain network

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def training_step(self, batch, batch_idx):
        x, y = self._inputs(batch[0]), batch[1]
        if self.mixer is not None:
            x, target = self.mixer(x, y)  # soft targets, label smoothing included
            logits = self(x)
            loss = F.cross_entropy(logits, target, weight=self.class_weights)
        elif self.multilabel:
            logits = self(x)
            loss = self.loss(logits, y, self.class_weights)
        else:
            logits = self(x)
            loss = F.cross_entropy(logits, y, weight=self.class_weights, label_smoothing=self.label_smoothing)
        self.train_acc.update(logits, y.long() if self.multilabel else y)  # unmixed labels when mixing
        self.train_loss.update(loss.detach(), weight=len(y))
        return loss

    def log_train_epoch(self) -> None:
        """Log the epoch's train/loss and train/acc (synced across ranks by torchmetrics) and start afresh.
        Once an epoch, not from training_step: Lightning's bookkeeping of a self.log call is a tenth of a
        small model's step (docs/design.md)."""
        if self.train_loss.update_count:  # already synced by torchmetrics; sync_dist stops a DDP warning
            self.log("train/loss", self.train_loss.compute(), prog_bar=True, sync_dist=True)
            self.log("train/acc", self.train_acc.compute(), sync_dist=True)
        self.train_loss.reset()
        self.train_acc.reset()

    def validation_step(self, batch, batch_idx):
        x, y = self._inputs(batch[0]), batch[1]
        logits = self(x)
        self.val_scores.update(logits, y.long() if self.multilabel else y)
        loss = self.loss(logits, y)
        self.log("val/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log_dict(self.val_scores, on_step=False, on_epoch=True, prog_bar=True)

    def on_train_epoch_start(self) -> None:
        groups = self.trainer.optimizers[0].param_groups
        head = [g["lr"] for g in groups if g.get("name", "head").startswith("head")]
        backbone = [g["lr"] for g in groups if g.get("name", "").startswith("backbone")]
        self.log("train/lr", max(head, default=0.0), on_step=False, on_epoch=True, sync_dist=True)
        if backbone:  # the stage next to the head; earlier stages are lower with discriminative rates
            self.log("train/lr_backbone", max(backbone), on_step=False, on_epoch=True, sync_dist=True)

    def configure_optimizers(self):
        spec = self.hparams.optimizer
        finetune = self.hparams.finetune or {}
        groups = param_groups(
            self.model,
            spec["lr"],
            spec["weight_decay"],
            finetune.get("backbone_lr_factor", 1.0),
            finetune.get("first_stage_lr_factor"),
        )
        optimizer = build_optimizer(groups, spec)
        scheduler = build_scheduler(
            optimizer,
            self.hparams.scheduler,
            self.trainer.max_epochs,
            self.trainer.estimated_stepping_batches,
        )
        return optimizer if scheduler is None else {"optimizer": optimizer, "lr_scheduler": scheduler}


def load_classifier(path: Path) -> Classifier:
    """Rebuild a trained classifier from a checkpoint without unpickling code."""
    if path.is_dir():
        raise PipelineError(f"checkpoint {path} is a folder: give the .ckpt file in it")
    if not path.is_file():
        raise PipelineError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        hparams = dict(checkpoint["hyper_parameters"])
        trained_from = dict(hparams["model"])
        # the weights come from the checkpoint, not the hub or the original file
        hparams["model"] = {**trained_from, "pretrained": False, "weights": None}
        for fitted_before_the_calibrate_stage in ("temperature", "conformal", "unknown"):
            hparams.pop(fitted_before_the_calibrate_stage, None)
        classifier = Classifier(**hparams)
        classifier.load_state_dict(checkpoint["state_dict"])
        classifier.trust = checkpoint.get("trust")
        classifier.trained_from = trained_from
    except pickle.UnpicklingError as err:
        raise PipelineError(f"cannot load checkpoint {path}: not a checkpoint this pipeline wrote") from err
    except (RuntimeError, KeyError, TypeError, ValueError, EOFError) as err:
        raise PipelineError(f"cannot load checkpoint {path}: {first_line(err)}") from err
    return classifier.eval()
