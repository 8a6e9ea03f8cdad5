"""Where a model looks: Grad-CAM heatmaps (the `grad-cam` package) for any CNN this project builds.

The layer explained is found by running the model once, not from a list of names per architecture: the last
module, in the order their outputs appear, whose output is still a spatial feature map (N, C, H, W with
H x W > 1) no larger than its input, so global pooling (1 x 1) and the fixed-size adaptive pooling of
torchvision's VGG and AlexNet (which enlarges a small map) are passed over. That is `layer4` of a ResNet,
the last batch-norm and activation of EfficientNet, `features` of VGG and of SimpleCNN.
"""

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from pipeline.errors import PipelineError


def last_feature_map_layer(model: torch.nn.Module, example: torch.Tensor) -> torch.nn.Module:
    """The module whose output is the model's last spatial feature map for inputs like `example`."""
    seen: list[tuple[torch.nn.Module, bool]] = []

    def record(module, inputs, output):
        first = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
        spatial = isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[-2:].numel() > 1
        grows = (
            first is not None and first.dim() == 4 and output.shape[-2:].numel() > first.shape[-2:].numel()
        )
        seen.append((module, spatial and not grows))

    handles = [m.register_forward_hook(record) for m in model.modules() if m is not model]
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for handle in handles:
            handle.remove()
    chosen = [module for module, is_map in seen if is_map]
    if not chosen:
        raise PipelineError(f"no spatial feature map in the model at input size {tuple(example.shape[-2:])}")
    return chosen[-1]


def heatmaps(model: torch.nn.Module, batch: torch.Tensor, classes: list[int]) -> np.ndarray:
    """(N, H, W) Grad-CAM maps in [0, 1], each at its image's size, for the class given per image."""
    layer = last_feature_map_layer(model, batch[:1])
    with GradCAM(model=model.eval(), target_layers=[layer]) as cam:
        # an input that wants gradients: a frozen backbone (a linear probe) still gives the map one
        inputs = batch.to(next(model.parameters()).device).clone().requires_grad_(True)
        return cam(inputs, targets=[ClassifierOutputTarget(c) for c in classes])


def overlay(image: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """The heatmap over an RGB image in [0, 1] (the model's input, denormalized), as uint8 RGB."""
    return show_cam_on_image(image.astype(np.float32), heatmap, use_rgb=True, image_weight=0.55)


def denormalize(x: torch.Tensor, preprocess) -> np.ndarray:
    """A normalized CHW input back to an HWC RGB image in [0, 1]: what the model saw."""
    mean, std = torch.tensor(preprocess.mean)[:, None, None], torch.tensor(preprocess.std)[:, None, None]
    return (x * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


def overlays(model: torch.nn.Module, preprocess, batch: torch.Tensor, classes: list[int]) -> list[np.ndarray]:
    """Each input of the (normalized) batch with the heatmap of its class over it, as uint8 RGB."""
    maps = heatmaps(model, batch, classes)
    return [overlay(denormalize(x, preprocess), maps[j]) for j, x in enumerate(batch)]
