"""Export stage: a self-describing ONNX file, checked against PyTorch, timed, optionally quantized to INT8,
and logged (and registered) as an MLflow model."""

import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from pipeline import run_story
from pipeline.context import Context
from pipeline.cpu_share import scoring_workers
from pipeline.data.datamodule import ImageDataModule
from pipeline.data.transforms import Preprocess
from pipeline.errors import PipelineError
from pipeline.export.benchmark import BATCH_SIZES, latency
from pipeline.export.compare import accuracy, agreement, collect_logits
from pipeline.export.metadata import describe, write_metadata
from pipeline.export.quantize import quantize_int8
from pipeline.export.served import log_image_classifier
from pipeline.models.module import load_classifier
from pipeline.models.trusted import trusted_network
from pipeline.onnx_io import (
    INPUT_NAME,
    OUTPUT_NAME,
    UNKNOWN_OUTPUT_NAME,
    export_onnx,
    onnx_runner,
    session,
    torch_runner,
)
from pipeline.stages.checkpoints import checkpoint_path
from pipeline.stages.index import ensure_index
from pipeline.tasks import MULTICLASS
from pipeline.tracking import Tracker

log = logging.getLogger("pipeline.export")
# float32 distances from an expanded square lose about 4 of their 7 digits; a threshold needs no more
UNKNOWN_PARITY_RTOL = 1e-3
HEADLINE = (  # repeated on the parent run
    "parity_max_abs_diff",
    "parity_top1_agreement",
    "onnx_acc",
    "onnx_size_mb",
    "latency_ms_onnx_b1",
    "throughput_onnx_b32",
    "int8_acc_change",
    "int8_speedup_b1",
)


def size_mb(path: Path) -> float:
    return path.stat().st_size / 2**20


def run(cfg: DictConfig, ctx: Context, tracker: Tracker) -> Context:
    ckpt = checkpoint_path(cfg, ctx, "export")
    classifier = load_classifier(ckpt)
    preprocess = Preprocess.from_dict(classifier.hparams.preprocess)
    datamodule = ImageDataModule(
        ensure_index(cfg, ctx),
        preprocess,
        [],
        cfg.data.batch_size,
        scoring_workers(cfg.data.num_workers, "cpu"),
    )
    network = trusted_network(classifier.model, classifier.trust, preprocess.image_size)
    if classifier.trust is None:
        log.warning(
            "exported uncalibrated, without prediction sets or unknown answer: the calibrate stage has not "
            "run on %s (stages=[calibrate,export] ckpt_path=<file> fits them)",
            ckpt,
        )
    files = write_models(cfg, ctx, tracker, classifier, network, preprocess, datamodule)
    runners = {"torch": torch_runner(network)}
    runners |= {name: onnx_runner(session(path)) for name, path in files.items()}
    metrics = checked_parity(cfg, ctx, tracker, network, runners, files, datamodule.eval_dataloader("val"))
    metrics |= latency(runners, preprocess.image_size, BATCH_SIZES, cfg.export.latency_runs)
    say_latency(metrics, list(runners))
    if "int8" in files:
        say_int8(metrics, files["int8"], cfg.export.quantize)
    record(tracker, ctx, metrics)
    tracker.log_params(
        {
            "export.opset": cfg.export.opset,
            "export.quantize": cfg.export.quantize,
            "export.checkpoint": str(ckpt),
        }
    )
    for path in files.values():
        tracker.log_artifact(path)
    example_image = Path(ensure_index(cfg, ctx).split("val")[0].path).read_bytes()
    register_as = cfg.export.model_name if cfg.export.register else None
    smoke = run_story.is_smoke()
    uri, version = tracker.log_model(
        lambda: log_image_classifier(files["onnx"], example_image, register_as, smoke)
    )
    registered = f", registered as {cfg.export.model_name} version {version}" if version else ""
    log.info("MLflow model %s%s", uri, registered)
    return ctx


def write_models(
    cfg: DictConfig, ctx: Context, tracker: Tracker, classifier, network, preprocess: Preprocess, datamodule
) -> dict:
    """model.onnx with its metadata, and model.int8.onnx calibrated on training images when quantizing."""
    outputs = (OUTPUT_NAME, UNKNOWN_OUTPUT_NAME) if network.scorer is not None else (OUTPUT_NAME,)
    onnx_path = export_onnx(
        network, ctx.output_dir / "model.onnx", preprocess.image_size, cfg.export.opset, outputs
    )
    fitted = fitted_metadata(classifier.trust or {})
    names, task = classifier.hparams.class_names, classifier.hparams.get("task", MULTICLASS)
    thresholds = (classifier.trust or {}).get("thresholds")
    document = describe(
        preprocess.to_dict(), names, INPUT_NAME, OUTPUT_NAME, cfg.data.max_pixels, **fitted,
        provenance=provenance(cfg, ctx, tracker), task=task, thresholds=thresholds,
    )  # fmt: skip
    write_metadata(onnx_path, document)
    ctx.onnx_path = onnx_path
    files = {"onnx": onnx_path}
    if cfg.export.quantize != "none":
        calibration = datamodule.sample_dataloader("train", cfg.export.calibration_images, cfg.seed)
        files["int8"] = quantize_int8(
            onnx_path,
            ctx.output_dir / "model.int8.onnx",
            cfg.export.quantize,
            (x.numpy() for x, _ in calibration),
        )
    return files


PROVENANCE_SCORES = ("test/acc", "test/f1_macro", "val/acc")  # what predict and serve quote of the run


