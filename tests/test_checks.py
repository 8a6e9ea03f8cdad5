import math

import pytest
import torch

from pipeline.checks import loss_at_init, overfit_one_batch


def tiny_net(num_classes: int = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, num_classes),
    )


@pytest.fixture
def batch():
    torch.manual_seed(1)
    return torch.randn(8, 3, 8, 8), torch.arange(8) % 4


def test_loss_at_init_passes_for_a_fresh_model(batch):
    result = loss_at_init(tiny_net(), *batch, num_classes=4, tolerance=0.25)
    assert result.passed and abs(result.value - math.log(4)) < 0.25 * math.log(4)


def test_loss_at_init_catches_a_huge_last_layer_init(batch):
    model = tiny_net()
    torch.nn.init.normal_(model[-1].weight, std=100.0)
    result = loss_at_init(model, *batch, num_classes=4, tolerance=0.5)
    assert not result.passed and "far from ln(4)" in result.message


def test_overfit_one_batch_passes_for_a_trainable_model(batch):
    result = overfit_one_batch(tiny_net(), *batch, steps=300, lr=0.05, target_loss=0.05)
    assert result.passed and result.value <= 0.05


@pytest.mark.parametrize("bug", ["frozen", "zero_lr"])
def test_overfit_one_batch_catches_a_pipeline_that_cannot_learn(batch, bug):
    model = tiny_net()
    if bug == "frozen":
        for p in model.parameters():
            p.requires_grad_(False)
        model[-1].bias.requires_grad_(True)  # a bias alone cannot fit 8 samples of 4 classes
    result = overfit_one_batch(
        model, *batch, steps=50, lr=0.0 if bug == "zero_lr" else 0.05, target_loss=0.05
    )
    assert not result.passed and "could not overfit" in result.message
