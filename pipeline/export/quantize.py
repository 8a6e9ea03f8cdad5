"""INT8 copies of an exported model (onnxruntime.quantization), metadata kept.

Two modes (their sizes, speed-ups and accuracy measured: docs/design.md):
- `static` (QDQ, per-channel signed weights, unsigned activations with ranges calibrated on training images
  through the eval transform): the mode that speeds up convolutions, onnxruntime's advice for CNNs.
- `dynamic` (activation ranges computed per batch at run time, no calibration): Conv becomes ConvInteger,
  which has no fast kernel on CPUs without VNNI, so the model is ~4x smaller but slower than fp32. Unsigned
  weights (QUInt8): signed ones saturate without VNNI (u8s8) and lost top-1 agreement.
Both needed one fix first: the dynamo exporter stores initializer shapes in value_info, the quantizer turns
Gemm into MatMul with a transposed weight, and its shape inference then rejects the stale shape. Dropping
value_info (shapes are re-inferred) fixes it. Only the nodes the logits need are quantized: the unknown
score's distances (normalized features through precision matrices, and the pretrained network that feeds
them) lost every distinction in INT8 (a static INT8 model flagged none of the planted images its fp32
original flagged all of) and stay in fp32.
"""

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from pipeline.atomic import written_in_place

DYNAMIC_OP_TYPES = ["Conv", "MatMul", "Gemm"]


class _QuietQuantizer(logging.Filter):
    """The quantizer logs a line per unquantized tensor and advises its pre-processing step on every call
    (to the root logger); what it says above that is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        hint = "pre-processing before quantization" in record.getMessage()
        return record.levelno >= logging.WARNING and not hint


@contextmanager
def _quiet() -> Iterator[None]:
    quiet = _QuietQuantizer()
    logging.getLogger().addFilter(quiet)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(quiet)


class _Batches(CalibrationDataReader):
    """Feeds calibration batches (NCHW float32) to the quantizer under the model's input name."""

    def __init__(self, input_name: str, batches: Iterable[np.ndarray]):
        self.feeds = ({input_name: np.ascontiguousarray(b, dtype=np.float32)} for b in batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)


def nodes_feeding(graph: onnx.GraphProto, output: str) -> list[str]:
    """The names of the nodes `output` is computed from."""
    producer = {name: node for node in graph.node for name in node.output}
    needed, wanted = set(), [output]
    while wanted:
        node = producer.get(wanted.pop())
        if node is not None and node.name not in needed:
            needed.add(node.name)
            wanted.extend(node.input)
    return sorted(needed)


def quantize_int8(src: Path, dst: Path, mode: str, calibration: Iterable[np.ndarray] | None = None) -> Path:
    """Write the INT8 model to dst with src's metadata_props. `static` needs `calibration`: batches of
    preprocessed training images, as the model sees them at inference."""
    if mode not in ("dynamic", "static"):
        raise ValueError(f"quantization mode {mode!r} is neither 'dynamic' nor 'static'")
    if mode == "static" and calibration is None:
        raise ValueError("static quantization needs calibration batches")
    model = onnx.load(str(src))
    del model.graph.value_info[:]
    logits_path = nodes_feeding(model.graph, model.graph.output[0].name)
    with written_in_place(dst) as partial, _quiet():
        if mode == "dynamic":
            quantize_dynamic(
                model,
                partial,
                op_types_to_quantize=DYNAMIC_OP_TYPES,
                weight_type=QuantType.QUInt8,
                nodes_to_quantize=logits_path,
            )
        else:
            quantize_static(
                model,
                partial,
                _Batches(model.graph.input[0].name, calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_quantize=logits_path,
            )
        quantized = onnx.load(str(partial))
        del quantized.metadata_props[:]
        quantized.metadata_props.extend(model.metadata_props)
        onnx.save(quantized, str(partial))
        onnx.checker.check_model(str(partial), full_check=True)
    return dst
