"""Value checks run before any MLflow run starts, so a bad value costs seconds, not a data pass: the bounds
stated on the schema's fields (pipeline.schema.bounded), names other libraries define, and combinations.
Choices are `Enum` fields of the schema and fail when the config is composed. Each failure is one
PipelineError line naming the key."""

import difflib
import pickle
from pathlib import Path

from omegaconf import DictConfig

from pipeline.data.decisions import load as load_decisions
from pipeline.errors import PipelineError
from pipeline.recipe import finetune_recipe
from pipeline.schema import VAL_METRICS, bounds

STAGE_PREFIXES = ("data/", "sanity/", "train/", "val/", "test/", "export/")  # how every logged metric starts
# lightning.Trainer arguments the train stage sets itself
PIPELINE_OWNED = ("callbacks", "plugins", "logger", "default_root_dir", "enable_model_summary")


def check_config(cfg: DictConfig) -> None:
    for key, rule in bounds():
        value = _get(cfg, key)
        if value is not None and not rule.holds(value):  # None where the schema allows it
            raise PipelineError(f"{key} must be {rule.text}, got {value!r}")
    if cfg.data.val_fraction + cfg.data.test_fraction >= 1:
        raise PipelineError("data.val_fraction + data.test_fraction must leave images for training")
    check_named_settings(cfg)
    check_objective(cfg.objective, "train" in cfg.stages)
    if "train" in cfg.stages:
        check_training(cfg)
    if "validate" in cfg.stages:  # found before training, not after it
        for folder in cfg.validate.ood_roots:
            if not Path(folder).expanduser().is_dir():
                raise PipelineError(f"validate.ood_roots: {folder} is not a folder of images")
    if cfg.data.decisions is not None and Path(cfg.data.decisions).expanduser().is_file():
        load_decisions(Path(cfg.data.decisions).expanduser())  # a bad file: one line before any run starts
    if "sanity" in cfg.stages or "train" in cfg.stages:
        from pipeline.models.factory import check_model_name

        check_model_name(cfg.model.name)


def check_named_settings(cfg: DictConfig) -> None:
    """Settings whose shape the schema's types cannot state."""
    if not str(cfg.tracking.experiment).strip():
        raise PipelineError("tracking.experiment must name an experiment, got an empty name")
    for key in ("augment.mean", "augment.std"):
        value = _get(cfg, key)
        if value is not None and len(value) != 3:
            raise PipelineError(f"{key} needs one value per RGB channel (3), got {list(value)}")


def check_objective(objective: str, trains: bool) -> None:
    """A training run picks its checkpoint by the objective, so it must be a metric each epoch's validation
    logs; without training it only names what a stage's metric sweepers get."""
    if objective == "auto" or objective in VAL_METRICS:
        return
    if trains or not objective.startswith(STAGE_PREFIXES):
        raise PipelineError(
            f"objective={objective!r} is not a metric the train stage logs: choose auto or one of "
            f"{list(VAL_METRICS)}"
        )


def check_training(cfg: DictConfig) -> None:
    mixing = cfg.train.mixup_alpha > 0 or cfg.train.cutmix_alpha > 0
    if mixing and cfg.data.batch_size % 2:
        raise PipelineError(f"mixup/cutmix need an even data.batch_size, got {cfg.data.batch_size}")
    check_trainer_options(list(cfg.trainer))
    check_accelerator(cfg.trainer.get("accelerator"))
    check_optimizer_name(cfg.optimizer.name)
    if cfg.train.resume:
        check_resumable(Path(cfg.train.resume), cfg)


def check_trainer_options(names: list[str]) -> None:
    """`trainer` is passed to lightning.Trainer as written: every key must be one of its arguments."""
    import inspect

    from lightning.pytorch import Trainer

    known = [p for p in inspect.signature(Trainer.__init__).parameters if p != "self"]
    for name in names:
        if name in PIPELINE_OWNED:
            raise PipelineError(
                f"trainer.{name} is set by the train stage; remove it from the trainer config"
            )
        if name not in known:
            raise PipelineError(
                f"trainer.{name} is not a lightning.Trainer argument{_did_you_mean(name, known)}"
            )


def check_accelerator(name) -> None:
    """Hardware this machine lacks fails here, before the data pass, not when the train stage starts."""
    if not isinstance(name, str) or name in ("auto", "cpu"):
        return
    from lightning.pytorch.accelerators import AcceleratorRegistry

    wanted = ("cuda", "mps") if name == "gpu" else (name,)
    if not any(n in AcceleratorRegistry for n in wanted):
        return  # a name Lightning does not register: Lightning's own error says which names it knows
    available = [n for n, entry in sorted(AcceleratorRegistry.items()) if entry["accelerator"].is_available()]
    if not any(n in available for n in wanted):
        raise PipelineError(
            f"trainer.accelerator={name} is not available on this machine (it has {', '.join(available)}): "
            "use trainer=auto or trainer=cpu"
        )


def check_optimizer_name(name: str) -> None:
    from pipeline.models.optim import known_optimizers

    known = known_optimizers()
    if name not in known:
        raise PipelineError(
            f"optimizer.name={name!r} is not an optimizer timm knows{_did_you_mean(name, known)} "
            "(timm.optim.list_optimizers())"
        )


def check_resumable(path: Path, cfg: DictConfig) -> None:
    """A run continues only with the model, optimizer, schedule and strategy that wrote the checkpoint."""
    if not path.is_file():
        raise PipelineError(f"train.resume: checkpoint not found: {path}")
    try:
        import torch  # only when resuming: the rest of this module runs before heavy imports

        saved = torch.load(path, map_location="cpu", weights_only=True)["hyper_parameters"]
    except (RuntimeError, KeyError, EOFError, OSError, pickle.UnpicklingError) as err:
        raise PipelineError(f"train.resume: {path} is not a checkpoint this pipeline wrote") from err
    resolved = finetune_recipe({**cfg.finetune}, {**cfg.model})
    now = {
        "model": cfg.model.name,
        "optimizer": cfg.optimizer.name,
        "scheduler": cfg.scheduler.name,
        "finetune": resolved["strategy"],
    }
    then = {
        "model": saved["model"]["name"],
        "optimizer": saved["optimizer"].get("name"),
        "scheduler": (saved.get("scheduler") or {}).get("name"),
        "finetune": (saved.get("finetune") or {}).get("strategy", "full"),
    }
    differ = [f"{k} {then[k]} (now {now[k]})" for k in now if then[k] != now[k]]
    if differ:
        raise PipelineError(f"train.resume: {path} was trained with another setup: {', '.join(differ)}")


def _get(cfg: DictConfig, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def _did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3)
    return f"; did you mean {', '.join(close)}?" if close else ""
