"""Training-pipeline checks run before spending compute. Each returns a CheckResult row.

They follow the usual recipe: the loss at init must match chance (ln C), and the model must be able to
drive the loss of one fixed batch to near zero; failing either means a bug, not a bad hyperparameter.
"""

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


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
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, tolerance: float
):
    """Cross-entropy of the untrained model on a batch should be close to ln(num_classes)."""
    expected = math.log(num_classes)
    with torch.no_grad():
        loss = F.cross_entropy(model(x), y).item()
    deviation = abs(loss - expected) / expected
    passed = math.isfinite(loss) and deviation <= tolerance
    message = (
        f"loss at init {loss:.3f} is within {tolerance:.0%} of ln({num_classes})={expected:.3f}"
        if passed
        else f"loss at init {loss:.3f} is far from ln({num_classes})={expected:.3f} "
        f"(off by {deviation:.0%}): check the last layer's init, the input scaling and the labels"
    )
    return CheckResult("loss_at_init", passed, loss, f"{expected:.3f} +/- {tolerance:.0%}", message)


def overfit_one_batch(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float, target_loss: float
):
    """Train on one fixed batch; a sound pipeline reaches near-zero loss within the step budget."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    loss = float("nan")
    used = 0
    while used < steps:
        used += 1
        optimizer.zero_grad(set_to_none=True)
        batch_loss = F.cross_entropy(model(x), y)
        batch_loss.backward()
        optimizer.step()
        loss = batch_loss.item()
        if loss <= target_loss or not math.isfinite(loss):
            break
    passed = math.isfinite(loss) and loss <= target_loss
    message = (
        f"one batch of {len(y)} overfit to loss {loss:.4f} in {used} steps"
        if passed
        else f"could not overfit one batch of {len(y)}: loss {loss:.4f} after {used} steps "
        f"(target {target_loss}); check that parameters are trainable and the learning rate is not zero"
    )
    return CheckResult("overfit_one_batch", passed, loss, f"<= {target_loss} in {steps} steps", message)
