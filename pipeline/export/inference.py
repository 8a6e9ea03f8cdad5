"""Prediction from an exported ONNX file alone: numpy, PIL, OpenCV and onnxruntime, never torch.

Everything the model needs (preprocessing, class names, tensor names) is read from the file's own
metadata, so `scripts/predict.py` starts in well under a second and gives the tensors validation scored.
"""

import glob
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors
from PIL import Image

from pipeline.data.decode import MAX_PIXELS, decode_rgb
from pipeline.data.resize import resize_and_crop
from pipeline.errors import PipelineError
from pipeline.export.metadata import read_metadata

# what onnxruntime raises for a file that is not a loadable ONNX model (an empty one: InvalidArgument)
NOT_ONNX = (
    ort_errors.InvalidProtobuf,
    ort_errors.InvalidArgument,
    ort_errors.InvalidGraph,
    ort_errors.Fail,
    ort_errors.NotImplemented,
)
# what PIL raises for a file it cannot decode (truncated, not an image, a decompression bomb, ...)
UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


@dataclass(frozen=True)
class OnnxClassifier:
    session: ort.InferenceSession
    document: dict  # the metadata document (pipeline.export.metadata.describe)

    @property
    def class_names(self) -> list[str]:
        return list(self.document["class_names"])

    @property
    def max_pixels(self) -> int:
        """The largest image to decode for it: its run's data.max_pixels (files exported before it was
        recorded: the default)."""
        return int(self.document.get("max_pixels", MAX_PIXELS))

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.document["output"]], {self.document["input"]: batch})[0]


def load_classifier(path: Path) -> OnnxClassifier:
    """The session and its metadata; one PipelineError line for a missing, foreign or unlabelled file."""
    if path.is_dir():
        inside = sorted(path.rglob("*.onnx"))
        hint = f", e.g. MODEL={inside[0]}" if inside else " (it holds none)"
        raise PipelineError(f"{path} is a folder: give the .onnx file itself{hint}")
    if not path.is_file():
        raise PipelineError(f"model file not found: {path}")
    options = ort.SessionOptions()
    options.log_severity_level = 4  # our one-line error says it; onnxruntime's own log would repeat it
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except NOT_ONNX as err:
        kind = type(err).__name__
        raise PipelineError(f"{path} is not an ONNX model onnxruntime can load ({kind})") from err
    try:
        document = read_metadata(session.get_modelmeta().custom_metadata_map, str(path))
    except json.JSONDecodeError as err:
        raise PipelineError(f"{path}: its pipeline metadata is not valid JSON ({err})") from err
    return OnnxClassifier(session, document)


def preprocess(rgb: np.ndarray, spec: dict) -> np.ndarray:
    """CHW float32, bit for bit the eval transform (resize_and_crop, albumentations Normalize, ToTensorV2).

    albumentations normalizes uint8 through a per-channel float32 lookup table,
    (pixel - mean * max) * (1 / (std * max)); the same arithmetic here gives the same floats.
    """
    rgb = resize_and_crop(rgb, int(spec["image_size"]), spec["interpolation"], spec["crop_pct"])
    scale = np.float32(spec["max_pixel_value"])
    mean = np.asarray(spec["mean"], dtype=np.float32) * scale
    denominator = np.reciprocal(np.asarray(spec["std"], dtype=np.float32) * scale)
    lut = (np.arange(256, dtype=np.float32)[None, :] - mean[:, None]) * denominator[:, None]
    return lut[np.arange(3), rgb].transpose(2, 0, 1)


def image_suffixes() -> set[str]:
    return {suffix.lower() for suffix in Image.registered_extensions()}


def expand_inputs(items: Iterable[str]) -> list[Path]:
    """Files as given; folders searched recursively for image files; anything else read as a glob.
    An item that names no file is an error: a mistyped path should not pass as an empty result."""
    suffixes = image_suffixes()
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_file():
            found = [path]
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
        else:
            found = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
        if not found:
            raise PipelineError(f"no image files found at {item}")
        paths += found
    return paths


@dataclass(frozen=True)
class Prediction:
    path: Path
    top_k: list[tuple[str, float]]  # (label, probability), most likely first
    prediction_set: list[str] | None = None  # the conformal set, when the model has one (most likely first)
    unknown: bool | None = None  # unlike the training images, when the model has an unknown threshold
    unknown_score: float | None = None  # its energy score (pipeline.evaluation.unknown): higher, less known


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str


def energy(logits: np.ndarray) -> np.ndarray:
    """Per image: -logsumexp of its logits, the unknown score (pipeline.evaluation.unknown); higher means less
    like anything the model was trained on."""
    top = logits.max(axis=1)
    return -(top + np.log(np.exp(logits - top[:, None]).sum(axis=1)))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class Answers:
    """A batch's answers, one entry per image; sets and unknown flags only for a model fitted with them."""

    top: list[list[tuple[str, float]]]  # the k most likely (label, probability), most likely first
    sets: list[list[str]] | None  # every label of probability >= the conformal threshold (may be none)
    unknown: list[bool] | None  # energy score above the model's unknown threshold
    unknown_scores: list[float] | None


def answers(model: OnnxClassifier, batch: np.ndarray, k: int) -> Answers:
    logits = model.logits(batch).astype(np.float64)
    probs = softmax(logits)
    order = np.argsort(-probs, axis=1, kind="stable")
    names = model.class_names
    rows = list(zip(probs, order, strict=True))
    top = [[(names[j], float(p[j])) for j in ranks[:k]] for p, ranks in rows]
    conformal, unknown = model.document.get("conformal"), model.document.get("unknown")
    sets = None
    if conformal is not None:
        threshold = conformal["threshold"]
        sets = [[names[j] for j in ranks if p[j] >= threshold] for p, ranks in rows]
    if unknown is None:
        return Answers(top, sets, None, None)
    scores = [float(s) for s in energy(logits)]
    return Answers(top, sets, [s > unknown["threshold"] for s in scores], scores)


def top_k(model: OnnxClassifier, paths: list[Path], batch: list[np.ndarray], k: int) -> list[Prediction]:
    found = answers(model, np.stack(batch), k)
    nothing = [None] * len(paths)
    columns = (found.top, found.sets or nothing, found.unknown or nothing, found.unknown_scores or nothing)
    return [Prediction(path, *row) for path, *row in zip(paths, *columns, strict=True)]


def predict(
    model: OnnxClassifier, paths: list[Path], batch_size: int, k: int, max_pixels: int | None = None
) -> Iterator[Prediction | Skipped]:
    """Predictions in input order, in batches (the first holds one image, so its line appears at once);
    an unreadable file, or one over max_pixels (default: the model's cap), is reported as soon as read."""
    spec = model.document["preprocess"]
    max_pixels = max_pixels or model.max_pixels
    pending: list[Path] = []
    tensors: list[np.ndarray] = []
    limit = 1
    for path in paths:
        try:
            tensors.append(preprocess(decode_rgb(path, max_pixels), spec))
        except UNREADABLE as err:
            yield Skipped(path, str(err) or type(err).__name__)
            continue
        pending.append(path)
        if len(pending) == limit:
            yield from top_k(model, pending, tensors, k)
            pending, tensors, limit = [], [], batch_size
    if pending:
        yield from top_k(model, pending, tensors, k)
