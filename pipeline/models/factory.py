"""One factory for every model: `create_model(name, num_classes, ...)` over timm's registry and SimpleCNN."""

from typing import Any

import timm
import torch

from pipeline.errors import PipelineError
from pipeline.models.simple_cnn import SimpleCNN
from pipeline.models.weights import load_weights


def create_model(
    name: str,
    num_classes: int,
    pretrained: bool = False,
    drop_rate: float = 0.0,
    kwargs: dict[str, Any] | None = None,
    weights: str | None = None,
    zero_init_head: bool = True,
) -> torch.nn.Module:
    """`simple_cnn` builds pipeline.models.simple_cnn from kwargs; any other name comes from timm.
    `weights` (a local file) is loaded after construction; it needs no network."""
    model = _build(name, num_classes, pretrained, drop_rate, kwargs)
    if weights:
        load_weights(model, weights)
    if zero_init_head:
        _zero_classifier(model)
    return model


def _zero_classifier(model: torch.nn.Module) -> None:
    """Start the last linear layer at zero, so the loss at init is exactly ln(C). timm's default head init
    gave 4.3 (random init) and 5.1 (on ImageNet features) instead of ln(10) = 2.3 for EfficientNet-Lite0."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(head, torch.nn.Linear):
        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        head = linears[-1] if linears else None
    if head is not None:
        torch.nn.init.zeros_(head.weight)
        if head.bias is not None:
            torch.nn.init.zeros_(head.bias)


def _build(name: str, num_classes: int, pretrained: bool, drop_rate: float, kwargs: dict[str, Any] | None):
    if name == "simple_cnn":
        if pretrained:
            raise PipelineError("simple_cnn has no pretrained weights; set model.pretrained=false")
        try:
            return SimpleCNN(num_classes, drop_rate=drop_rate, **(kwargs or {}))
        except (TypeError, ValueError) as err:
            raise PipelineError(f"bad model.kwargs for simple_cnn: {err}") from err
    if not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:5]
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise PipelineError(f"unknown model {name!r}{hint}")
    try:
        return timm.create_model(
            name, pretrained=pretrained, num_classes=num_classes, drop_rate=drop_rate, **(kwargs or {})
        )
    except (OSError, RuntimeError) as err:
        if pretrained:
            raise PipelineError(
                f"could not load pretrained weights for {name} (offline? use model.pretrained=false): {err}"
            ) from err
        raise
    except TypeError as err:
        raise PipelineError(f"bad model.kwargs for {name}: {err}") from err


def pretrained_mean_std(name: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """Normalization the model's pretrained weights were trained with, from timm's pretrained config."""
    config = timm.models.get_pretrained_cfg(name)
    return (tuple(config.mean), tuple(config.std)) if config is not None else None
