from pathlib import Path

import numpy as np
import pytest
from conftest import CONF_DIR
from omegaconf import OmegaConf
from PIL import Image

from pipeline.data.images import load_rgb
from pipeline.data.transforms import (
    Preprocess,
    build_augmentations,
    eval_transform,
    resolve_preprocess,
    train_transform,
)
from pipeline.errors import PipelineError

DATASET = ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
MODEL = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_normalization_precedence():
    assert resolve_preprocess(32, [0.5] * 3, [0.25] * 3, MODEL, DATASET).mean == (0.5, 0.5, 0.5)
    assert resolve_preprocess(32, None, None, MODEL, DATASET).std == MODEL[1]
    assert resolve_preprocess(32, None, None, None, DATASET).mean == DATASET[0]
    with pytest.raises(PipelineError, match="together"):
        resolve_preprocess(32, [0.5] * 3, None, None, DATASET)


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
    assert load_rgb(str(path)).shape == (7, 5, 3)


@pytest.mark.parametrize("preset", sorted(p.stem for p in (Path(CONF_DIR) / "augment").glob("*.yaml")))
def test_every_augment_preset_builds_and_changes_images_but_not_their_shape(preset):
    specs = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / "augment" / f"{preset}.yaml"))["train"]
    transform = train_transform(Preprocess(32, (0.5,) * 3, (0.25,) * 3), specs)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    outputs = [transform(image=image)["image"] for _ in range(8)]
    assert all(tuple(x.shape) == (3, 32, 32) for x in outputs)
    changed = any(not np.allclose(outputs[0].numpy(), x.numpy()) for x in outputs[1:])
    assert changed == bool(specs)  # random augmentations vary; `none` is deterministic
