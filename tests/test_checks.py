import math

import pytest
import torch

from pipeline.checks import gradient_flow, input_statistics, loss_at_init, no_batch_mixing, overfit_one_batch


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


def test_overfit_one_batch_judges_the_batch_loss_with_dropout_off_and_restores_the_rate(batch):
    net = tiny_net()
    model = torch.nn.Sequential(*net[:-1], torch.nn.Dropout(0.9), net[-1])  # 90% dropout: a random loss
    result = overfit_one_batch(model, *batch, steps=300, lr=0.05, target_loss=0.05)
    assert result.passed, result.message
    assert model[-2].p == 0.9


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


def test_gradient_flow_passes_for_a_sound_model_and_catches_a_frozen_one(batch):
    assert gradient_flow(tiny_net(), *batch).passed
    frozen = tiny_net()
    for p in frozen.parameters():
        p.requires_grad_(False)
    result = gradient_flow(frozen, *batch)
    assert not result.passed and "no trainable parameters" in result.message


def test_gradient_flow_catches_a_dead_branch(batch):
    model = tiny_net()
    model[0].weight.data.zero_()  # ReLU of a zero conv: nothing flows back to the conv
    model[0].bias.data.fill_(-1.0)
    result = gradient_flow(model, *batch)
    assert not result.passed and "0.weight" in result.message


class BatchMixer(torch.nn.Module):
    """The bug: normalizing with statistics of the whole batch at eval time."""

    def forward(self, x):
        return x - x.mean(0, keepdim=True)


def test_batch_mixing_is_caught(batch):
    x, _ = batch
    assert no_batch_mixing(tiny_net(), x).passed
    mixed = torch.nn.Sequential(BatchMixer(), tiny_net())
    result = no_batch_mixing(mixed, x)
    assert not result.passed and "mixes the batch" in result.message


def test_input_statistics_catch_unnormalized_inputs_and_bad_labels(batch):
    x, y = batch
    assert input_statistics(x, y, 4, [2, 2, 2, 2]).passed
    raw = (torch.rand(8, 3, 8, 8) * 255).round()  # 0-255 pixels straight into the model
    result = input_statistics(raw, y, 4, [2, 2, 2, 2])
    assert not result.passed and "0-255" in result.message
    assert "labels outside" in input_statistics(x, y + 4, 4, [2, 2, 2, 2]).message
    assert "no training images" in input_statistics(x, y, 4, [2, 0, 2, 2]).message
