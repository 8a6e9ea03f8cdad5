"""Hydra's sweep syntax as Optuna distributions, so a search space is written as users write any sweep:
`choice(32, 64)`, `range(1, 9, 2)` (the integers Hydra's range gives, the end excluded), `interval(0.1, 0.6)`
and `tag(log, interval(1e-4, 1e-2))`. Anything else is a fixed override, the same for every trial.
Optuna is imported when a sweep starts, not when the CLI loads this module.
"""

from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer

from pipeline.errors import PipelineError


def search_space(overrides: list[str]) -> tuple[dict[str, Any], list[str]]:
    """(Optuna distribution per swept key, fixed overrides as written)."""
    space: dict[str, Any] = {}
    fixed: list[str] = []
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_sweep_override():
            space[override.get_key_element()] = distribution(override)
        else:
            fixed.append(override.input_line)
    return space, fixed


def distribution(override: Override):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if override.is_range_sweep():
        values = list(override.sweep_iterator())
        if not values:
            raise PipelineError(f"{override.input_line}: an empty range")
        if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
            return IntDistribution(values[0], values[-1], step=value.step)
        return FloatDistribution(values[0], values[-1], step=value.step)
    if override.is_interval_sweep():  # Hydra's intervals are real-valued; range() sweeps integers
        return FloatDistribution(value.start, value.end, log="log" in value.tags)
    raise PipelineError(f"{override.input_line}: Optuna cannot sweep this (choice, range or interval)")


def as_override(key: str, value: Any) -> str:
    """key=value as Hydra parses it back to the same value (choices are kept in override syntax)."""
    return f"{key}={'null' if value is None else value}"
