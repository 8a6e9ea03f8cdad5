"""Export stage: ONNX file, checked with onnx.checker and compared with PyTorch through onnxruntime."""

from omegaconf import DictConfig

from pipeline.context import Context
from pipeline.data.datamodule import ImageDataModule
from pipeline.data.transforms import Preprocess
from pipeline.errors import PipelineError
from pipeline.export.onnx import export_onnx, parity
from pipeline.models.module import load_classifier
from pipeline.stages._shared import checkpoint_path, ensure_index
from pipeline.tracking import Tracker


def run(cfg: DictConfig, ctx: Context, tracker: Tracker) -> Context:
    ckpt = checkpoint_path(cfg, ctx, "export")
    classifier = load_classifier(ckpt)
    preprocess = Preprocess.from_dict(classifier.hparams.preprocess)
    onnx_path = export_onnx(
        classifier.model, ctx.output_dir / "model.onnx", preprocess.image_size, cfg.export.opset
    )
    ctx.onnx_path = onnx_path

    index = ensure_index(cfg, ctx)
    datamodule = ImageDataModule(index, preprocess, [], cfg.data.batch_size, cfg.data.num_workers)
    result = parity(classifier.model, onnx_path, datamodule.eval_dataloader("val"))
    metrics = {f"export/{k}": v for k, v in result.items()}
    metrics["export/onnx_size_mb"] = onnx_path.stat().st_size / 2**20
    tracker.log_metrics(metrics, headline=True)
    tracker.log_params({"export.opset": cfg.export.opset, "export.checkpoint": str(ckpt)})
    tracker.log_artifact(onnx_path)
    ctx.metrics.update(metrics)
    print(
        f"[export] {onnx_path} ({metrics['export/onnx_size_mb']:.1f} MB): max |logit diff| "
        f"{result['parity_max_abs_diff']:.2e}, top-1 agreement {result['parity_top1_agreement']:.2%}"
    )
    if result["parity_max_abs_diff"] > cfg.export.parity_atol:
        raise PipelineError(
            f"ONNX output differs from PyTorch by {result['parity_max_abs_diff']:.2e} "
            f"(> export.parity_atol={cfg.export.parity_atol})"
        )
    return ctx
