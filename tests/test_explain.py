"""Grad-CAM (pipeline.evaluation.explain): the layer explained is found from the model itself, and every
architecture family this project builds gets one heatmap per image, at the image's size, that varies."""

import numpy as np
import pytest
import torch

from pipeline.evaluation.explain import heatmaps, last_feature_map_layer, overlay
from pipeline.models.factory import create_model

# name, input size, the module expected to be explained
MODELS = [
    ("resnet18", 64, "layer4"),  # timm
    ("tf_efficientnet_lite0", 64, "bn2"),  # timm: the head's batch norm and activation
    ("vgg11", 64, "features"),  # timm's VGG: its pre-logits convolutions would turn 2x2 into 1x1
    ("simple_cnn", 32, "features"),
    ("googlenet", 64, "inception5b"),  # torchvision
]


def random_model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, 3, zero_init_head=False)  # a zero head has zero gradients: a blank map


@pytest.mark.parametrize(("name", "size", "layer"), MODELS, ids=[m[0] for m in MODELS])
def test_each_architecture_gets_a_varying_heatmap_per_image_at_its_size(name, size, layer):
    model = random_model(name)
    batch = torch.rand(2, 3, size, size)
    names = {module: n for n, module in model.named_modules()}
    assert names[last_feature_map_layer(model, batch[:1])] == layer
    with torch.no_grad():
        predicted = model.eval()(batch).argmax(1).tolist()  # the class it found evidence for
    maps = heatmaps(model, batch, predicted)
    assert maps.shape == (2, size, size)
    assert all(m.std() > 0.01 for m in maps), [m.std() for m in maps]
    assert maps.min() >= 0.0 and maps.max() <= 1.0


def test_a_frozen_backbone_still_gets_heatmaps():
    model = random_model("resnet18")
    for p in model.parameters():
        p.requires_grad_(False)  # as in a linear probe
    batch = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        predicted = model.eval()(batch).argmax(1).tolist()
    assert heatmaps(model, batch, predicted)[0].std() > 0.01


def test_the_overlay_is_an_rgb_image_of_the_input_size():
    image = np.random.default_rng(0).random((32, 40, 3))
    shown = overlay(image, np.linspace(0, 1, 32 * 40).reshape(32, 40))
    assert shown.shape == (32, 40, 3) and shown.dtype == np.uint8
