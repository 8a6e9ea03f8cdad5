"""The self-description stored in every exported ONNX file: preprocessing, class names, tensor names.

Readers need only onnxruntime (no torch, no albumentations), so `scripts/predict.py` can rebuild the exact
eval transform from the file alone. One JSON document under the metadata key `pipeline`.

onnx is imported only to write the metadata: readers (scripts/predict.py) need onnxruntime alone.
"""

import json
from pathlib import Path
from typing import Any

from pipeline.atomic import written_in_place
from pipeline.errors import PipelineError

METADATA_KEY = "pipeline"
FORMAT_VERSION = 2  # 2: the unknown answer is a second output, not a function of the logits


def describe(
    preprocess: dict[str, Any],
    class_names: list[str],
    input_name: str,
    output_name: str,
    max_pixels: int,
    temperature: float | None = None,
    conformal: dict[str, Any] | None = None,
    unknown: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
    task: str = "multiclass",
    thresholds: list[float] | None = None,
) -> dict:
    """The metadata document; `preprocess` is `Preprocess.to_dict()`; `max_pixels` the run's data.max_pixels,
    the largest image predict and serve decode for this model; what the calibrate stage fitted: `temperature`
    the one the graph's logits are already divided by, for readers that want the network's own; `conformal`
    the prediction sets' {"alpha", "threshold", "images", "approximate"}; `unknown` {"method", "accepted",
    "threshold", "output"}: an input whose score (the graph's output named "output") is above the threshold
    is answered as unknown; `provenance` the run that made it ({"run_id", "run_name", "model", "data",
    "smoke", "scores"}), which predict and serve name; `task` multiclass (softmax over the classes) or
    multilabel (a sigmoid a label, each label answered at or above its `thresholds` entry)."""
    return {
        "format_version": FORMAT_VERSION,
        "task": task,
        "thresholds": thresholds,
        "provenance": provenance,
        "max_pixels": int(max_pixels),
        "temperature": temperature,
        "conformal": conformal,
        "unknown": unknown,
        "input": input_name,
        "output": output_name,
        "class_names": list(class_names),
        "preprocess": {
            "image_size": int(preprocess["image_size"]),
            # decode with PIL, convert("RGB"); crop_pct null: resize to image_size x image_size; else resize
            # the shortest side to floor(image_size / crop_pct), keeping the aspect ratio, and take the
            # central image_size x image_size (pipeline.data.resize); then (pixel / 255 - mean) / std per
            # channel, float32, NCHW
            "interpolation": preprocess.get("interpolation", "bilinear"),
            "crop_pct": preprocess.get("crop_pct"),
            "mean": [float(v) for v in preprocess["mean"]],
            "std": [float(v) for v in preprocess["std"]],
            "max_pixel_value": 255.0,
            "channel_order": "RGB",
            "layout": "NCHW",
            "dtype": "float32",
        },
    }


# what predict and serve read from a document; a file edited by hand, or cut short, may lack them
REQUIRED = ("input", "output", "class_names", "preprocess")
REQUIRED_PREPROCESS = ("image_size", "interpolation", "crop_pct", "mean", "std", "max_pixel_value")


def write_metadata(onnx_path: Path, document: dict) -> None:
    """Store the document in the ONNX file's metadata_props; the file is replaced whole or not at all."""
    import onnx

    model = onnx.load(str(onnx_path))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(document)
    with written_in_place(onnx_path) as partial:
        onnx.save(model, str(partial))


def read_metadata(custom_metadata_map: dict[str, str], source: str) -> dict:
    """The document from `session.get_modelmeta().custom_metadata_map`; `source` names the file in errors."""
    raw = custom_metadata_map.get(METADATA_KEY)
    if raw is None:
        raise PipelineError(f"{source} has no '{METADATA_KEY}' metadata: export it with this pipeline")
    document = json.loads(raw)
    version = document.get("format_version") if isinstance(document, dict) else None
    if not isinstance(version, int):
        raise PipelineError(
            f"{source} has '{METADATA_KEY}' metadata that this pipeline did not write (no format_version): "
            "export the model with this pipeline"
        )
    if version != FORMAT_VERSION:
        age = "newer" if version > FORMAT_VERSION else "older"
        raise PipelineError(
            f"{source} was exported by a {age} version of this pipeline (metadata format {version}; this one "
            f"reads {FORMAT_VERSION}): export it again or use the matching version"
        )
    missing = [key for key in REQUIRED if key not in document]
    if "preprocess" in document:
        missing += [f"preprocess.{key}" for key in REQUIRED_PREPROCESS if key not in document["preprocess"]]
    if missing:
        raise PipelineError(
            f"{source}: its '{METADATA_KEY}' metadata lacks {', '.join(missing)}: export it again"
        )
    return document


def provenance_line(document: dict) -> str:
    """Which run made the model, in words: `run <name> (<id>), <model> on <data>, test acc 0.981`; a smoke
    run's model is said to be one."""
    made = document.get("provenance")
    if not made:
        return "made by a run this file does not name (exported before runs were recorded in it)"
    scores = ", ".join(f"{name.replace('/', ' ')} {value:.4g}" for name, value in made["scores"].items())
    line = f"run {made['run_name']} ({made['run_id']}), {made['model']} on {made['data']}"
    line += f", {scores}" if scores else ""
    return line + (
        ": a smoke run, which checks the plumbing; its answers mean nothing" if made["smoke"] else ""
    )
