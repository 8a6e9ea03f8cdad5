"""The exported classifier as an MLflow pyfunc model that takes images, not tensors.

`mlflow models serve` on it answers POSTs of images (`make serve`): a `dataframe_split` or
`dataframe_records` JSON body with an `image` column of base64-encoded image files (the signature's `binary`
type: MLflow decodes the base64) or a `path` column of files on the serving machine. Each row comes back
with its top-1 label and probability and its top-k (`params: {"top_k": k}`, default 5). Preprocessing is the
ONNX file's own metadata, through the same torch-free code as scripts/predict.py, so both give the same
numbers. A row that is not an image fails the request with a 400 and the reason (MLflow's scoring server
turns an MlflowException into its HTTP status); the server goes on serving.
"""

import io
from importlib.metadata import version
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
from mlflow.types.schema import Array

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
            ColSpec(DataType.string, "label"),
            ColSpec(DataType.double, "probability"),
            ColSpec(Array(DataType.string), "top_labels"),
            ColSpec(Array(DataType.double), "top_probabilities"),
        ]
    ),
    params=ParamSchema([ParamSpec("top_k", DataType.long, DEFAULT_TOP_K)]),
)


def bad_request(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """Images in (bytes or paths), labels and probabilities out."""

    def load_context(self, context) -> None:
        from pipeline.export.inference import load_classifier

        self.model = load_classifier(Path(context.artifacts[ONNX_ARTIFACT]))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from pipeline.export.inference import UNREADABLE, preprocess, ranked

        if model_input.empty:
            raise bad_request(f"no {IMAGE!r} or {PATH!r} column: send one row per image, in either")
        k = int((params or {}).get("top_k") or DEFAULT_TOP_K)
        spec = self.model.document["preprocess"]
        tensors = []
        for row, source in enumerate(image_sources(model_input)):
            try:
                tensors.append(preprocess(decode(source), spec))
            except UNREADABLE as err:  # bytes: PIL's message names the in-memory buffer, not the image
                reason = err if isinstance(source, str) else type(err).__name__
                raise bad_request(f"row {row}: not an image this model can read ({reason})") from err
        top = ranked(self.model, np.stack(tensors), k)
        return pd.DataFrame(
            {
                "label": [t[0][0] for t in top],
                "probability": [t[0][1] for t in top],
                "top_labels": [[name for name, _ in t] for t in top],
                "top_probabilities": [[p for _, p in t] for t in top],
            }
        )


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


def decode(source: bytes | str) -> np.ndarray:
    from pipeline.data.decode import decode_rgb

    if isinstance(source, str) and not Path(source).is_file():
        raise FileNotFoundError(f"no file {source} on the server")
    return decode_rgb(io.BytesIO(source) if isinstance(source, bytes) else source)


def requirements() -> list[str]:
    return [f"{name}=={version(name)}" for name in REQUIREMENTS]


def log_image_classifier(onnx_path: Path, example_image: bytes, register_as: str | None):
    """Log the pyfunc model in the active run, with the pipeline package as its code: the ModelInfo."""
    import pipeline

    return mlflow.pyfunc.log_model(
        name="image_classifier",
        python_model=str(Path(__file__).with_name("served_model.py")),
        artifacts={ONNX_ARTIFACT: str(onnx_path)},
        code_paths=[str(Path(pipeline.__file__).parent)],
        signature=SIGNATURE,
        input_example=pd.DataFrame({IMAGE: [example_image]}),
        registered_model_name=register_as,
        pip_requirements=requirements(),
    )
