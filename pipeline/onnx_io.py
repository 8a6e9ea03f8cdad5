"""ONNX export with a dynamic batch axis, checked by onnx.checker; PyTorch and onnxruntime as comparable
runners (numpy batch in, logits out). A building block of its own: the export stage writes models with it and
the data audit exports its embedding backbone with it, so neither package imports the other."""

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from pipeline.atomic import written_in_place

Runner = Callable[[np.ndarray], np.ndarray]  # a batch (NCHW float32) in, logits out
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
UNKNOWN_OUTPUT_NAME = "unknown_score"  # the second output of a model with an unknown answer


def export_onnx(
    model: torch.nn.Module, path: Path, image_size: int, opset: int, outputs: tuple[str, ...] = (OUTPUT_NAME,)
) -> Path:
    """Write a single self-contained .onnx file (weights inside) taking NCHW float32 input; `outputs` names
    what the model returns (a tensor, or a tuple of them)."""
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
            output_names=list(outputs),
            dynamic_shapes=({0: batch},),
            opset_version=opset,
            external_data=False,
            verbose=False,
        )
    with written_in_place(path) as partial:
        program.save(str(partial), external_data=False)
        onnx.checker.check_model(str(partial), full_check=True)
    return path


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def torch_runner(model: torch.nn.Module) -> Runner:
    """NCHW float32 batch -> logits (a model's first output) in PyTorch eager, on CPU, as numpy (for
    comparison and timing)."""
    model = model.eval().cpu()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = model(torch.from_numpy(x))
            return (out[0] if isinstance(out, tuple) else out).numpy()

    return run


def onnx_runner(sess: ort.InferenceSession) -> Runner:
    return lambda x: sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
