"""Preprocessing shared by training, validation and export, and the albumentations pipelines built on it.

`Preprocess` is the single description of how an image becomes a model input; it is stored in checkpoints
(and later in the ONNX file) so that every consumer reproduces the same tensor.
"""

import warnings
from dataclasses import asdict, dataclass
from typing import Any

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

from pipeline.errors import PipelineError


@dataclass(frozen=True)
class Preprocess:
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocess":
        return cls(int(d["image_size"]), tuple(d["mean"]), tuple(d["std"]))


def resolve_preprocess(
    image_size: int,
    mean: list[float] | None,
    std: list[float] | None,
    model_mean_std: tuple[tuple[float, ...], tuple[float, ...]] | None,
    dataset_mean_std: tuple[tuple[float, ...], tuple[float, ...]],
) -> Preprocess:
    """Explicit mean/std win; else the pretrained model's; else the training set's own statistics."""
    if (mean is None) != (std is None):
        raise PipelineError("augment.mean and augment.std must be set together")
    if mean is not None:
        chosen = (tuple(mean), tuple(std))
    elif model_mean_std is not None:
        chosen = model_mean_std
    else:
        chosen = dataset_mean_std
    m, s = (tuple(float(v) for v in x) for x in chosen)
    if len(m) != 3 or len(s) != 3 or min(s) <= 0:
        raise PipelineError(f"normalization needs 3 means and 3 positive stds, got mean={m} std={s}")
    return Preprocess(int(image_size), m, s)


def _finish(pre: Preprocess) -> list[A.BasicTransform]:
    return [A.Normalize(mean=pre.mean, std=pre.std, max_pixel_value=255.0), ToTensorV2()]


def _resize(pre: Preprocess) -> A.BasicTransform:
    return A.Resize(pre.image_size, pre.image_size, interpolation=cv2.INTER_LINEAR)


def eval_transform(pre: Preprocess) -> A.Compose:
    return A.Compose([_resize(pre), *_finish(pre)])


def build_augmentations(specs: list[dict[str, Any]]) -> list[A.BasicTransform]:
    """Instantiate `{_target_: albumentations.X, ...}` dicts; only albumentations classes are allowed."""
    ops = []
    for spec in specs:
        spec = dict(spec)
        target = str(spec.pop("_target_", ""))
        module, _, name = target.rpartition(".")
        cls = getattr(A, name, None) if module == "albumentations" else None
        if cls is None:
            raise PipelineError(f"unknown augmentation {target!r}: expected albumentations.<Transform>")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", UserWarning)  # albumentations only warns on unknown args
                ops.append(cls(**spec))
        except (TypeError, ValueError, UserWarning) as err:
            raise PipelineError(f"bad arguments for {target}: {err}") from err
    return ops


def train_transform(pre: Preprocess, specs: list[dict[str, Any]]) -> A.Compose:
    return A.Compose([_resize(pre), *build_augmentations(specs), *_finish(pre)])
