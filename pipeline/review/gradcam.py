"""Grad-CAM beside a suspect, when the reviewed run trained a model: where the model looks for the class it
predicts, so a reviewer sees whether the image's content or something beside it drives the answer. torch and
the checkpoint are loaded on the first request only."""

import io
from functools import cached_property
from pathlib import Path

import numpy as np


class Explainer:
    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = checkpoint

    @cached_property
    def scorer(self):
        import torch

        from pipeline.evaluation.scorers import checkpoint_scorer

        return checkpoint_scorer(self.checkpoint, torch.device("cpu"))

    def png(self, path: str) -> tuple[bytes, str]:
        """The Grad-CAM overlay of the image at `path` for the model's predicted class, as PNG bytes, and that
        class with its probability."""
        import torch
        from PIL import Image

        from pipeline.data.images import ImageDataset
        from pipeline.data.sources import Record
        from pipeline.data.transforms import eval_transform
        from pipeline.evaluation import explain

        scorer = self.scorer
        x = ImageDataset([Record(path, 0, "test")], eval_transform(scorer.preprocess))[0][0][None]
        with torch.inference_mode():
            probabilities = scorer.outputs(x)[0].softmax(1)[0]
        predicted = int(probabilities.argmax())
        image = explain.overlays(scorer.model, scorer.preprocess, x, [predicted])[0]
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(image)).save(buffer, format="PNG")
        return buffer.getvalue(), f"{scorer.class_names[predicted]} {float(probabilities[predicted]):.2f}"
