"""The pretrained network a model was fine-tuned from, kept beside it for the unknown score: fine-tuning pulls
the features toward what tells the training classes apart, and images of other subjects then land near a class
(clothing photos near a fine-tuned model's classes), where the pretrained features still tell them apart
(docs/reports/trust.md). Its weights travel in the checkpoint's trust section, so validate and export rebuild
it without the file or hub it first came from."""

import logging
from typing import Any

import torch
from torch import nn

from pipeline.errors import PipelineError
from pipeline.models.factory import classifier_head, create_model_from_spec

log = logging.getLogger("pipeline.calibrate")


def pretrained_reference(spec: dict[str, Any], num_classes: int, trained: nn.Module) -> nn.Module | None:
    """The network `spec` (a model config as trained: pretrained or weights set) starts from, or None: trained
    from scratch, a backbone that did not change (a linear probe), or pretrained weights out of reach (offline
    hub: one warning)."""
    if not (spec.get("pretrained") or spec.get("weights")):
        return None
    try:
        reference = create_model_from_spec(spec, num_classes).eval()
    except PipelineError as err:
        log.warning("the unknown answer reads the trained network alone: %s", err)
        return None
    return None if same_backbone(trained, reference) else reference


def same_backbone(a: nn.Module, b: nn.Module) -> bool:
    """Every weight and statistic outside the classifier head equal."""
    head = next(name for name, module in a.named_modules() if module is classifier_head(a))
    mine, theirs = a.state_dict(), b.state_dict()
    return all(
        key in theirs and torch.equal(value.cpu(), theirs[key].cpu())
        for key, value in mine.items()
        if not key.startswith(f"{head}.")
    )


def stored_reference(spec: dict[str, Any], num_classes: int, reference: nn.Module) -> dict[str, Any]:
    """What the checkpoint keeps to rebuild the reference offline (`rebuilt_reference`)."""
    offline = {**spec, "pretrained": False, "weights": None}
    state = {key: value.detach().cpu().clone() for key, value in reference.state_dict().items()}
    return {"model": offline, "num_classes": num_classes, "state": state}


def rebuilt_reference(stored: dict[str, Any]) -> nn.Module:
    network = create_model_from_spec(stored["model"], int(stored["num_classes"]))
    network.load_state_dict(stored["state"])
    return network.eval()
