from pathlib import Path

import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.models.factory import create_model, pretrained_data_config


def test_simple_cnn_is_assembled_from_config():
    model = create_model(
        "simple_cnn", 5, drop_rate=0.1, kwargs={"channels": [8, 16], "convs_per_block": 1, "hidden": 12}
    )
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 5)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16]
    assert [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)] == [12, 5]


@pytest.mark.parametrize(
    "name, kwargs, pretrained, message",
    [
        ("simple_cnn", {"activation": "swishy"}, False, "bad model.kwargs"),
        ("simple_cnn", {"nonsense": 1}, False, "bad model.kwargs"),
        ("simple_cnn", {}, True, "no pretrained weights"),
        ("resnet_eighteen", {}, False, "unknown model"),
    ],
)
def test_bad_model_specs_fail_clearly(name, kwargs, pretrained, message):
    with pytest.raises(PipelineError, match=message):
        create_model(name, 3, pretrained=pretrained, kwargs=kwargs)


def test_timm_models_by_name_with_their_pretrained_data_config():
    assert create_model("resnet18", 7).eval()(torch.randn(1, 3, 32, 32)).shape == (1, 7)
    resnet = pretrained_data_config("resnet18")
    assert resnet["mean"] == (0.485, 0.456, 0.406) and resnet["std"] == (0.229, 0.224, 0.225)
    assert (resnet["image_size"], resnet["interpolation"], resnet["crop_pct"]) == (224, "bicubic", 0.95)
    lite0 = pretrained_data_config("tf_efficientnet_lite0")
    assert (lite0["mean"], lite0["interpolation"], lite0["crop_pct"]) == ((0.5,) * 3, "bicubic", 0.875)
    assert pretrained_data_config("alexnet")["crop_pct"] == 0.875
    assert pretrained_data_config("simple_cnn") is None


def test_head_starts_at_zero_unless_asked_otherwise():
    assert not create_model("resnet18", 7).fc.weight.any()
    assert create_model("resnet18", 7, zero_init_head=False).fc.weight.any()
    cnn = create_model("simple_cnn", 4, kwargs={"channels": [4]})
    assert not cnn.head[-1].weight.any() and cnn.features[0][0].weight.any()


def test_simple_cnn_conf_states_the_class_defaults():
    """conf/model/simple_cnn.yaml lists the block settings (Hydra overrides only keys it declares) with the
    class's own defaults, so that one of them cannot change alone."""
    import inspect

    from conftest import CONF_DIR
    from omegaconf import OmegaConf

    from pipeline.models.simple_cnn import SimpleCNN

    declared = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / "model" / "simple_cnn.yaml").kwargs)
    defaults = {
        name: list(p.default) if isinstance(p.default, tuple) else p.default
        for name, p in inspect.signature(SimpleCNN).parameters.items()
        if name in declared
    }
    assert declared == defaults
