"""The pretrained network a fine-tuned model started from, kept for the unknown score: found where the model
has one and changed it, stored in the checkpoint, rebuilt without the original file, and exported with its
layers after the model's own."""

import logging
import shutil

import numpy as np
import onnxruntime as ort
import torch
from conftest import compose_cfg, make_image_folder

from pipeline.evaluation.unknown import fit_detector
from pipeline.models.factory import create_model_from_spec
from pipeline.models.module import load_classifier
from pipeline.models.reference import pretrained_reference, rebuilt_reference, stored_reference
from pipeline.models.trusted import split_network, trusted_network
from pipeline.onnx_io import OUTPUT_NAME, UNKNOWN_OUTPUT_NAME, export_onnx
from pipeline.runner import run

SIZE = 32


def weights_file(tmp_path) -> dict:
    """A model spec whose first weights come from a local file, as model.weights gives them."""
    torch.manual_seed(0)
    source = create_model_from_spec({"name": "test_efficientnet", "zero_init_head": False}, 2)
    path = tmp_path / "pretrained.pth"
    torch.save(source.state_dict(), path)
    return {"name": "test_efficientnet", "weights": str(path)}


def fine_tuned(spec: dict) -> torch.nn.Module:
    network = create_model_from_spec(spec, 2).eval()
    with torch.no_grad():
        network.conv_stem.weight.add_(0.1)  # a backbone layer moved by training
    return network


def test_a_model_trained_from_scratch_has_no_reference():
    network = create_model_from_spec({"name": "test_efficientnet"}, 2)
    assert pretrained_reference({"name": "test_efficientnet"}, 2, network) is None


def test_a_fine_tuned_model_s_reference_holds_the_weights_it_started_from(tmp_path):
    spec = weights_file(tmp_path)
    reference = pretrained_reference(spec, 2, fine_tuned(spec))
    assert reference is not None and not reference.training
    started = torch.load(spec["weights"], weights_only=True)
    assert torch.equal(reference.state_dict()["conv_stem.weight"], started["conv_stem.weight"])


def test_a_backbone_that_did_not_change_needs_no_reference(tmp_path):
    """A linear probe trains the head alone: its features are the pretrained ones already."""
    spec = weights_file(tmp_path)
    probed = create_model_from_spec(spec, 2)
    with torch.no_grad():
        probed.get_classifier().weight.add_(1.0)
    assert pretrained_reference(spec, 2, probed) is None


def test_pretrained_weights_out_of_reach_leave_the_model_alone_with_a_warning(tmp_path, caplog):
    spec = weights_file(tmp_path)
    network = fine_tuned(spec)
    (tmp_path / "pretrained.pth").unlink()
    with caplog.at_level(logging.WARNING, logger="pipeline.calibrate"):
        assert pretrained_reference(spec, 2, network) is None
    assert "reads the trained network alone" in caplog.text and "not found" in caplog.text


def test_the_stored_reference_is_rebuilt_without_its_weights_file(tmp_path):
    spec = weights_file(tmp_path)
    reference = pretrained_reference(spec, 2, fine_tuned(spec))
    stored = stored_reference(spec, 2, reference)
    (tmp_path / "pretrained.pth").unlink()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.inference_mode():
        assert torch.equal(rebuilt_reference(stored)(x), reference(x))


def test_the_exported_model_scores_the_reference_s_layers_after_its_own(tmp_path):
    spec = weights_file(tmp_path)
    network = fine_tuned(spec)
    reference = pretrained_reference(spec, 2, network)
    own, joint = split_network(network, SIZE), split_network(network, SIZE, reference)
    x = torch.randn(40, 3, SIZE, SIZE)
    with torch.inference_mode():
        own_layers, joint_layers = own(x)[1], joint(x)[1]
        reference_layers = split_network(reference, SIZE)(x)[1]
    assert len(joint_layers) == 2 * len(own_layers)
    assert all(torch.equal(a, b) for a, b in zip(joint_layers, [*own_layers, *reference_layers], strict=True))
    arrays = fit_detector("mahalanobis", [f.numpy() for f in joint_layers], np.arange(40) % 2, 2)
    unknown = {
        "method": "mahalanobis",
        "tensors": {name: torch.from_numpy(a) for name, a in arrays.items()},
        "reference": stored_reference(spec, 2, reference),
    }
    trusted = trusted_network(network, {"unknown": unknown}, SIZE).eval()
    outputs = (OUTPUT_NAME, UNKNOWN_OUTPUT_NAME)
    path = export_onnx(trusted, tmp_path / "m.onnx", SIZE, opset=18, outputs=outputs)
    found = ort.InferenceSession(str(path)).run(None, {"input": x[:5].numpy()})[1]
    with torch.inference_mode():
        assert np.allclose(found, trusted(x[:5])[1].numpy(), rtol=1e-3, atol=1e-4)


def test_a_fine_tuned_run_keeps_its_reference_and_exports_it_without_the_weights_file(tmp_path, empty_store):
    shutil.copytree(empty_store, tmp_path / "mlruns")
    spec = weights_file(tmp_path)
    root = make_image_folder(tmp_path / "images", per_class=12, size=SIZE)
    model = ["model=timm", "model.name=test_efficientnet", f"model.weights={spec['weights']}"]
    model.append("finetune=full")  # every layer moves from the first epoch
    small = ["data.image_size=32", "data.batch_size=8", "augment=none", "data.calib_fraction=0.3"]
    run(compose_cfg(tmp_path, "stages=[train,calibrate]", *model, *small, "trainer.max_epochs=1", root=root))
    ckpt = tmp_path / "out" / "checkpoints" / "best.ckpt"
    unknown = load_classifier(ckpt).trust["unknown"]
    assert unknown["reference"]["model"]["weights"] is None and len(unknown["tensors"]["scales"]) > 2
    (tmp_path / "pretrained.pth").unlink()
    export = ["stages=[export]", f"ckpt_path={ckpt}", "export.quantize=none", "export.latency_runs=1"]
    run(compose_cfg(tmp_path, *export, *small, root=root))
    x = torch.rand(3, 3, SIZE, SIZE)
    classifier = load_classifier(ckpt)
    with torch.inference_mode():
        expected = trusted_network(classifier.model, classifier.trust, SIZE).eval()(x)[1]
    found = ort.InferenceSession(str(tmp_path / "out" / "model.onnx")).run(None, {"input": x.numpy()})[1]
    assert np.allclose(found, expected.numpy(), rtol=1e-3, atol=1e-4)
