from pathlib import Path

import numpy as np
import pytest
from conftest import CONF_DIR
from omegaconf import OmegaConf
from PIL import Image

from pipeline.data import resize
from pipeline.data.decode import decode_rgb
from pipeline.data.resize import resize_and_crop
from pipeline.data.transforms import (
    Preprocess,
    build_augmentations,
    eval_transform,
    resolve_preprocess,
    train_transform,
)
from pipeline.errors import PipelineError
from pipeline.schema import AugmentConfig

DATASET = ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
PRETRAINED = {
    "image_size": 224,
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "interpolation": "bicubic",
    "crop_pct": 0.875,
}
UNSET = {"mean": None, "std": None, "interpolation": None, "crop_pct": None}


def test_preprocess_precedence_config_then_pretrained_then_defaults():
    assert resolve_preprocess(32, UNSET, None, DATASET) == Preprocess(32, *DATASET, "bilinear", None)
    from_model = resolve_preprocess(None, UNSET, PRETRAINED, DATASET)
    assert from_model == Preprocess(224, PRETRAINED["mean"], PRETRAINED["std"], "bicubic", 0.875)
    mine = {"mean": [0.5] * 3, "std": [0.25] * 3, "interpolation": "area", "crop_pct": 1.0}
    assert resolve_preprocess(64, mine, PRETRAINED, DATASET) == Preprocess(
        64, (0.5,) * 3, (0.25,) * 3, "area", 1.0
    )
    assert Preprocess.from_dict(from_model.to_dict()) == from_model
    assert (
        Preprocess.from_dict({"image_size": 8, "mean": [0] * 3, "std": [1] * 3}).crop_pct is None
    )  # older files


@pytest.mark.parametrize(
    "image_size, overrides, pretrained, message",
    [
        (32, {**UNSET, "mean": [0.5] * 3}, None, "together"),
        (None, UNSET, None, "data.image_size is null"),
        (32, {**UNSET, "interpolation": "cubic"}, None, "interpolation 'cubic' is not one of"),
        (32, {**UNSET, "crop_pct": 1.5}, None, "crop_pct must be within"),
    ],
)
def test_bad_preprocess_settings_fail_clearly(image_size, overrides, pretrained, message):
    with pytest.raises(PipelineError, match=message):
        resolve_preprocess(image_size, overrides, pretrained, DATASET)


def framed(size: tuple[int, int], inner: tuple[int, int]) -> np.ndarray:
    """A red image with a green rectangle of `inner` (h, w) at its centre."""
    image = np.zeros((*size, 3), dtype=np.uint8)
    image[..., 0] = 255
    top, left = (size[0] - inner[0]) // 2, (size[1] - inner[1]) // 2
    image[top : top + inner[0], left : left + inner[1]] = (0, 255, 0)
    return image


def test_crop_keeps_the_centre_and_squeezing_keeps_everything():
    wide = framed((100, 200), (100, 100))  # red bands left and right of a green square
    cropped = resize_and_crop(wide, 50, "bilinear", 1.0)  # shortest side to 50, central 50 x 50
    assert cropped.shape == (50, 50, 3) and (cropped[..., 0] == 0).all()
    squeezed = resize_and_crop(wide, 50, "bilinear", None)
    assert squeezed.shape == (50, 50, 3) and squeezed[:, 0, 0].min() == 255  # the red bands are kept
    centre = framed((64, 64), (32, 32))
    zoomed = resize_and_crop(centre, 16, "nearest", 0.5)  # 64 -> 32, then the central 16: all green
    assert (zoomed[..., 0] == 0).all() and (zoomed[..., 1] == 255).all()
    assert resize_and_crop(centre, 16, "nearest", 1.0)[0, 0, 0] == 255


