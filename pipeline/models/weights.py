"""Load local weights (a state_dict .pth/.pt/.ckpt or a .safetensors file) into a model, offline.

Keys are matched by name first (after stripping `model.`/`module.` prefixes); when the names follow another
project's convention but the tensors line up one to one in order with equal shapes (EfficientNet-PyTorch
files against timm's tf_efficientnet_*, for example), they are mapped by position. A classifier whose size
differs from the model's (1000 ImageNet classes against yours) keeps its fresh init.

safetensors and importlib.resources load only for the files that need them.
"""

from pathlib import Path

import torch

from pipeline.errors import PipelineError, first_line

PREFIXES = ("model.", "module.")


def resolve_weights_path(spec: str) -> Path:
    """A file path, or `pkg:<package>/<file inside it>` for weights shipped in an installed package."""
    if not spec.startswith("pkg:"):
        return Path(spec).expanduser()
    package, _, inner = spec[4:].partition("/")
    try:
        import importlib.resources

        return Path(str(importlib.resources.files(package) / inner))
    except ModuleNotFoundError as err:
        raise PipelineError(f"model.weights={spec}: package {package!r} is not installed") from err


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise PipelineError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch and safetensors raise many types for a file they cannot read
        raise PipelineError(
            f"model.weights: cannot read {path} as PyTorch or safetensors weights "
            f"({type(err).__name__}: {first_line(err)})"
        ) from err
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PipelineError(f"{path} holds no state_dict of tensors")
    for prefix in PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def map_to_model(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename `state` onto `target`'s keys: by name when the names agree, else by position."""
    if set(target) <= set(state) or len(set(target) & set(state)) > len(target) // 2:
        return {k: v for k, v in state.items() if k in target}
    if len(state) == len(target):
        pairs = list(zip(state.items(), target.items(), strict=True))
        mismatched = [i for i, ((_, a), (_, b)) in enumerate(pairs) if a.shape != b.shape]
        if all(i >= len(pairs) - 2 for i in mismatched):  # at most the classifier's weight and bias differ
            return {tk: v for (_, v), (tk, _) in pairs}
    raise PipelineError(
        f"weights do not fit this model: {len(state)} tensors, {len(set(target) & set(state))} of the "
        f"model's {len(target)} names match and the shapes do not line up; is it another architecture?"
    )


def load_weights(model: torch.nn.Module, spec: str) -> dict[str, int]:
    """Load what fits; returns how many tensors were loaded and how many (the head) were left fresh."""
    path = resolve_weights_path(spec)
    target = model.state_dict()
    mapped = map_to_model(read_state_dict(path), target)
    fitting = {k: v for k, v in mapped.items() if v.shape == target[k].shape}
    fresh = sorted(set(target) - set(fitting))
    if len(fresh) > 2:
        raise PipelineError(f"weights {path} leave {len(fresh)} tensors unset, e.g. {fresh[:3]}")
    model.load_state_dict(fitting, strict=False)
    return {"loaded": len(fitting), "fresh": len(fresh)}
