"""The exported classifier as an MLflow pyfunc model that takes images, not tensors.

`mlflow models serve` on it answers POSTs of images (`make serve`): a `dataframe_split` or
`dataframe_records` JSON body with an `image` column of base64-encoded image files (the signature's `binary`
type: MLflow decodes the base64) or a `path` column of files on the serving machine. Each row comes back
with the answer scripts/predict.py gives (pipeline.export.inference.answer: label, probability, top-k with
`params: {"top_k": k}`, default 5, prediction set, unknown, note). Preprocessing is the ONNX file's own
metadata, through the same torch-free code as scripts/predict.py, so both give the same fields and numbers.
A row whose image cannot be read (not an image, too large, no such file) is answered with every field empty
and `error` naming the row and the reason, never a byte of the image or a server path; the other rows are
answered. A request that breaks the rules as a whole (no image column, too many rows, a path outside the
served folder, a bad top_k) gets a 4xx with one line.

Limits, read from the environment where the model is served (when it loads):
- PIPELINE_SERVE_ROOT: the folder whose files `path` rows may name; unset, `path` rows are refused (a model
  behind a port must not read its server's files for any client). Paths resolve inside it only.
- PIPELINE_SERVE_MAX_PIXELS (default: the model's run's data.max_pixels, 64,000,000 unless set): an
  image larger than that, or one whose resize to the model's input would be, is refused from its header.
- PIPELINE_SERVE_MAX_ROWS (default 64): images per request.

The inference and decode helpers (onnxruntime, PIL) load with the served model (`load_context`) and the
MLflow client with a store search, not when the export stage imports this module to log the model.
"""

import io
import os
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, PERMISSION_DENIED
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
from mlflow.types.schema import Array

from pipeline.errors import PipelineError

IMAGE, PATH = "image", "path"
DEFAULT_TOP_K = 5
ONNX_ARTIFACT = "onnx"
# what the model needs where it is served; versions as installed here
REQUIREMENTS = ("mlflow", "onnxruntime", "numpy", "pandas", "pillow", "opencv-python-headless")

SIGNATURE = ModelSignature(
    inputs=Schema(
        [ColSpec(DataType.binary, IMAGE, required=False), ColSpec(DataType.string, PATH, required=False)]
    ),
    outputs=Schema(
        [
            # pipeline.export.inference.answer says what each means; null where the model lacks that part
            ColSpec(DataType.string, "label", required=False),  # null for an unknown image
            ColSpec(DataType.double, "probability", required=False),
            ColSpec(Array(DataType.string), "top_labels"),
            ColSpec(Array(DataType.double), "top_probabilities"),
            ColSpec(Array(DataType.string), "prediction_set", required=False),
            ColSpec(DataType.boolean, "unknown", required=False),
            ColSpec(DataType.double, "unknown_score", required=False),
            ColSpec(Array(DataType.string), "labels", required=False),  # several labels an image
            ColSpec(Array(DataType.double), "probabilities", required=False),
            ColSpec(DataType.string, "note", required=False),
            ColSpec(DataType.string, "error", required=False),  # why a row's image got no answer
        ]
    ),
    params=ParamSchema([ParamSpec("top_k", DataType.long, DEFAULT_TOP_K)]),
)


class RequestRefused(MlflowException):
    """A 4xx whose message stays as written: MLflow's scoring server rewrites the message of an
    MlflowException from predict to quote the whole request (a client's bytes, in answers and logs)."""

    @property
    def message(self) -> str:
        return self._message

    @message.setter
    def message(self, value: str) -> None:
        if not hasattr(self, "_message"):
            self._message = value


def bad_request(message: str) -> MlflowException:
    return RequestRefused(message, error_code=INVALID_PARAMETER_VALUE)


@dataclass(frozen=True)
class Limits:
    root: Path | None  # the folder `path` rows may name; None: paths refused
    max_pixels: int
    max_rows: int

    @classmethod
    def from_env(cls, model_max_pixels: int) -> "Limits":
        root = os.environ.get("PIPELINE_SERVE_ROOT")
        return cls(
            Path(root).resolve() if root else None,
            int(os.environ.get("PIPELINE_SERVE_MAX_PIXELS", model_max_pixels)),
            int(os.environ.get("PIPELINE_SERVE_MAX_ROWS", 64)),
        )


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """Images in (bytes or paths), labels and probabilities out."""

    def load_context(self, context) -> None:
        from pipeline.export.inference import load_classifier

        self.model = load_classifier(Path(context.artifacts[ONNX_ARTIFACT]))
        self.limits = Limits.from_env(self.model.max_pixels)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from pipeline.export.inference import ImageRefused, answers_in_order

        if model_input.empty:
            raise bad_request(f"no {IMAGE!r} or {PATH!r} column: send one row per image, in either")
        if len(model_input) > self.limits.max_rows:
            raise bad_request(f"{len(model_input)} images in one request; at most {self.limits.max_rows}")
        k = top_k(params)
        spec = self.model.document["preprocess"]
        items: list[np.ndarray | str] = []  # each row's tensor, or why its image could not be read
        for row, source in enumerate(image_sources(model_input)):
            try:
                items.append(tensor(row, source, spec, self.limits))
            except ImageRefused as err:
                items.append(f"row {row}: {err.reason}")
        # object columns keep None as None: pandas' own dtypes would make it NaN, which JSON cannot carry
        return pd.DataFrame(answers_in_order(self.model, items, k), dtype=object)


