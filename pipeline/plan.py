"""The plan of a run's training: every `auto` and derived choice resolved once (pipeline.stages.planning),
frozen, and read by the stages that train. The Hydra config stays as the user gave it (the runner makes it
read-only); the MLflow run records the resolved values beside the requested `auto`.

timm's shape: resolve_data_config once, then build from what it resolved.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # albumentations and torch, which a data-only run does not need
    from pipeline.data.transforms import Preprocess


# `auto` settings the plan resolves: the parent run records `<key>.requested=auto` at start and
# `<key>=<value>` once resolved (pipeline.tracking.Tracker.log_resolved): runs compare by the value they used
RESOLVED_LATER = ("data.image_size", "trainer.max_epochs", "finetune.strategy", "data.balance", "objective")


def takes_steps(finetune: Mapping[str, Any]) -> bool:
    """False for a linear probe whose head is fitted on cached features: no optimizer step, no epoch."""
    return not (finetune["strategy"] == "linear_probe" and finetune.get("head_fit"))


@dataclass(frozen=True)
class Plan:
    preprocess: "Preprocess"  # image size, resize, crop and normalization
    max_epochs: int | None
    finetune: MappingProxyType  # pipeline.recipe.finetune_recipe, `auto` resolved for the model
    balance: str  # none, weighted_sampler or class_weights
    objective: str  # the val metric that picks the checkpoint and is returned to sweepers
    direction: str  # max or min

    @property
    def takes_steps(self) -> bool:
        return takes_steps(self.finetune)

    def logged(self) -> dict[str, Any]:
        """The resolved values the parent run records, by RESOLVED_LATER's names."""
        size, strategy = self.preprocess.image_size, self.finetune["strategy"]
        values = (size, self.max_epochs, strategy, self.balance, self.objective)
        return dict(zip(RESOLVED_LATER, values, strict=True))
