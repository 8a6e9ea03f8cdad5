"""Optimizers (timm's factory, every optimizer it lists) and LR schedules (torch's), from the `optimizer` and
`scheduler` configs."""

from typing import Any

import torch
from timm.optim import create_optimizer_v2, list_optimizers

# the config's `sgd` is plain momentum SGD, Nesterov with optimizer.nesterov; timm names the two flavours so
SGD_NAMES = {False: "momentum", True: "nesterov"}
MOMENTUM = ("sgd", "momentum", "nesterov", "rmsprop", "rmsproptf")  # optimizers that take `momentum`


def known_optimizers() -> list[str]:
    return sorted({"sgd", *list_optimizers()})


def build_optimizer(groups: list[dict], spec: dict[str, Any]) -> torch.optim.Optimizer:
    """`groups` carry their own lr and weight decay (see finetune.param_groups)."""
    name = SGD_NAMES[bool(spec["nesterov"])] if spec["name"] == "sgd" else spec["name"]
    extra = {"momentum": spec["momentum"]} if name in MOMENTUM else {}
    return create_optimizer_v2(groups, opt=name, lr=spec["lr"], weight_decay=spec["weight_decay"], **extra)


def build_scheduler(
    optimizer: torch.optim.Optimizer, spec: dict[str, Any], max_epochs: int, total_steps: int
) -> dict | None:
    """Lightning's lr_scheduler dict, or None for a constant rate."""
    sched = torch.optim.lr_scheduler
    name = spec["name"]
    if name == "none":
        return None
    if name == "onecycle":
        max_lr = [g["lr"] for g in optimizer.param_groups]
        scheduler = sched.OneCycleLR(
            optimizer, max_lr, total_steps=max(total_steps, 1), pct_start=spec["pct_start"]
        )
        return {"scheduler": scheduler, "interval": "step"}
    if name == "plateau":
        scheduler = sched.ReduceLROnPlateau(
            optimizer, mode="min", factor=spec["gamma"], patience=spec["patience"]
        )
        return {"scheduler": scheduler, "interval": "epoch", "monitor": "val/loss"}
    per_epoch = {
        "cosine": lambda: warmup_cosine(optimizer, spec["warmup_epochs"], spec["min_lr"], max_epochs),
        "step": lambda: sched.StepLR(optimizer, spec["step_size"], gamma=spec["gamma"]),
        "multistep": lambda: sched.MultiStepLR(optimizer, list(spec["milestones"]), spec["gamma"]),
    }
    return {"scheduler": per_epoch[name](), "interval": "epoch"}


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_epochs: int, min_lr: float, max_epochs: int):
    """Linear warmup from lr / (warmup + 1), then cosine decay to min_lr at the end of the last epoch."""
    sched = torch.optim.lr_scheduler
    warmup = min(int(warmup_epochs), max(max_epochs - 1, 0))
    cosine = sched.CosineAnnealingLR(optimizer, T_max=max(max_epochs - warmup, 1), eta_min=min_lr)
    if not warmup:
        return cosine
    ramp = sched.LinearLR(optimizer, start_factor=1 / (warmup + 1), total_iters=warmup)
    return sched.SequentialLR(optimizer, [ramp, cosine], milestones=[warmup])
