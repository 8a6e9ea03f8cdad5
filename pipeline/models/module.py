"""The LightningModule: a classifier, its loss, metrics, optimizer and schedule.

Its hyperparameters are plain dicts and lists (model spec, class names, preprocessing), so a checkpoint
rebuilds the exact model with `torch.load(weights_only=True)` and without the config that produced it.
"""

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from timm.optim import create_optimizer_v2
from torchmetrics.classification import MulticlassAccuracy

from pipeline.errors import PipelineError
from pipeline.models.factory import create_model

OPTIMIZERS = {"sgd", "adam", "adamw", "rmsprop"}
SCHEDULERS = {"cosine", "step", "none"}


def build_scheduler(optimizer: torch.optim.Optimizer, spec: dict[str, Any], max_epochs: int):
    """Per-epoch schedule: linear warmup then cosine, a step decay, or a constant rate."""
    name = spec["name"]
    if name == "none":
        return None
    warmup = min(int(spec.get("warmup_epochs", 0)), max(max_epochs - 1, 0))
    if name == "cosine":
        base_lrs = [g["lr"] for g in optimizer.param_groups]
        min_lr = float(spec.get("min_lr", 0.0))

        def factor(epoch: int, base: float) -> float:
            if epoch < warmup:
                return (epoch + 1) / (warmup + 1)
            progress = (epoch - warmup) / max(max_epochs - warmup, 1)
            floor = min_lr / base if base > 0 else 0.0
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

        lambdas = [lambda e, b=b: factor(e, b) for b in base_lrs]
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=spec["step_size"], gamma=spec["gamma"])
    raise PipelineError(f"unknown scheduler {name!r}; choose one of {sorted(SCHEDULERS)}")


class Classifier(L.LightningModule):
    def __init__(
        self,
        model: dict[str, Any],
        num_classes: int,
        class_names: list[str],
        preprocess: dict[str, Any],
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
        class_weights: list[float] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.model = create_model(
            model["name"],
            num_classes,
            pretrained=model.get("pretrained", False),
            drop_rate=model.get("drop_rate", 0.0),
            kwargs=model.get("kwargs"),
            weights=model.get("weights"),
            zero_init_head=model.get("zero_init_head", True),
        )
        weights = torch.tensor(class_weights, dtype=torch.float) if class_weights else None
        self.register_buffer("class_weights", weights, persistent=False)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(
            logits, y, weight=self.class_weights, label_smoothing=self.hparams.label_smoothing
        )
        self.train_acc(logits, y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.val_acc(logits, y)
        self.log("val/loss", F.cross_entropy(logits, y), on_step=False, on_epoch=True, prog_bar=True)
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)

    def on_train_epoch_start(self) -> None:
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=False, on_epoch=True)

    def configure_optimizers(self):
        spec = self.hparams.optimizer
        if spec["name"] not in OPTIMIZERS:
            raise PipelineError(f"unknown optimizer {spec['name']!r}; choose one of {sorted(OPTIMIZERS)}")
        extra = {"momentum": spec["momentum"]} if spec["name"] in {"sgd", "rmsprop"} else {}
        optimizer = create_optimizer_v2(
            self.model, opt=spec["name"], lr=spec["lr"], weight_decay=spec["weight_decay"], **extra
        )
        scheduler = build_scheduler(optimizer, self.hparams.scheduler, self.trainer.max_epochs)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


def load_classifier(path: Path) -> Classifier:
    """Rebuild a trained classifier from a checkpoint without unpickling code."""
    if not path.is_file():
        raise PipelineError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        hparams = dict(checkpoint["hyper_parameters"])
        # the weights come from the checkpoint, not the hub or the original file
        hparams["model"] = {**hparams["model"], "pretrained": False, "weights": None}
        classifier = Classifier(**hparams)
        classifier.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError, TypeError, ValueError, EOFError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PipelineError(f"cannot load checkpoint {path}: {first_line}") from err
    return classifier.eval()
