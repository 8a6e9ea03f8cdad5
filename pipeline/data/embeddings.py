"""Image embeddings from a pretrained backbone, cached by file content: what the data audit compares by.

Each image is decoded, resized and normalized the way the backbone's pretrained weights expect (timm's data
config), and the backbone's pooled features (its classifier removed) are its embedding, L2-normalized so a
dot product is a cosine similarity. Beside it, the channel means and spreads of the backbone's last stage,
L2-normalized too: the label-issue classifier reads both (more precise on three shared folders than the
pooled features alone, docs/design.md). The backbone runs in channels_last memory format (faster on CPU). Many
images are embedded in onnxruntime on the CPU, the backbone exported once per backbone and size (several
times faster than eager PyTorch), but the export itself takes seconds, so a job that eager finishes within
EAGER_BUDGET_S stays in PyTorch (figures: docs/design.md). Vectors are cached per backbone and image size,
keyed by the content fingerprint of the file (pipeline.data.integrity), so a re-run, a renamed or a copied
image costs nothing.
"""

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.data.images import ImageDataset
from pipeline.data.sources import Record
from pipeline.data.transforms import Preprocess, eval_transform
from pipeline.errors import PipelineError
from pipeline.models.factory import create_model_from_spec, pretrained_data_config
from pipeline.models.trusted import channel_statistics
from pipeline.onnx_io import INPUT_NAME, export_onnx, session
from pipeline.progress import Progress
from pipeline.schema import ExportConfig  # its default opset, for the audit backbone too

# export the backbone once PyTorch eager would need longer than this for the rest: about where the export's
# seconds and onnxruntime's faster images break even (docs/design.md)
EAGER_BUDGET_S = 15.0
# PyTorch batches shrink as images grow (eager_batch_size): 64 at 64 px, 49 at 128, 16 at 224; batches of
# 64 large images were slower an image on CPU (docs/design.md).
PIXELS_PER_BATCH = 16 * 224 * 224
ONNX_BATCH = 64  # onnxruntime gained nothing from smaller batches (docs/design.md)

log = logging.getLogger("pipeline.data")


LAYOUT = 2  # of what a cached row holds (2: the last stage's statistics beside the pooled features)
OUTPUTS = ("embedding", "last_stage")  # the exported backbone's outputs


@dataclass(frozen=True)
class Embedded:
    vectors: np.ndarray  # unit rows of the pooled features: what neighbours, outliers and duplicates compare
    last_stage: np.ndarray  # unit rows of the last stage's channel means and spreads (no columns: none)

    @property
    def label_features(self) -> np.ndarray:
        """What the label-issue classifier reads."""
        return np.hstack([self.vectors, self.last_stage])


class EmbeddingCache:
    """fingerprint -> (vector, last-stage row) for one backbone and image size, in one .npz file written
    atomically."""

    def __init__(self, folder: Path, spec: dict[str, Any], image_size: int):
        key = json.dumps({"model": spec, "image_size": image_size, "layout": LAYOUT}, sort_keys=True)
        stem = f"{spec['name']}-{image_size}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
        self.path = folder / f"embeddings-{stem}.npz"
        self.backbone = folder / f"backbone-{stem}.onnx"
        self.rows: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if self.path.is_file():
            with np.load(self.path) as saved:
                pairs = zip(saved["vectors"], saved["last_stage"], strict=True)
                self.rows = dict(zip(saved["keys"].tolist(), pairs, strict=True))

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted(self.rows)
        partial = self.path.with_suffix(f".{os.getpid()}.tmp.npz")
        vectors, last_stage = (np.stack([self.rows[k][i] for k in keys]) for i in (0, 1))
        np.savez(partial, keys=np.array(keys), vectors=vectors, last_stage=last_stage)
        partial.replace(self.path)


def backbone_preprocess(spec: dict[str, Any], image_size: int | None) -> Preprocess:
    """How the backbone's pretrained weights expect images, at `image_size` (None: their own size)."""
    data = pretrained_data_config(spec["name"])
    if data is None:
        raise PipelineError(f"{spec['name']} has no pretrained data config to embed images with")
    size = image_size or data["image_size"]
    return Preprocess(size, tuple(data["mean"]), tuple(data["std"]), data["interpolation"], data["crop_pct"])


