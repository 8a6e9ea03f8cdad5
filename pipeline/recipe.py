"""The rules that turn an `auto` setting into a value from the model and the data: the run's plan applies
them once (pipeline.stages.planning); the config checks, the run's description and the sweeper read the same
rules before the data is inspected.

`finetune=auto` picks the fine-tuning strategy from where the weights come from. Plain dicts in, plain dicts
out, no heavy imports: the config checks use it before any work starts.
"""

import math
import statistics
from typing import Any

from pipeline.errors import PipelineError

AUTO = "auto"  # the value that lets the pipeline choose a setting from the model and the data


def starts_pretrained(model: dict[str, Any]) -> bool:
    return bool(model["pretrained"] or model["weights"])


def finetune_recipe(finetune: dict[str, Any], model: dict[str, Any]) -> dict[str, Any]:
    """`auto` becomes `gradual` with the configured rates for pretrained weights (under DDP too:
    pipeline.models.finetune), and `full` at one rate from random init. With `head_fit` the fitted head is
    gradual's head phase: every layer trains from the first epoch."""
    if finetune.get("head_fit") and not starts_pretrained(model):
        raise PipelineError(
            "finetune.head_fit needs pretrained weights (model.weights or model.pretrained): the features of "
            "a randomly initialized backbone say nothing a head could fit"
        )
    if finetune["strategy"] == "auto":
        if not starts_pretrained(model):
            return {**finetune, "strategy": "full", "backbone_lr_factor": 1.0, "first_stage_lr_factor": None}
        finetune = {**finetune, "strategy": "gradual"}
    if finetune.get("head_fit") and finetune["strategy"] == "gradual":
        return {**finetune, "strategy": "full"}
    return finetune


def describe_finetune(recipe: dict[str, Any], lr: float) -> str:
    """One line saying what the strategy does, with the rates it uses."""
    fitted = "head fitted on the frozen backbone's features; then " if recipe.get("head_fit") else ""
    if recipe["strategy"] == "linear_probe":
        return (
            "backbone frozen, head fitted on its features"
            if fitted
            else f"backbone frozen, head at lr {lr:.3g}"
        )
    rates = f"every layer at lr {lr:.3g}"
    if recipe["backbone_lr_factor"] != 1 or recipe.get("first_stage_lr_factor") is not None:
        rates = f"head at lr {lr:.3g}, backbone at {lr * recipe['backbone_lr_factor']:.3g}"
    if recipe.get("first_stage_lr_factor") is not None:
        rates += f" down to {lr * recipe['first_stage_lr_factor']:.3g} at the stem"
    if recipe["strategy"] == "gradual":
        return f"head alone for {recipe['unfreeze_epoch']} epoch(s), backbone frozen; then {rates}"
    return fitted + rates


def resolved_objective(objective: str, imbalanced: bool) -> str:
    """`objective=auto`: val/bal_acc for imbalanced training classes, else val/acc; any other name as is."""
    if objective != AUTO:
        return objective
    return "val/bal_acc" if imbalanced else "val/acc"


BALANCED_MODE = "weighted_sampler"  # what data.balance=auto applies to an imbalanced training split


def imbalance_recipe(
    balance: str, objective: str, train_counts: list[int], threshold: float
) -> tuple[str, str, str | None]:
    """(balance mode, objective metric, a line saying what `auto` chose or None). When the largest training
    class outnumbers the smallest by `threshold` or more, `auto` balances the batches and picks the checkpoint
    by balanced accuracy, which, unlike accuracy, does not reward predicting the big classes."""
    ratio = imbalance_ratio(train_counts)
    imbalanced = ratio >= threshold
    chosen_balance = (BALANCED_MODE if imbalanced else "none") if balance == "auto" else balance
    chosen_objective = resolved_objective(objective, imbalanced)
    if not imbalanced or (balance != "auto" and objective != "auto"):
        return chosen_balance, chosen_objective, None
    line = (
        f"training classes are imbalanced ({ratio:.1f}:1 >= data.imbalance_threshold {threshold:g}): "
        f"balancing with {chosen_balance} (data.balance), checkpoint by {chosen_objective} (objective)"
    )
    return chosen_balance, chosen_objective, line


def multilabel_recipe(
    balance: str, objective: str, train_counts: list[int], threshold: float
) -> tuple[str, str]:
    """(balance, objective) for several labels an image: `auto` weighs each label's positives in the loss
    (class_weights: BCE's pos_weight) when the most frequent label outnumbers the rarest by `threshold`, and
    picks the checkpoint by mean average precision; a balance or objective for one label an image is
    refused."""
    from pipeline.schema import SINGLE_LABEL_ONLY

    if objective in SINGLE_LABEL_ONLY:
        raise PipelineError(
            f"objective={objective} scores one label an image: use val/map, val/f1_macro or val/loss"
        )
    if balance in ("oversample", "undersample"):
        raise PipelineError(
            f"data.balance={balance} resamples classes: several labels an image take class_weights"
        )
    if balance == AUTO:
        balance = "class_weights" if imbalance_ratio(train_counts) >= threshold else "none"
    return balance, "val/map" if objective == AUTO else objective


def imbalance_ratio(train_counts: list[int]) -> float:
    """The largest training class's count over the smallest's: at data.imbalance_threshold or more, every
    `auto` that weighs classes (balance, objective, calibrate.conformal_mix) treats them as equals."""
    return max(train_counts) / max(min(train_counts), 1)


def conformal_mix(mix: str, train_counts: list[int], threshold: float) -> str:
    """calibrate.conformal_mix=auto: balanced for imbalanced training classes, as objective=auto then picks
    the checkpoint by balanced accuracy; else calib."""
    if mix != AUTO:
        return mix
    return "balanced" if imbalance_ratio(train_counts) >= threshold else "calib"


def objective_direction(objective: str, mode: str) -> str:
    """`max` or `min`: `objective_mode` when set, else min for a loss and max for any score."""
    if mode != "auto":
        return str(mode)
    return "min" if objective.endswith("loss") else "max"


SMALL_SIZE, LARGE_SIZE = 160, 192  # px: what data.image_size=auto chooses between
BASE_EPOCHS = 12  # what trainer.max_epochs=auto gives up to SMALL_SIZE
COMPUTE_SIZE = 128  # px: above SMALL_SIZE, auto epochs cost about what BASE_EPOCHS cost at this size


def auto_image_size(short_sides: list[int]) -> tuple[int, str]:
    """data.image_size=auto: 192 px when the training images' median short side has at least that many
    pixels, else 160 (upscaled small images suit ImageNet weights better at 160 than at 128); with a line
    saying why. Chosen on the shared folders: flowers at 192 beat 128 and the linear probe, the 100 px hand
    signs at 160 beat 128 (docs/guides/transfer.md)."""
    median = statistics.median(short_sides) if short_sides else 0
    size = LARGE_SIZE if median >= LARGE_SIZE else SMALL_SIZE
    return size, f"data.image_size=auto: {size} px (the training images' median short side is {median:g} px)"


def auto_epochs(image_size: int) -> int:
    """trainer.max_epochs=auto: 12 up to 160 px; above, about the compute of 12 epochs at 128 px,
    ceil(12 x (128 / size)^2), e.g. 6 at 192: small images are cheap enough for every epoch, large ones
    are held to the budget each was measured at."""
    if image_size <= SMALL_SIZE:
        return BASE_EPOCHS
    return math.ceil(BASE_EPOCHS * (COMPUTE_SIZE / image_size) ** 2)  # below BASE_EPOCHS: size > COMPUTE_SIZE
