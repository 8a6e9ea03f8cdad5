"""Validate stage: metrics and a confusion matrix for the checkpoint on val (and test when present)."""

from omegaconf import DictConfig

from pipeline import plots
from pipeline.context import Context
from pipeline.data.datamodule import ImageDataModule
from pipeline.data.transforms import Preprocess
from pipeline.errors import PipelineError
from pipeline.evaluation.metrics import classification_metrics, confusion_matrix, predict
from pipeline.models.module import load_classifier
from pipeline.stages._shared import checkpoint_path, ensure_index
from pipeline.tracking import Tracker


def run(cfg: DictConfig, ctx: Context, tracker: Tracker) -> Context:
    ckpt = checkpoint_path(cfg, ctx, "validate")
    classifier = load_classifier(ckpt)
    ctx.ckpt_path = ckpt
    class_names = list(classifier.hparams.class_names)
    index = ensure_index(cfg, ctx)
    if index.class_names != class_names:
        raise PipelineError(
            f"the checkpoint's {len(class_names)} classes {class_names[:5]}... do not match the data's "
            f"{len(index.class_names)} classes {index.class_names[:5]}..."
        )
    ctx.preprocess = Preprocess.from_dict(classifier.hparams.preprocess)
    datamodule = ImageDataModule(index, ctx.preprocess, [], cfg.data.batch_size, cfg.data.num_workers)
    tracker.log_params({"validate.checkpoint": str(ckpt)})

    for split in datamodule.eval_sets:
        logits, targets = predict(classifier, datamodule.eval_dataloader(split))
        metrics = {
            f"{split}/{k}": v for k, v in classification_metrics(logits, targets, len(class_names)).items()
        }
        tracker.log_metrics(metrics, headline=True)
        ctx.metrics.update(metrics)
        print(f"[validate] {split}: " + ", ".join(f"{k.split('/')[1]}={v:.4f}" for k, v in metrics.items()))
        matrix = confusion_matrix(logits, targets, len(class_names)).numpy()
        fig = plots.confusion_matrix(matrix, class_names, f"Confusion matrix ({split})")
        tracker.log_figure(fig, f"plots/confusion_matrix_{split}.png")
        plots.close(fig)
    return ctx
