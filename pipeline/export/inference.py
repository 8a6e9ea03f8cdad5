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

from pipeline.data.decode import TooManyPixels, decode_rgb
from pipeline.data.resize import resize_and_crop, resized_shape
from pipeline.errors import PipelineError
from pipeline.export.metadata import read_metadata
from pipeline.limits import MAX_PIXELS

# what onnxruntime raises for a file that is not a loadable ONNX model (an empty one: InvalidArgument)
NOT_ONNX = (
    ort_errors.InvalidProtobuf,
    ort_errors.InvalidArgument,
    ort_errors.InvalidGraph,
    ort_errors.Fail,
    ort_errors.NotImplemented,
)


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

    def outputs(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Calibrated logits, and unknown scores where the model has an unknown answer."""
        unknown = self.document.get("unknown")
        names = [self.document["output"], *([unknown["output"]] if unknown else [])]
        found = self.session.run(names, {self.document["input"]: batch})
        return found[0], found[1] if unknown else None


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


class ImageRefused(ValueError):
    """An image that is not predicted. `reason` says why without quoting a path or a byte of it (what a
    server may send back); str() adds the decoder's own message (what a local user is shown)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def load_image(source, spec: dict, max_pixels: int) -> np.ndarray:
    """One image file (a path or a file object) as the model's CHW input. Refused, undecoded, when its
    pixels or those of its resize exceed max_pixels; any failure to decode it is this image's alone."""
    size, crop_pct = int(spec["image_size"]), spec["crop_pct"]
    try:
        rgb = decode_rgb(source, max_pixels, lambda h, w: resized_shape(h, w, size, crop_pct))
        return preprocess(rgb, spec)
    except (TooManyPixels, Image.DecompressionBombError) as err:  # PIL's own limit: its message gives sizes
        raise ImageRefused(f"image too large: {err}") from err
    except Exception as err:  # PIL, its EXIF reader and OpenCV raise many types; each means "not readable"
        detail = str(err).splitlines()[0] if str(err) else ""
        raise ImageRefused(f"not an image this model can read ({type(err).__name__})", detail) from err


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
    answer: dict  # pipeline.export.inference.answer's fields


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Each label's probability, for a model of several labels an image (stable at both ends)."""
    return np.exp(-np.logaddexp(0, -logits))


def answer(probs: np.ndarray, score: float | None, names: list[str], k: int, document: dict) -> dict:
    """One image's answer, whose fields agree (null where the model was not fitted with that part):
    - top_labels, top_probabilities: the k most likely classes, with calibrated probabilities;
    - unknown, unknown_score: the image is unlike the training images (its score above the threshold fitted on
      the calib split); then no class is an answer: label and probability are null, the set is empty;
    - label, probability: the most likely class and its probability, for an image that is not unknown;
    - prediction_set: every class whose probability reaches the conformal threshold, most likely first;
    - labels, probabilities: null here; a model of several labels an image answers with them (label_set);
    - note: why label is null or the set is empty, in words;
    - error: null here; why an image got no answer at all in `refused`."""
    conformal, fitted_unknown = document.get("conformal"), document.get("unknown")
    order = np.argsort(-probs, kind="stable")
    unknown = None if fitted_unknown is None else bool(score > fitted_unknown["threshold"])
    found = {
        "label": None if unknown else names[order[0]],
        "probability": None if unknown else round(float(probs[order[0]]), 6),
        "top_labels": [names[j] for j in order[:k]],
        "top_probabilities": [round(float(probs[j]), 6) for j in order[:k]],
        "prediction_set": None,
        "unknown": unknown,
        "unknown_score": None if score is None else round(float(score), 4),
        "labels": None,
        "probabilities": None,
        "note": None,
        "error": None,
    }
    if unknown:
        found["note"] = (
            f"unlike the training images (unknown score {score:.4g} above "
            f"{fitted_unknown['threshold']:.4g}): none of the model's classes is an answer; top_labels only "
            "rank them"
        )
    if conformal is not None:
        threshold = conformal["threshold"]
        found["prediction_set"] = [] if unknown else [names[j] for j in order if probs[j] >= threshold]
        if not unknown and not found["prediction_set"]:
            found["note"] = (
                f"no class reaches probability {threshold:.4g}, what a class needs to join the set for "
                f"{1 - conformal['alpha']:.0%} coverage: the model is unsure between its classes"
            )
    return found


def label_set(probs: np.ndarray, names: list[str], k: int, thresholds: list[float]) -> dict:
    """One image's answer from a model of several labels an image: `labels` every label whose probability
    reaches its threshold (the calibrate stage's, 0.5 without), most likely first, `probabilities` theirs;
    top_labels and top_probabilities the k most likely whatever their thresholds; label, probability, the
    prediction set and the unknown answer are for one label an image (null)."""
    order = np.argsort(-probs, kind="stable")
    chosen = [j for j in order if probs[j] >= thresholds[j]]
    return refused(None) | {
        "labels": [names[j] for j in chosen],
        "probabilities": [round(float(probs[j]), 6) for j in chosen],
        "top_labels": [names[j] for j in order[:k]],
        "top_probabilities": [round(float(probs[j]), 6) for j in order[:k]],
        "note": None if chosen else "no label reaches its threshold",
    }


def refused(reason: str | None) -> dict:
    """The answer's fields for an image that could not be read: all empty, and `error` says why."""
    return {
        "label": None,
        "probability": None,
        "top_labels": [],
        "top_probabilities": [],
        "prediction_set": None,
        "unknown": None,
        "unknown_score": None,
        "labels": None,
        "probabilities": None,
        "note": None,
        "error": reason,
    }


def answers(model: OnnxClassifier, batch: np.ndarray, k: int) -> list[dict]:
    """The answer of each image of an NCHW batch."""
    logits, scores = model.outputs(batch)
    if model.document.get("task") == "multilabel":
        names = model.class_names
        thresholds = model.document.get("thresholds") or [0.5] * len(names)
        return [label_set(p, names, k, thresholds) for p in sigmoid(logits.astype(np.float64))]
    probs = softmax(logits.astype(np.float64))
    return [
        answer(p, None if scores is None else float(s), model.class_names, k, model.document)
        for p, s in zip(probs, scores if scores is not None else [None] * len(probs), strict=True)
    ]


def answers_in_order(model: OnnxClassifier, items: list[np.ndarray | str], k: int) -> list[dict]:
    """An answer per item, in order: the tensors answered as one batch, a str (why that image could not be
    read) as the `refused` answer."""
    batch = [item for item in items if isinstance(item, np.ndarray)]
    found = iter(answers(model, np.stack(batch), k) if batch else [])
    return [next(found) if isinstance(item, np.ndarray) else refused(item) for item in items]


def answered(model: OnnxClassifier, pending: list[tuple[Path, np.ndarray | str]], k: int):
    """The pending images' results in their order: a Prediction per tensor, Skipped per reason."""
    found = answers_in_order(model, [item for _, item in pending], k)
    for (path, item), answer_of_item in zip(pending, found, strict=True):
        yield Skipped(path, item) if isinstance(item, str) else Prediction(path, answer_of_item)


def predict(
    model: OnnxClassifier, paths: list[Path], batch_size: int, k: int, max_pixels: int | None = None
) -> Iterator[Prediction | Skipped]:
    """A result per path, in input order, in batches (the first holds one image, so its line appears at
    once); an unreadable file, or one over max_pixels (default: the model's cap), is Skipped, with why."""
    spec = model.document["preprocess"]
    max_pixels = max_pixels or model.max_pixels
    pending: list[tuple[Path, np.ndarray | str]] = []
    limit = 1
    for path in paths:
        try:
            pending.append((path, load_image(path, spec, max_pixels)))
        except ImageRefused as err:
            pending.append((path, str(err)))
        if len(pending) == limit:
            yield from answered(model, pending, k)
            pending, limit = [], batch_size
    if pending:
        yield from answered(model, pending, k)
