"""What validation scores, whatever file it came from: a checkpoint or an exported ONNX model.

A Scorer carries the class names and preprocessing the model was trained with and turns an NCHW float32
batch into logits, so the validate stage runs one code path for every source.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.data.decode import MAX_PIXELS
from pipeline.data.transforms import Preprocess
from pipeline.errors import PipelineError
from pipeline.export.inference import NOT_ONNX
from pipeline.export.metadata import describe, read_metadata
from pipeline.models.module import load_classifier
from pipeline.onnx_io import session
from pipeline.progress import Progress


@dataclass(frozen=True)
class Scorer:
    kind: str  # "checkpoint" or "onnx" (onnxruntime on the CPU)
    path: Path
    class_names: list[str]
    preprocess: Preprocess
    logits: Callable[[torch.Tensor], torch.Tensor]
    train_fingerprints: frozenset[str] | None = None  # None: unknown (an ONNX file, an older checkpoint)
    model: torch.nn.Module | None = None  # the PyTorch model, where there is one (for Grad-CAM)
    file_metadata: dict | None = None  # an ONNX file's metadata document

    @property
    def source(self) -> str:
        return f"{self.kind} {self.path}"

    @property
    def temperature(self) -> float | None:
        """What its logits are divided by (pipeline.evaluation.calibration); None: not calibrated."""
        return self._fitted("temperature")

    @property
    def conformal(self) -> dict | None:
        """{"alpha", "threshold"} of its prediction sets (pipeline.evaluation.conformal); None: none."""
        return self._fitted("conformal")

    @property
    def unknown(self) -> dict | None:
        """{"accepted", "threshold"} of its unknown answer (pipeline.evaluation.unknown); None: none."""
        return self._fitted("unknown")

    def _fitted(self, name: str):
        return (self.model.hparams if self.model is not None else self.file_metadata or {}).get(name)


def checkpoint_scorer(path: Path, device: torch.device) -> Scorer:
    """Scored in PyTorch on `device`; logits come back on the CPU."""
    classifier = load_classifier(path).to(device)
    return Scorer(
        "checkpoint",
        path,
        list(classifier.hparams.class_names),
        Preprocess.from_dict(classifier.hparams.preprocess),
        lambda x: classifier(x.to(device)).float().cpu(),
        frozenset(known) if (known := classifier.hparams.get("train_fingerprints")) is not None else None,
        classifier,
    )


def onnx_scorer(path: Path) -> Scorer:
    """Scored in onnxruntime; class names and preprocessing come from the file's own metadata."""
    if not path.is_file():
        raise PipelineError(f"ONNX file not found: {path}")
    try:
        sess = session(path)
    except NOT_ONNX as err:
        raise PipelineError(
            f"{path} is not an ONNX model onnxruntime can load ({type(err).__name__})"
        ) from err
    document = read_metadata(sess.get_modelmeta().custom_metadata_map, str(path))
    preprocess = Preprocess.from_dict(document["preprocess"])
    expected = describe(
        preprocess.to_dict(), document["class_names"], document["input"], document["output"], MAX_PIXELS
    )
    if document["preprocess"] != expected["preprocess"]:
        raise PipelineError(
            f"{path}: preprocessing {document['preprocess']} is not this pipeline's eval transform"
        )

    def logits(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(sess.run([document["output"]], {document["input"]: x.numpy()})[0])

    return Scorer("onnx", path, list(document["class_names"]), preprocess, logits, file_metadata=document)


@torch.inference_mode()
def predict(scorer: Scorer, loader, tta: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Logits, targets and, with test-time augmentation, the mean logits of each image and its mirror."""
    logits, targets, averaged = [], [], []
    progress = Progress("validate", "scored images", len(getattr(loader, "dataset", ())))  # a list: silent
    for x, y in loader:
        progress.advance(len(y))
        plain = scorer.logits(x)
        logits.append(plain)
        targets.append(y)
        if tta:
            averaged.append((plain + scorer.logits(x.flip(3))) / 2)
    return torch.cat(logits), torch.cat(targets), torch.cat(averaged) if tta else None
