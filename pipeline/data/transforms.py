"""Preprocessing shared by training, validation and export, and the albumentations pipelines built on it.

`Preprocess` is the single description of how an image becomes a model input; it is stored in checkpoints
(and later in the ONNX file) so that every consumer reproduces the same tensor.
"""

import warnings
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import albumentations as A
from albumentations.pytorch import ToTensorV2

from pipeline.data.resize import INTERPOLATIONS, resize_and_crop
from pipeline.errors import PipelineError


@dataclass(frozen=True)
class Preprocess:
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"  # a key of pipeline.data.resize.INTERPOLATIONS
    crop_pct: float | None = None  # None: squeeze to a square; else resize and center-crop (timm's eval)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocess":
        crop_pct = d.get("crop_pct")
        return cls(
            int(d["image_size"]),
            tuple(d["mean"]),
            tuple(d["std"]),
            d.get("interpolation", "bilinear"),
            None if crop_pct is None else float(crop_pct),
        )


def resolve_preprocess(
    image_size: int | None,
    overrides: dict[str, Any],
    pretrained: dict[str, Any] | None,
    dataset_mean_std: tuple[tuple[float, ...], tuple[float, ...]],
) -> Preprocess:
    """Each setting from the config when set (`overrides`: mean, std, interpolation, crop_pct; size from
    data.image_size), else from the pretrained model's data config (timm's resolve_data_config), else the
    defaults: the training set's own mean and std, bilinear, the whole image squeezed to a square."""
    if (overrides.get("mean") is None) != (overrides.get("std") is None):
        raise PipelineError("augment.mean and augment.std must be set together")
    defaults = {"mean": dataset_mean_std[0], "std": dataset_mean_std[1], "interpolation": "bilinear"}
    chosen = {**defaults, "crop_pct": None, **(pretrained or {})}
    chosen |= {key: value for key, value in overrides.items() if value is not None}
    if image_size is None:
        if pretrained is None:
            raise PipelineError("data.image_size is null but the model has no pretrained input size: set it")
        image_size = pretrained["image_size"]
    m, s = (tuple(float(v) for v in chosen[key]) for key in ("mean", "std"))
    if len(m) != 3 or len(s) != 3 or min(s) <= 0:
        raise PipelineError(f"normalization needs 3 means and 3 positive stds, got mean={m} std={s}")
    if chosen["interpolation"] not in INTERPOLATIONS:  # a pretrained config may name one resize lacks
        raise PipelineError(
            f"interpolation {chosen['interpolation']!r} is not one of {sorted(INTERPOLATIONS)}"
        )
    crop_pct = chosen["crop_pct"]
    if crop_pct is not None and not 0 < crop_pct <= 1:
        raise PipelineError(f"crop_pct must be within (0, 1], got {crop_pct}")
    return Preprocess(int(image_size), m, s, chosen["interpolation"], crop_pct)


def _finish(pre: Preprocess) -> list[A.BasicTransform]:
    return [A.Normalize(mean=pre.mean, std=pre.std, max_pixel_value=255.0), ToTensorV2()]


def _resize_image(img, pre: Preprocess, **_) -> Any:
    return resize_and_crop(img, pre.image_size, pre.interpolation, pre.crop_pct)


def _resize(pre: Preprocess) -> A.BasicTransform:
    """The shared numpy/OpenCV step (also what predict runs), as an albumentations transform."""
    return A.Lambda(image=partial(_resize_image, pre=pre), p=1.0)


def eval_transform(pre: Preprocess, resized: bool = False) -> A.Compose:
    """`resized`: the images arrive already resized (pipeline.data.resized_cache)."""
    return A.Compose([*([] if resized else [_resize(pre)]), *_finish(pre)])


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


def train_transform(pre: Preprocess, specs: list[dict[str, Any]], resized: bool = False) -> A.Compose:
    return A.Compose([*([] if resized else [_resize(pre)]), *build_augmentations(specs), *_finish(pre)])
