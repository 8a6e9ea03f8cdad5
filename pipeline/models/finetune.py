"""Fine-tuning strategies: which layers train when, and at which learning rate.

- `full`: every layer trains from the start; the backbone at `lr x backbone_lr_factor`.
- `linear_probe`: the backbone stays frozen; only the classifier head trains.
- `gradual`: the head trains alone until `unfreeze_epoch`, then the backbone joins at its own lr.
- `auto` (pipeline.recipe): `gradual` for pretrained weights, `full` at one lr from random init.

The optimizer holds every parameter from the start, in head and backbone groups (each split into decay and
no-decay), so the LR schedule covers all groups; a frozen parameter has no gradient and is skipped.

timm's parameter grouping is imported only for discriminative rates (first_stage_lr_factor).
"""

import logging

import torch
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from pipeline.models.factory import classifier_head

log = logging.getLogger("pipeline.train")


def backbone_modules(model: nn.Module) -> list[nn.Module]:
    """Every module outside the head that owns parameters or is a batch norm (everything a linear probe
    freezes). Not only leaves: timm's BatchNormAct2d holds its own weights and an activation child."""
    head = set(classifier_head(model).modules())
    return [
        m
        for m in model.modules()
        if m not in head and (any(True for _ in m.parameters(recurse=False)) or isinstance(m, _BatchNorm))
    ]


def stage_lr_factors(
    model: nn.Module, backbone_lr_factor: float, first_stage_lr_factor: float | None
) -> dict[str, float]:
    """Each backbone parameter's lr factor: the stage next to the head at `backbone_lr_factor`, earlier
    stages lower, spaced geometrically down to `first_stage_lr_factor` at the stem (fastai's discriminative
    rates). Stages are timm's coarse parameter groups; a model without them has one backbone rate."""
    names = [name for name, _ in model.named_parameters()]
    if first_stage_lr_factor is None or not hasattr(model, "group_matcher"):
        return dict.fromkeys(names, backbone_lr_factor)
    from timm.models import group_parameters

    stage_of = group_parameters(model, model.group_matcher(coarse=True), reverse=True)
    top = max(max(stage_of.values()) - 1, 1)  # the highest id is the classifier head
    low, high = first_stage_lr_factor, backbone_lr_factor
    return {name: low * (high / low) ** (min(stage_of.get(name, top), top) / top) for name in names}


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    backbone_lr_factor: float,
    first_stage_lr_factor: float | None = None,
) -> list[dict]:
    """Head and backbone groups (one per backbone stage with discriminative rates), each without weight decay
    on biases, norms and other 1-d parameters. Hand-written: timm's param_groups_weight_decay has no
    head/backbone split, and param_groups_layer_decay's lr_scale only takes effect under timm's schedulers."""
    head_ids = {id(p) for p in classifier_head(model).parameters()}
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    factors = stage_lr_factors(model, backbone_lr_factor, first_stage_lr_factor)
    groups: dict[tuple[bool, bool, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        in_head = id(param) in head_ids
        decays = param.ndim > 1 and not name.endswith(".bias") and name not in skip
        groups.setdefault((in_head, decays, 1.0 if in_head else factors[name]), []).append(param)
    return [
        {
            "params": params,
            "lr": lr * factor,
            "weight_decay": weight_decay if decays else 0.0,
            "name": f"{'head' if in_head else 'backbone'}{'' if decays else '_no_decay'}",
        }
        for (in_head, decays, factor), params in sorted(groups.items(), reverse=True)
    ]


def freeze_backbone(model: nn.Module, freeze_batchnorm: bool) -> None:
    """Freeze everything but the head; with freeze_batchnorm=false, batch norm layers keep training."""
    BaseFinetuning.freeze(backbone_modules(model), train_bn=not freeze_batchnorm)
    if freeze_batchnorm:
        set_frozen_batchnorm_eval(model)


def set_frozen_batchnorm_eval(model: nn.Module) -> None:
    """Frozen batch norm normalizes with its pretrained running statistics and leaves them untouched."""
    for module in model.modules():
        if isinstance(module, _BatchNorm) and _is_frozen(module):
            module.eval()


def _is_frozen(module: nn.Module) -> bool:
    params = list(module.parameters(recurse=False))
    return not any(p.requires_grad for p in params) if params else not module.track_running_stats


def held_parameters(model: nn.Module, freeze_batchnorm: bool) -> list[nn.Parameter]:
    """What freeze_backbone would freeze: the backbone's parameters (its batch norms' only when frozen)."""
    modules = [m for m in backbone_modules(model) if freeze_batchnorm or not isinstance(m, _BatchNorm)]
    return [p for m in modules for p in m.parameters(recurse=False)]


class FinetuneSchedule(BaseFinetuning):
    """Lightning's finetuning callback driven by the `finetune` config.

    With more than one process (DDP, whatever the config calls it: Lightning picks DDP by itself for
    devices > 1), gradual's head phase holds the backbone instead of freezing it: DDP registers the
    parameters that need gradients once, when it wraps the model, so a backbone unfrozen later would never
    have its gradients averaged and the ranks would drift apart. Held, the backbone keeps requires_grad, its
    frozen batch norms stay in eval mode, and its gradients are dropped before each optimizer step until
    `unfreeze_epoch`: the same training as freezing, at the cost of the backbone's backward pass."""

    def __init__(self, strategy: str, unfreeze_epoch: int, freeze_batchnorm: bool):
        super().__init__()
        self.strategy = strategy
        self.unfreeze_epoch = unfreeze_epoch
        self.freeze_batchnorm = freeze_batchnorm
        self.held: list[nn.Parameter] = []  # the backbone, while held under DDP

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.distributed = trainer.world_size > 1
        super().setup(trainer, pl_module, stage)

    def freeze_before_training(self, pl_module) -> None:
        if self.strategy == "gradual" and self.distributed:
            self.held = held_parameters(pl_module.model, self.freeze_batchnorm)
            if pl_module.trainer.is_global_zero:
                log.info(
                    "DDP: the backbone is held (its gradients dropped) rather than frozen until epoch %d",
                    self.unfreeze_epoch,
                )
        elif self.strategy in ("linear_probe", "gradual"):
            freeze_backbone(pl_module.model, self.freeze_batchnorm)

    def finetune_function(self, pl_module, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        if self.strategy == "gradual" and epoch >= self.unfreeze_epoch:
            self.held = []
            backbone = backbone_modules(pl_module.model)
            self.make_trainable(backbone)
            for module in backbone:
                module.train()  # batch norm frozen until now was in eval mode
        if self.held and self.freeze_batchnorm:
            for module in backbone_modules(pl_module.model):
                if isinstance(module, _BatchNorm):
                    module.eval()  # held: its pretrained statistics stay, as when frozen
        if self.freeze_batchnorm:
            set_frozen_batchnorm_eval(pl_module.model)  # after fit's model.train() and on resume

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        for param in self.held:
            param.grad = None  # averaged across ranks by now; the optimizer skips a parameter without one
