"""What a parent run tells in the MLflow UI: a name that says what ran, the command typed, a description
(MLflow's `mlflow.note.content` tag, markdown) and the dataset splits as run inputs.

mlflow.data, pandas and Hydra's runtime state are imported where used: the runner imports this module
before it knows whether this process tracks anything (DDP workers, config errors).
"""

import hashlib
import shlex
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipeline.progress import duration
from pipeline.recipe import finetune_recipe, starts_pretrained
from pipeline.summary import with_interval

HEADLINE_METRICS = (
    "test/acc",
    "val/acc",
    "test/bal_acc",
    "test/f1_macro",
    "export/onnx_acc",
    "data/num_images",
)


def data_name(cfg: DictConfig) -> str:
    """The folder's (or manifest's) name; `digits` for the built-in set."""
    return "digits" if cfg.data.root is None else Path(str(cfg.data.root)).expanduser().resolve().stem


def run_name(cfg: DictConfig) -> str:
    """`tracking.run_name`, else `<model>-<data>-<MMDD>-<HHMM>`, e.g. resnet18-digits-1124-1903, with the
    job's number in a multirun (`-#3`), whose jobs often start in the same minute; `smoke-` in front for a
    debug=smoke run, which checks the plumbing and makes no model worth using."""
    if cfg.tracking.run_name:
        return str(cfg.tracking.run_name)
    smoke = "smoke-" if is_smoke() else ""
    return f"{smoke}{cfg.model.name}-{data_name(cfg)}-{time.strftime('%m%d-%H%M')}{multirun_job()}"


def hydra_choice(group: str) -> str | None:
    """The option the command line or the defaults chose for a config group; None outside Hydra's app."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.choices.get(group) if HydraConfig.initialized() else None


def is_smoke() -> bool:
    return hydra_choice("debug") == "smoke"


def multirun_job() -> str:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return ""
    return f"-#{HydraConfig.get().job.num}"


def command_line() -> str:
    """The command as typed: `python -m pipeline` and this job's overrides (a multirun job's own values)."""
    from hydra.core.hydra_config import HydraConfig

    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else sys.argv[1:]
    program = Path(sys.argv[0])
    program = f"python -m {program.parent.name}" if program.name == "__main__.py" else program.name
    return " ".join([program, *map(shlex.quote, overrides)])


def _recipe(cfg: DictConfig, plan=None) -> str:
    """The recipe the train stage runs: its plan once resolved (pipeline.plan), else the config with
    `finetune.strategy=auto` resolved as the plan resolves it."""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    if plan:
        strategy, epochs, size = plan.finetune["strategy"], plan.max_epochs, plan.preprocess.image_size
    else:
        finetune = OmegaConf.to_container(cfg.finetune, resolve=True)
        strategy = finetune_recipe(finetune, model)["strategy"]
        epochs, size = cfg.trainer.max_epochs, cfg.data.image_size
    how = f"{strategy} fine-tuning" if starts_pretrained(model) else "trained from random init"
    return (
        f"{how}, {cfg.optimizer.name} lr {cfg.optimizer.lr}, "
        f"{epochs} epochs, {size} px, batch {cfg.data.batch_size}"
    )


def description(
    cfg: DictConfig,
    metrics: dict[str, float] | None = None,
    timings: dict[str, float] | None = None,
    plan=None,
) -> str:
    """Markdown for the run page: data, model, recipe (`plan`: as the stages resolved it) and stages; then
    headline metrics and the time each stage took, once the run has them."""
    lines = [
        f"**Data** {data_name(cfg)} (`{cfg.data.root or 'built-in digits'}`) · **Model** {cfg.model.name}"
        f"{' (pretrained)' if cfg.model.pretrained else ''} · **Recipe** {_recipe(cfg, plan)}",
        "",
        f"`{command_line()}`",
    ]
    shown = {k: metrics[k] for k in HEADLINE_METRICS if metrics and k in metrics}
    if shown:
        lines += ["", " · ".join(f"**{k}** {with_interval(metrics, k, '.4g')}" for k in shown)]
    if timings:
        lines += ["", "| stage | time |", "|---|---|"]
        lines += [f"| {stage} | {duration(seconds)} |" for stage, seconds in timings.items()]
        lines += [f"| total | {duration(sum(timings.values()))} |"]
    return "\n".join(lines)


def split_datasets(index, infos: list, name: str, decisions: str | None = None) -> dict:
    """One mlflow.data dataset per split (the UI's Datasets column): its files and labels as a table, the
    folder as its source, and a digest of the images' contents, so two runs on the same images show the same
    digest whatever their paths; with a review's `decisions` (their digest) applied, a new version."""
    import mlflow.data
    import pandas as pd
    from mlflow.data.sources import LocalArtifactDatasetSource  # named: MLflow's guess from a path warns

    from pipeline.data.integrity import fingerprint
    from pipeline.data.sources import SPLITS, label_text

    content = {i.path: fingerprint(i) for i in infos}
    source = LocalArtifactDatasetSource(_text(index.root))
    datasets = {}
    for split in SPLITS:
        records = index.split(split)
        if records:
            paths = [_text(r.path) for r in records]
            labels = [label_text(r, index.class_names) for r in records]  # several: joined by ";"
            frame = pd.DataFrame({"path": paths, "label": labels})
            version = [f"decisions {decisions}"] if decisions else []
            digest = content_digest([content[r.path] for r in records] + version)
            datasets[split] = mlflow.data.from_pandas(
                frame, source=source, name=f"{name}-{split}", digest=digest, targets="label"
            )
    return datasets


def _text(path: str) -> str:
    """A path as valid text: bytes of a name that is not UTF-8 become \\udcXX escapes, as in index.csv."""
    return path.encode("utf-8", "backslashreplace").decode()


def content_digest(fingerprints: list[str]) -> str:
    """A short digest of a split's image contents (the inspection fingerprints, in any order)."""
    return hashlib.sha256("\n".join(sorted(fingerprints)).encode()).hexdigest()[:16]
