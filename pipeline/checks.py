"""Training-pipeline checks run before spending compute. Each returns a CheckResult row.

They follow the usual recipe: the loss at init must match chance (ln C; ln 2 a label for several labels an
image), and the model must be able to
drive the loss of one fixed batch to near zero; failing either means a bug, not a bad hyperparameter.
"""

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.losses import Loss, chance_loss, task_loss
from pipeline.tasks import MULTICLASS

DROP_ATTRIBUTES = ("p", "drop_prob", "drop_rate")  # nn.Dropout*, timm's DropPath, timm models' head dropout


@dataclass
class CheckResult:
    name: str
    passed: bool
    value: float
    expected: str
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


def loss_at_init(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    tolerance: float,
    task: str = MULTICLASS,
):
    """The untrained model's loss on a batch should be close to chance's (pipeline.models.losses)."""
    expected, chance = chance_loss(task, num_classes)
    with torch.no_grad():
        loss = task_loss(task)(model(x), y).item()
    deviation = abs(loss - expected) / expected
    passed = math.isfinite(loss) and deviation <= tolerance
    message = f"loss at init {loss:.3f} is within {tolerance:.0%} of {chance}={expected:.3f}"
    if not passed:
        message = (
            f"loss at init {loss:.3f} is far from {chance}={expected:.3f} (off by {deviation:.0%}): "
            "check the last layer's init, the input scaling and the labels"
        )
    return CheckResult("loss_at_init", passed, loss, f"{expected:.3f} +/- {tolerance:.0%}", message)


@contextmanager
def dropout_off(model: nn.Module) -> Iterator[None]:
    """Every dropout and drop-path rate set to zero, restored on exit: overfitting one batch is judged on
    the loss of the batch itself, which dropout makes a random draw."""
    saved = [
        (module, name, getattr(module, name))
        for module in model.modules()
        for name in DROP_ATTRIBUTES
        if isinstance(getattr(module, name, None), float)
        and (name != "p" or isinstance(module, nn.modules.dropout._DropoutNd))
    ]
    for module, name, _ in saved:
        setattr(module, name, 0.0)
    try:
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


def overfit_one_batch(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    lr: float,
    target_loss: float,
    loss_fn: Loss = F.cross_entropy,
):
    """Train every trainable parameter on one fixed batch, dropout off; a sound pipeline reaches near-zero
    loss within the step budget."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    with dropout_off(model):
        loss, used = _steps_on_batch(model, optimizer, x, y, steps, target_loss, loss_fn)
    passed = math.isfinite(loss) and loss <= target_loss
    message = (
        f"one batch of {len(y)} overfit to loss {loss:.4f} in {used} steps"
        if passed
        else f"could not overfit one batch of {len(y)}: loss {loss:.4f} after {used} steps "
        f"(target {target_loss}); check that parameters are trainable and the learning rate is not zero"
    )
    return CheckResult("overfit_one_batch", passed, loss, f"<= {target_loss} in {steps} steps", message)


def _steps_on_batch(
    model, optimizer, x, y, steps: int, target_loss: float, loss_fn: Loss
) -> tuple[float, int]:
    """Optimizer steps on (x, y) until the loss reaches target_loss or stops being finite."""
    loss = float("nan")
    used = 0
    while used < steps:
        used += 1
        optimizer.zero_grad(set_to_none=True)
        batch_loss = loss_fn(model(x), y)
        batch_loss.backward()
        optimizer.step()
        loss = batch_loss.item()
        if loss <= target_loss or not math.isfinite(loss):
            break
    return loss, used


def gradient_flow(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Loss = F.cross_entropy):
    """After one backward pass every trainable parameter has a finite, non-zero gradient; frozen ones none."""
    if not any(p.requires_grad for p in model.parameters()):
        message = "no trainable parameters (is the whole model frozen?)"
        return CheckResult("gradient_flow", False, 0.0, "0 bad", message)
    model.train()
    model.zero_grad(set_to_none=True)
    loss_fn(model(x), y).backward()
    dead, frozen_with_grad, trainable = [], [], 0
    for name, p in model.named_parameters():
        if p.requires_grad:
            trainable += 1
            if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.abs().sum() > 0:
                dead.append(name)
        elif p.grad is not None:
            frozen_with_grad.append(name)
    model.zero_grad(set_to_none=True)
    problems = []
    if dead:
        problems.append(
            f"{len(dead)} trainable parameter(s) get no finite non-zero gradient, e.g. {dead[:3]}"
        )
    if frozen_with_grad:
        problems.append(f"frozen parameters receive gradients, e.g. {frozen_with_grad[:3]}")
    message = "; ".join(problems) or f"all {trainable} trainable parameters get finite non-zero gradients"
    return CheckResult(
        "gradient_flow", not problems, float(len(dead) + len(frozen_with_grad)), "0 bad", message
    )


def no_batch_mixing(model: torch.nn.Module, x: torch.Tensor):
    """In eval mode, sample 0's output must not depend on any other sample's input."""
    model.eval()
    x = x.detach().clone().requires_grad_(True)
    model(x)[0].sum().backward()
    leak = x.grad[1:].abs().max().item() if len(x) > 1 else 0.0
    own = x.grad[0].abs().max().item()
    passed = leak == 0.0 and own > 0
    message = (
        "outputs depend only on their own sample"
        if passed
        else f"sample 0's output depends on other samples (max gradient {leak:.2e}): a layer mixes the batch"
        if leak
        else "sample 0's output does not depend on its own input"
    )
    return CheckResult("no_batch_mixing", passed, leak, "0", message)


def _rounded(t: torch.Tensor) -> list[float]:
    return [round(v, 2) for v in t.tolist()]


def input_statistics(x: torch.Tensor, y: torch.Tensor, num_classes: int, train_counts: list[int]):
    """Normalized inputs have per-channel mean near 0 and std near 1; labels in range; every class trains."""
    mean, std = x.mean((0, 2, 3)), x.std((0, 2, 3))
    problems = []
    if not torch.isfinite(x).all():
        problems.append("inputs contain NaN or inf")
    if mean.abs().max() > 1.5 or std.min() < 0.2 or std.max() > 5:
        problems.append(
            f"per-channel mean {_rounded(mean)} and std {_rounded(std)} are far from 0 and 1: "
            "check the normalization (0-255 inputs?)"
        )
    several = y.ndim == 2  # rows of 0/1 a label
    if several and (y.shape[1] != num_classes or ((y != 0) & (y != 1)).any()):
        problems.append(f"targets are not rows of {num_classes} zeros and ones")
    if not several and (y.min() < 0 or y.max() >= num_classes):
        problems.append(f"labels outside 0..{num_classes - 1}")
    empty = [k for k, n in enumerate(train_counts) if n == 0]
    if empty:
        problems.append(f"classes {empty} have no training images")
    message = "; ".join(problems) or (
        f"inputs normalized (channel means {_rounded(mean)}, stds {_rounded(std)}), "
        "labels in range, every class has training images"
    )
    return CheckResult(
        "input_statistics", not problems, float(mean.abs().max()), "|mean| <= 1.5, std 0.2..5", message
    )