class Backbone(torch.nn.Module):
    """images -> (pooled features, the last stage's channel means and spreads) of a timm network; the second
    has no columns for a network without forward_intermediates."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network
        self.staged = hasattr(network, "forward_intermediates")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.staged:
            pooled = self.network(x)
            return pooled, pooled[:, :0]
        final, (last,) = self.network.forward_intermediates(x, indices=1)
        pooled = self.network.forward_head(final, pre_logits=True).flatten(1)
        return pooled, channel_statistics(last)


def feature_extractor(spec: dict[str, Any]) -> torch.nn.Module:
    """The backbone with its weights and without its classifier (timm models), in channels_last (faster for
    its convolutions on CPU; the module docstring has the figures)."""
    model = create_model_from_spec({**spec, "zero_init_head": False}, num_classes=2)  # head replaced below
    if not hasattr(model, "reset_classifier"):
        raise PipelineError(f"{spec['name']} cannot drop its classifier to embed images: use a timm model")
    model.reset_classifier(0)
    return Backbone(model).eval().to(memory_format=torch.channels_last)


def embed(
    paths: list[str],
    fingerprints: list[str],
    spec: dict[str, Any],
    image_size: int | None,
    cache_folder: Path,
    batch_size: int | None = None,
    device: str = "cpu",
) -> Embedded:
    """One row per path (in order); `fingerprints[i]` identifies the content of `paths[i]`. `batch_size`:
    None for the sizes embed_files names; `device`: where PyTorch embeds (default: the CPU)."""
    preprocess = backbone_preprocess(spec, image_size)
    cache = EmbeddingCache(cache_folder, spec, preprocess.image_size)
    todo = sorted({f: p for p, f in zip(paths, fingerprints, strict=True) if f not in cache.rows}.items())
    if todo:
        vectors, last_stage = embed_files(
            [p for _, p in todo], spec, preprocess, cache.backbone, batch_size, torch.device(device)
        )
        cache.rows.update(zip([f for f, _ in todo], zip(vectors, last_stage, strict=True), strict=True))
        cache.save()
    return Embedded(*(np.stack([cache.rows[f][i] for f in fingerprints]) for i in (0, 1)))


def eager_batch_size(image_size: int) -> int:
    """Images a PyTorch batch holds at this size (PIXELS_PER_BATCH's share, 1-64)."""
    return max(1, min(64, round(PIXELS_PER_BATCH / image_size**2)))


def unit_rows(features: np.ndarray) -> np.ndarray:
    return features / np.linalg.norm(features, axis=1, keepdims=True).clip(1e-12)


def unit_pair(pooled: np.ndarray, last_stage: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return unit_rows(pooled), unit_rows(last_stage) if last_stage.shape[1] else last_stage


def embed_files(
    paths: list[str],
    spec: dict[str, Any],
    preprocess: Preprocess,
    backbone: Path,
    batch_size: int | None,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """Unit rows of the pooled features and of the last stage's statistics, one per path. On a GPU, in
    PyTorch. On the CPU: in onnxruntime when `backbone` was exported before, else in PyTorch until the rest
    would take it longer than EAGER_BUDGET_S (judged by the first batch, after a warm-up call), when the
    backbone is exported to `backbone`. `batch_size`: None for eager_batch_size in PyTorch and ONNX_BATCH in
    onnxruntime."""
    dataset = ImageDataset([Record(p, 0, "train") for p in paths], eval_transform(preprocess))
    progress = Progress("data", "embedded images", len(paths))
    rows: list[tuple[np.ndarray, np.ndarray]] = []
    if not (device.type == "cpu" and backbone.is_file()):
        rows = eager_rows(dataset, spec, preprocess.image_size, backbone, batch_size, device, progress)
    if progress.done < len(paths):
        exported = session(backbone)
        progress.new_phase()
        rest = torch.utils.data.Subset(dataset, range(progress.done, len(paths)))
        for x, _ in torch.utils.data.DataLoader(rest, batch_size=batch_size or ONNX_BATCH):
            rows.append(unit_pair(*exported.run(list(OUTPUTS), {INPUT_NAME: x.numpy()})))
            progress.advance(len(x))
    return np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows])


def eager_rows(dataset, spec, image_size: int, backbone: Path, batch_size: int | None, device, progress):
    """Rows from PyTorch, until on the CPU the rest would take longer than EAGER_BUDGET_S: then the backbone
    is exported to `backbone` and the rows so far returned."""
    model = feature_extractor(spec).to(device)
    rows: list[tuple[np.ndarray, np.ndarray]] = []
    for x, _ in torch.utils.data.DataLoader(dataset, batch_size=batch_size or eager_batch_size(image_size)):
        with torch.inference_mode():
            x = x.to(device)
            if not rows:
                model(x[:2])  # one-time costs of a first call (allocator, kernels) stay out of the timing
            started = time.perf_counter()
            rows.append(unit_pair(*(out.cpu().numpy() for out in model(x))))
        progress.advance(len(x))
        left = len(dataset) - progress.done
        if device.type == "cpu" and left and (time.perf_counter() - started) / len(x) * left > EAGER_BUDGET_S:
            log.info("exporting the audit backbone to ONNX for the %d images left: %s", left, backbone.name)
            backbone.parent.mkdir(parents=True, exist_ok=True)
            partial = backbone.with_suffix(f".{os.getpid()}.tmp.onnx")  # a stopped export leaves none
            export_onnx(model, partial, image_size, ExportConfig.opset, OUTPUTS).replace(backbone)
            break
    return rows
