"""Optimizers (through timm's factory) and LR schedules, from the `optimizer` and `scheduler` configs."""

import math
from typing import Any

import torch
from timm.optim import create_optimizer_v2

from pipeline.errors import PipelineError
from pipeline.schema import OPTIMIZERS, SCHEDULERS


def build_optimizer(groups: list[dict], spec: dict[str, Any]) -> torch.optim.Optimizer:
    """`groups` carry their own lr and weight decay (see finetune.param_groups)."""
    name = spec["name"]
    if name not in OPTIMIZERS:
        raise PipelineError(f"unknown optimizer {name!r}; choose one of {list(OPTIMIZERS)}")
    if spec["lr"] <= 0 or spec["weight_decay"] < 0:
        raise PipelineError(
            f"optimizer.lr must be > 0 and weight_decay >= 0, got {spec['lr']}, {spec['weight_decay']}"
        )
    extra = {}
    if name == "sgd":
        name = "sgd" if spec["nesterov"] else "momentum"  # timm's names for the two SGD flavours
    if name in ("sgd", "momentum", "rmsprop"):
        extra["momentum"] = spec["momentum"]
    return create_optimizer_v2(groups, opt=name, lr=spec["lr"], weight_decay=spec["weight_decay"], **extra)


def build_scheduler(
    optimizer: torch.optim.Optimizer, spec: dict[str, Any], max_epochs: int, total_steps: int
) -> dict | None:
    """Lightning's lr_scheduler dict, or None for a constant rate."""
    name = spec["name"]
    if name == "none":
        return None
    if name == "cosine":
        scheduler = _warmup_cosine(optimizer, spec, max_epochs)
    elif name == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, spec["step_size"], gamma=spec["gamma"])
    elif name == "multistep":
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(spec["milestones"]), spec["gamma"])
    elif name == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[g["lr"] for g in optimizer.param_groups],
            total_steps=max(total_steps, 1),
            pct_start=spec["pct_start"],
        )
        return {"scheduler": scheduler, "interval": "step"}
    elif name == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=spec["gamma"], patience=spec["patience"]
        )
        return {"scheduler": scheduler, "interval": "epoch", "monitor": "val/loss"}
    else:
        raise PipelineError(f"unknown scheduler {name!r}; choose one of {list(SCHEDULERS)}")
    return {"scheduler": scheduler, "interval": "epoch"}


def _warmup_cosine(optimizer: torch.optim.Optimizer, spec: dict[str, Any], max_epochs: int):
    """Linear warmup, then cosine decay to min_lr; per epoch, per parameter group."""
    warmup = min(int(spec["warmup_epochs"]), max(max_epochs - 1, 0))
    min_lr = float(spec["min_lr"])

    def factor(epoch: int, base: float) -> float:
        if epoch < warmup:
            return (epoch + 1) / (warmup + 1)
        progress = (epoch - warmup) / max(max_epochs - warmup, 1)
        floor = min_lr / base if base > 0 else 0.0
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    lambdas = [lambda e, b=g["lr"]: factor(e, b) for g in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