def provenance(cfg: DictConfig, ctx: Context, tracker: Tracker) -> dict:
    """The run that made the model (pipeline.export.metadata.provenance_line says it)."""
    run_id = tracker.parent_id
    return {
        "run_id": run_id,
        "run_name": tracker.run_name(run_id) if run_id else None,
        "model": cfg.model.name,
        "data": run_story.data_name(cfg),
        "smoke": run_story.is_smoke(),
        "scores": {k: round(ctx.metrics[k], 4) for k in PROVENANCE_SCORES if k in ctx.metrics},
    }


def checked_parity(cfg: DictConfig, ctx: Context, tracker: Tracker, network, runners, files, val) -> dict:
    """parity_metrics, and the unknown scores' parity; a difference beyond the tolerance fails the stage
    (with the figures recorded)."""
    metrics = parity_metrics(runners, files, val)
    if network.scorer is not None:
        metrics["parity_unknown_max_rel_diff"] = unknown_parity(network, files["onnx"], val)
    if metrics["parity_max_abs_diff"] > cfg.export.parity_atol:
        record(tracker, ctx, metrics)
        raise PipelineError(
            f"ONNX output differs from PyTorch by {metrics['parity_max_abs_diff']:.2e} "
            f"(> export.parity_atol={cfg.export.parity_atol})"
        )
    if metrics.get("parity_unknown_max_rel_diff", 0.0) > UNKNOWN_PARITY_RTOL:
        record(tracker, ctx, metrics)
        raise PipelineError(
            f"the ONNX unknown score differs from PyTorch's by {metrics['parity_unknown_max_rel_diff']:.2e} "
            f"of the largest score (> {UNKNOWN_PARITY_RTOL})"
        )
    return metrics


def fitted_metadata(trust: dict) -> dict:
    """What the calibrate stage fitted, as the ONNX metadata states it (the unknown score's arrays are in the
    graph)."""
    unknown = trust.get("unknown")
    if unknown is not None:
        unknown = {key: unknown[key] for key in ("method", "accepted", "threshold")} | {
            "output": UNKNOWN_OUTPUT_NAME
        }
    return {"temperature": trust.get("temperature"), "conformal": trust.get("conformal"), "unknown": unknown}


def unknown_parity(network, onnx_path: Path, val) -> float:
    """The largest difference between the unknown scores of PyTorch and onnxruntime on a val batch, relative
    to the largest score (at least 1): distances run to the tens, where float32 keeps 7 digits."""
    x = next(iter(val))[0]
    with torch.inference_mode():
        expected = network(x)[1].numpy()
    found = session(onnx_path).run([UNKNOWN_OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
    return float(np.abs(expected - found).max() / max(1.0, float(np.abs(expected).max())))


def parity_metrics(runners: dict, files: dict[str, Path], val) -> dict[str, float]:
    """ONNX against PyTorch on the val images (and INT8 against ONNX), with accuracies and file sizes."""
    logits, labels = collect_logits(runners, val)
    several = labels.ndim == 2  # rows of 0/1: several labels an image
    parity = agreement(logits["torch"], logits["onnx"], several)
    metrics = {f"parity_{name}": value for name, value in parity.items()}
    metrics |= {"parity_images": len(labels), "onnx_acc": accuracy(logits["onnx"], labels)}
    metrics |= {f"{name}_size_mb": size_mb(path) for name, path in files.items()}
    if "int8" in files:
        metrics["int8_acc"] = accuracy(logits["int8"], labels)
        metrics["int8_acc_change"] = metrics["int8_acc"] - metrics["onnx_acc"]
        metrics["int8_top1_agreement"] = agreement(logits["onnx"], logits["int8"], several)["top1_agreement"]
    log.info(
        "%s (%.1f MB): max |logit diff| %.2e, top-1 agreement %.2f%%",
        files["onnx"],
        metrics["onnx_size_mb"],
        parity["max_abs_diff"],
        100 * parity["top1_agreement"],
    )
    return metrics


def record(tracker: Tracker, ctx: Context, metrics: dict[str, float]) -> None:
    named = {f"export/{k}": v for k, v in metrics.items()}
    ctx.metrics.update(named)
    tracker.log_metrics({k: v for k, v in named.items() if k.split("/")[1] in HEADLINE}, headline=True)
    tracker.log_metrics({k: v for k, v in named.items() if k.split("/")[1] not in HEADLINE})


def say_latency(metrics: dict[str, float], runners: list[str]) -> None:
    for n in BATCH_SIZES:
        shown = ", ".join(
            f"{name} {metrics[f'latency_ms_{name}_b{n}']:.2f} ms "
            f"({metrics[f'throughput_{name}_b{n}']:.0f} img/s)"
            for name in runners
        )
        log.info("latency at batch %d (median): %s", n, shown)


def say_int8(metrics: dict[str, float], path: Path, mode: str) -> None:
    """Adds each batch size's INT8 speed-up to `metrics` and says what quantizing cost and gained."""
    for n in BATCH_SIZES:
        metrics[f"int8_speedup_b{n}"] = metrics[f"latency_ms_onnx_b{n}"] / metrics[f"latency_ms_int8_b{n}"]
    log.info(
        f"{path} ({mode}, {metrics['int8_size_mb']:.1f} MB): val acc {metrics['int8_acc']:.4f} "
        f"(fp32 ONNX {metrics['onnx_acc']:.4f}, change {metrics['int8_acc_change']:+.4f}), speed-up "
        + ", ".join(f"x{metrics[f'int8_speedup_b{n}']:.2f} at batch {n}" for n in BATCH_SIZES)
    )
