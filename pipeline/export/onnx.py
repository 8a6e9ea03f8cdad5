"""ONNX export with a dynamic batch axis, checked by onnx.checker and against PyTorch in onnxruntime."""

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def export_onnx(model: torch.nn.Module, path: Path, image_size: int, opset: int) -> Path:
    """Write a single self-contained .onnx file (weights inside) taking NCHW float32 input."""
    model = model.eval().cpu()
    example = torch.randn(2, 3, image_size, image_size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter chatter; the checker and parity test below are the verdict
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            opset_version=opset,
            external_data=False,
            verbose=False,
        )
    program.save(str(path), external_data=False)
    onnx.checker.check_model(str(path), full_check=True)
    return path


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def parity(model: torch.nn.Module, onnx_path: Path, loader) -> dict[str, float]:
    """Max abs logit difference and top-1 agreement between PyTorch and onnxruntime over a loader."""
    sess = session(onnx_path)
    max_diff, agree, total = 0.0, 0, 0
    model = model.eval().cpu()
    with torch.no_grad():
        for x, _ in loader:
            expected = model(x).numpy()
            got = sess.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
            max_diff = max(max_diff, float(np.abs(expected - got).max()))
            agree += int((expected.argmax(1) == got.argmax(1)).sum())
            total += len(x)
    return {"parity_max_abs_diff": max_diff, "parity_top1_agreement": agree / total, "parity_images": total}