def test_eval_transform_resizes_and_normalizes():
    pre = Preprocess(16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    image = np.full((8, 10, 3), 255, dtype=np.uint8)
    x = eval_transform(pre)(image=image)["image"]
    assert tuple(x.shape) == (3, 16, 16)
    assert np.allclose(x.numpy(), (1.0 - 0.5) / 0.25)


def test_augmentations_come_from_albumentations_only():
    ops = build_augmentations([{"_target_": "albumentations.HorizontalFlip", "p": 1.0}])
    assert type(ops[0]).__name__ == "HorizontalFlip"
    with pytest.raises(PipelineError, match="unknown augmentation"):
        build_augmentations([{"_target_": "os.system"}])
    with pytest.raises(PipelineError, match="bad arguments"):
        build_augmentations([{"_target_": "albumentations.HorizontalFlip", "nonsense": 1}])


def test_train_transform_applies_configured_ops():
    pre = Preprocess(4, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    image[:, 0] = 255  # bright left column
    flipped = train_transform(pre, [{"_target_": "albumentations.HorizontalFlip", "p": 1.0}])(image=image)[
        "image"
    ]
    assert flipped[0, :, -1].min() == 1.0 and flipped[0, :, 0].max() == 0.0


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16"])
def test_any_colour_mode_loads_as_rgb(tmp_path, mode):
    path = tmp_path / f"img.{'tif' if mode in ('CMYK', 'I;16') else 'png'}"
    Image.new(mode, (5, 7)).save(path)
    assert decode_rgb(str(path)).shape == (7, 5, 3)


@pytest.mark.parametrize("preset", sorted(p.stem for p in (Path(CONF_DIR) / "augment").glob("*.yaml")))
def test_every_augment_preset_builds_and_changes_images_but_not_their_shape(preset):
    stated = OmegaConf.load(Path(CONF_DIR) / "augment" / f"{preset}.yaml")  # onto the schema defaults
    specs = OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(AugmentConfig), stated))["train"]
    transform = train_transform(Preprocess(32, (0.5,) * 3, (0.25,) * 3), specs)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    outputs = [transform(image=image)["image"] for _ in range(8)]
    assert all(tuple(x.shape) == (3, 32, 32) for x in outputs)
    changed = any(not np.allclose(outputs[0].numpy(), x.numpy()) for x in outputs[1:])
    assert changed == bool(specs)  # random augmentations vary; `none` is deterministic


def test_an_exif_rotated_photo_is_decoded_upright_for_training_and_prediction(tmp_path):
    from pipeline.export.inference import decode_rgb as predict_decode

    stored = np.zeros((20, 40, 3), dtype=np.uint8)  # landscape as the sensor stored it, bright left half
    stored[:, :20] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    upright = decode_rgb(str(tmp_path / "phone.jpg"))
    assert upright.shape == (40, 20, 3)  # portrait, as a viewer shows it
    assert upright[:18].mean() > 200 and upright[22:].mean() < 50  # the bright half now on top
    assert np.array_equal(predict_decode(tmp_path / "phone.jpg"), upright)


@pytest.mark.parametrize("shape", [(7, 30001, 3), (3999, 5, 3)], ids=["wide", "tall"])
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "area"])
def test_a_strip_is_cropped_before_it_is_resized_to_nearly_the_same_pixels(monkeypatch, shape, interpolation):
    """A strip's long side, scaled with its short side, would take gigabytes (2 x 1,000,000 px at a 36 px
    short side: 648 million pixels): only the part under the crop is resized, to the same pixels within a few
    levels (here the cap is lowered so that a small strip takes that path and can be compared)."""
    long_axis = int(shape[1] > shape[0])  # blocks of 50 px along it: a photo is smooth at the pixel scale
    blocks = [n // 50 + 1 if axis == long_axis else n for axis, n in enumerate(shape[:2])]
    strip = np.repeat(np.random.default_rng(0).integers(0, 256, (*blocks, 3), np.uint8), 50, axis=long_axis)
    strip = np.ascontiguousarray(strip[: shape[0], : shape[1]])
    whole = resize_and_crop(strip, 32, interpolation, 0.875)
    monkeypatch.setattr(resize, "MAX_PIXELS", 1000)
    middle = resize_and_crop(strip, 32, interpolation, 0.875)
    difference = np.abs(whole.astype(int) - middle.astype(int))
    assert middle.shape == (32, 32, 3) and difference.max() <= 4 and difference.mean() < 0.5


def test_a_two_by_a_million_strip_resizes_only_its_middle(monkeypatch):
    asked = []
    real_resize = resize.cv2.resize
    monkeypatch.setattr(
        resize.cv2, "resize", lambda src, dsize, **kw: asked.append(dsize) or real_resize(src, dsize, **kw)
    )
    strip = np.zeros((2, 1_000_000, 3), np.uint8)
    strip[:, 499_000:501_000] = 200  # the middle, which the crop keeps
    assert (resize_and_crop(strip, 32, "bilinear", 0.875) == 200).all()
    assert len(asked) == 1 and asked[0][0] * asked[0][1] < 10_000  # not 18,000,000 x 36