def top_k(params: dict | None) -> int:
    value = (params or {}).get("top_k", DEFAULT_TOP_K)
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise bad_request(f"params.top_k must be a whole number >= 1, got {str(value)[:20]!r}")
    return int(value)


def tensor(row: int, source: bytes | str, spec: dict, limits: Limits) -> np.ndarray:
    """One row's image, decoded within the limits and preprocessed (ImageRefused says why not)."""
    from pipeline.export.inference import load_image

    readable = io.BytesIO(source) if isinstance(source, bytes) else allowed_file(row, source, limits.root)
    return load_image(readable, spec, limits.max_pixels)


def allowed_file(row: int, path: str, root: Path | None) -> Path:
    """`path` resolved inside the allowed folder (links followed, `..` included); the same refusal whether or
    not the file exists, so a client learns nothing of the server's files outside it."""
    from pipeline.export.inference import ImageRefused

    if root is None:
        raise RequestRefused(
            f"row {row}: this server reads no files; send the image's bytes in {IMAGE!r}",
            error_code=PERMISSION_DENIED,
        )
    try:
        resolved = (root / path).resolve()
    except (ValueError, OSError) as err:  # a NUL byte, a name too long for the filesystem, a link loop
        raise ImageRefused(f"{PATH!r} is not a usable file name ({type(err).__name__})") from err
    if not resolved.is_relative_to(root):
        raise RequestRefused(
            f"row {row}: {PATH!r} must name a file inside the served folder", PERMISSION_DENIED
        )
    if not resolved.is_file():
        raise ImageRefused("no such file in the served folder")
    return resolved


def image_sources(frame: pd.DataFrame) -> list[bytes | str]:
    """Each row's image: its `image` bytes, else its `path`; a row with neither is a bad request."""
    sources = []
    for row in range(len(frame)):
        data = frame[IMAGE].iloc[row] if IMAGE in frame else None
        path = frame[PATH].iloc[row] if PATH in frame else None
        if isinstance(data, bytes | bytearray) and data:
            sources.append(bytes(data))
        elif isinstance(path, str) and path:
            sources.append(path)
        else:
            raise bad_request(f"row {row}: give the image as base64 bytes in {IMAGE!r} or a file in {PATH!r}")
    return sources


def requirements() -> list[str]:
    return [f"{name}=={version(name)}" for name in REQUIREMENTS]


MODEL_NAME = "image_classifier"  # the logged model's name: what `make serve` looks for


SMOKE_SEARCH = 100  # the newest models looked through for one that no smoke run logged


def newest_model_uri(tracking_uri: str) -> str:
    """`models:/<model id>` of the newest image classifier logged in the store at `tracking_uri` by a real
    run, not a smoke run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    models = client.search_logged_models(
        experiments,
        filter_string=f"name = '{MODEL_NAME}'",
        order_by=[{"field_name": "creation_timestamp", "ascending": False}],
        max_results=SMOKE_SEARCH,
    )
    if not models:
        raise PipelineError(f"no {MODEL_NAME} model in {tracking_uri}: run the export stage (make train)")
    real = [m for m in models if m.tags.get(SMOKE_TAG) != "true"]
    if not real:
        raise PipelineError(
            f"only models of smoke runs in {tracking_uri}, which mean nothing: train one (make train), or "
            f"serve a smoke run's model on purpose with MODEL_URI=models:/{models[0].model_id}"
        )
    return f"models:/{real[0].model_id}"


SMOKE_TAG = "smoke"  # on a model a debug=smoke run logged: `make serve` passes it over by default


def log_image_classifier(onnx_path: Path, example_image: bytes, register_as: str | None, smoke: bool = False):
    """Log the pyfunc model in the active run, with the pipeline package as its code: the ModelInfo."""
    import pipeline

    return mlflow.pyfunc.log_model(
        name=MODEL_NAME,
        python_model=str(Path(__file__).with_name("served_model.py")),
        artifacts={ONNX_ARTIFACT: str(onnx_path)},
        code_paths=[str(Path(pipeline.__file__).parent)],
        signature=SIGNATURE,
        input_example=pd.DataFrame({IMAGE: [example_image]}),
        registered_model_name=register_as,
        pip_requirements=requirements(),
        tags={SMOKE_TAG: str(smoke).lower()},
    )
