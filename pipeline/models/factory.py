"""One factory for every model: `create_model(name, num_classes, ...)` over timm's registry, the torchvision
classics timm lacks (AlexNet, GoogLeNet) and SimpleCNN; `create_model_from_spec` for a `model` config.

torchvision is imported only for the classics timm lacks.
"""

from typing import Any

import timm
import timm.data
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from pipeline.errors import PipelineError
from pipeline.models.simple_cnn import SimpleCNN
from pipeline.models.weights import load_weights

TORCHVISION_CLASSICS = ("alexnet", "googlenet")


def create_model(
    name: str,
    num_classes: int,
    pretrained: bool = False,
    drop_rate: float = 0.0,
    kwargs: dict[str, Any] | None = None,
    weights: str | None = None,
    zero_init_head: bool = True,
    drop_path_rate: float = 0.0,
) -> torch.nn.Module:
    """`simple_cnn` builds pipeline.models.simple_cnn from kwargs; `alexnet` and `googlenet` come from
    torchvision; any other name from timm. `weights` (a local file) is loaded after construction."""
    if drop_path_rate and (name == "simple_cnn" or name in TORCHVISION_CLASSICS):
        raise PipelineError(f"{name} has no stochastic depth; set model.drop_path_rate=0")
    if name in TORCHVISION_CLASSICS:
        model = _torchvision(name, num_classes, pretrained, drop_rate, kwargs)
    else:
        model = _build(name, num_classes, pretrained, drop_rate, kwargs, drop_path_rate)
    if weights:
        load_weights(model, weights)
    if zero_init_head:
        _zero_classifier(model)
    return model


def create_model_from_spec(spec: dict[str, Any], num_classes: int) -> torch.nn.Module:
    """The network a `model` config section (pipeline.schema.ModelConfig, as a plain dict) describes."""
    return create_model(
        spec["name"],
        num_classes,
        pretrained=spec.get("pretrained", False),
        drop_rate=spec.get("drop_rate", 0.0),
        kwargs=spec.get("kwargs"),
        weights=spec.get("weights"),
        zero_init_head=spec.get("zero_init_head", True),
        drop_path_rate=spec.get("drop_path_rate", 0.0),
    )


def check_image_size(model: torch.nn.Module, name: str, image_size: int) -> None:
    """One forward pass of one blank image: a network whose fixed pooling leaves nothing of a small image
    (VGG below 32 px, AlexNet below 64) fails here in one line, not in the middle of a stage."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size))
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[0]
        message = f"{name} cannot take {image_size} px images ({reason}): raise data.image_size"
        raise PipelineError(message) from err
    finally:
        model.train(was_training)


def classifier_head(model: torch.nn.Module) -> torch.nn.Module:
    """timm's `get_classifier()`, else the last linear layer (SimpleCNN, torchvision classics)."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if isinstance(head, torch.nn.Module) and any(True for _ in head.parameters()):
        return head
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise PipelineError(f"cannot find the classifier head of {type(model).__name__}")
    return linears[-1]


def _zero_classifier(model: torch.nn.Module) -> None:
    """Start the classifier head at zero, so the loss at init is exactly ln(C). timm's default head init
    gave 4.3 (random init) and 5.1 (on ImageNet features) instead of ln(10) = 2.3 for EfficientNet-Lite0."""
    layers = [m for m in classifier_head(model).modules() if isinstance(m, torch.nn.Linear | torch.nn.Conv2d)]
    for param in layers[-1].parameters() if layers else ():
        torch.nn.init.zeros_(param)


def check_model_name(name: str) -> None:
    """One line for a name no factory knows, with timm's closest names."""
    if name == "simple_cnn" or name in TORCHVISION_CLASSICS or timm.is_model(name):
        return
    close = timm.list_models(f"*{name}*")[:5]
    hint = f"; similar: {', '.join(close)}" if close else ""
    raise PipelineError(f"unknown model {name!r}{hint}")


def _torchvision(
    name: str, num_classes: int, pretrained: bool, drop_rate: float, kwargs: dict[str, Any] | None
):
    """The hub weights have 1000 classes: load them, then put a new head of num_classes on top."""
    import torchvision

    builder = getattr(torchvision.models, name)
    options = {"dropout": drop_rate, **(kwargs or {})}
    if name == "googlenet":
        options["aux_logits"] = False  # the auxiliary heads only served the original training
        options.setdefault("init_weights", not pretrained)
    try:
        if not pretrained:
            return builder(weights=None, num_classes=num_classes, **options)
        model = builder(weights="DEFAULT", **options)
    except TypeError as err:
        raise PipelineError(f"bad model.kwargs for {name}: {err}") from err
    except (OSError, RuntimeError) as err:
        raise PipelineError(f"could not load pretrained weights for {name} (offline?): {err}") from err
    if name == "googlenet":
        model.fc = torch.nn.Linear(model.fc.in_features, num_classes)
    else:
        model.classifier[-1] = torch.nn.Linear(model.classifier[-1].in_features, num_classes)
    return model


def _build(
    name: str,
    num_classes: int,
    pretrained: bool,
    drop_rate: float,
    kwargs: dict[str, Any] | None,
    drop_path_rate: float,
):
    if name == "simple_cnn":
        if pretrained:
            raise PipelineError("simple_cnn has no pretrained weights; set model.pretrained=false")
        try:
            return SimpleCNN(num_classes, drop_rate=drop_rate, **(kwargs or {}))
        except (TypeError, ValueError) as err:
            raise PipelineError(f"bad model.kwargs for simple_cnn: {err}") from err
    check_model_name(name)
    try:
        return timm.create_model(
            name,
            pretrained=pretrained,
            num_classes=num_classes,
            drop_rate=drop_rate,
            drop_path_rate=drop_path_rate or None,  # timm drops None, so models without drop path accept it
            **(kwargs or {}),
        )
    except (OSError, RuntimeError) as err:
        if pretrained:
            raise PipelineError(
                f"could not load pretrained weights for {name} (offline? use model.pretrained=false): {err}"
            ) from err
        raise
    except TypeError as err:
        raise PipelineError(f"bad model.kwargs for {name}: {err}") from err


def pretrained_data_config(name: str) -> dict[str, Any] | None:
    """How the model's pretrained weights expect images (timm's resolve_data_config): image_size, mean,
    std, interpolation, crop_pct. The torchvision classics use torchvision's ImageNet recipe."""
    if name in TORCHVISION_CLASSICS:
        mean, std = IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
        return {"image_size": 224, "mean": mean, "std": std, "interpolation": "bilinear", "crop_pct": 0.875}
    config = timm.models.get_pretrained_cfg(name)
    if config is None:
        return None
    data = timm.data.resolve_data_config(pretrained_cfg=config.to_dict())
    return {
        "image_size": data["input_size"][-1],
        "mean": tuple(data["mean"]),
        "std": tuple(data["std"]),
        "interpolation": data["interpolation"],
        "crop_pct": data["crop_pct"],
    }
