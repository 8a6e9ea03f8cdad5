"""What validation scores, whatever file it came from: a checkpoint or an exported ONNX model.

A Scorer carries the class names and preprocessing the model was trained with and turns an NCHW float32
batch into calibrated logits and unknown scores (where the calibrate stage fitted them), as the exported model
answers, so the validate stage runs one code path for every source.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.data.transforms import Preprocess
from pipeline.errors import PipelineError
from pipeline.export.inference import NOT_ONNX
from pipeline.export.metadata import describe, read_metadata
from pipeline.limits import MAX_PIXELS
from pipeline.models.module import load_classifier
from pipeline.models.trusted import trusted_network
from pipeline.onnx_io import session
from pipeline.progress import Progress


@dataclass(frozen=True)
class Scorer:
    kind: str  # "checkpoint" or "onnx" (onnxruntime on the CPU)
    path: Path
    class_names: list[str]
    preprocess: Preprocess
    # a batch -> (calibrated logits, unknown scores or None), on the CPU
    outputs: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]
    trust: dict  # what the calibrate stage fitted (pipeline.stages.calibrate); empty: nothing
    train_fingerprints: frozenset[str] | None = None  # None: unknown (an ONNX file, an older checkpoint)
    model: torch.nn.Module | None = None  # the PyTorch model, where there is one (for Grad-CAM)

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

    @property
    def calibrated(self) -> bool:
        """The calibrate stage fitted something for it (it may have kept no temperature)."""
        return any(
            self.trust.get(name) is not None for name in ("images", "temperature", "conformal", "unknown")
        )

    def _fitted(self, name: str):
        return self.trust.get(name)


def checkpoint_scorer(path: Path, device: torch.device) -> Scorer:
    """Scored in PyTorch on `device` as the exported model would score (pipeline.models.trusted)."""
    classifier = load_classifier(path).to(device)
    preprocess = Preprocess.from_dict(classifier.hparams.preprocess)
    network = trusted_network(classifier.model, classifier.trust, preprocess.image_size).to(device)

    def outputs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        found = network(x.to(device))
        logits, scores = found if isinstance(found, tuple) else (found, None)
        return logits.float().cpu(), None if scores is None else scores.float().cpu()

    return Scorer(
        "checkpoint",
        path,
        list(classifier.hparams.class_names),
        preprocess,
        outputs,
        classifier.trust or {},
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

    unknown = document.get("unknown")
    names = [document["output"], *([unknown["output"]] if unknown else [])]

    def outputs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        found = [torch.from_numpy(a) for a in sess.run(names, {document["input"]: x.numpy()})]
        return found[0], found[1] if unknown else None

    trust = {name: document.get(name) for name in ("temperature", "conformal", "unknown")}
    return Scorer("onnx", path, list(document["class_names"]), preprocess, outputs, trust)


@dataclass(frozen=True)
class Scored:
    logits: torch.Tensor  # calibrated where the model is
    targets: torch.Tensor
    tta_logits: (
        torch.Tensor | None
    )  # with test-time augmentation: the mean logits of each image and its mirror
    unknown_scores: torch.Tensor | None  # where the model has an unknown answer


@torch.inference_mode()
def predict(scorer: Scorer, loader, tta: bool) -> Scored:
    progress = Progress("validate", "scored images", len(getattr(loader, "dataset", ())))  # a list: silent
    logits, targets, averaged, scores = [], [], [], []
    for x, y in loader:
        progress.advance(len(y))
        plain, score = scorer.outputs(x)
        logits.append(plain)
        targets.append(y)
        scores += [] if score is None else [score]
        if tta:
            averaged.append((plain + scorer.outputs(x.flip(3))[0]) / 2)
    return Scored(
        torch.cat(logits),
        torch.cat(targets),
        torch.cat(averaged) if tta else None,
        torch.cat(scores) if scores else None,
    )
