from pathlib import Path

import pytest
from conftest import CONF_DIR, experiments_in, run_cli
from omegaconf import OmegaConf

SET_BY_TESTS = {"trainer.enable_progress_bar", "data.cache_dir", "tracking.dir"}  # conftest.compose_cfg
GROUP_OPTIONS = [
    (group.name, option.stem)
    for group in sorted(Path(CONF_DIR).iterdir())
    if group.is_dir()
    for option in sorted(group.glob("*.yaml"))
]


def leaves(node: dict, prefix: str = "") -> dict[str, object]:
    """{'a': {'b': 1}} -> {'a.b': 1}, skipping the defaults list and Hydra's own settings."""
    out: dict[str, object] = {}
    for key, value in node.items():
        if key in ("defaults", "hydra"):
            continue
        if isinstance(value, dict) and value:
            out |= leaves(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def at(config: dict, dotted: str):
    for part in dotted.split("."):
        config = config[part]
    return config


@pytest.mark.parametrize("group, option", GROUP_OPTIONS)
def test_every_config_choice_composes_with_the_values_its_file_states(make_cfg, group, option):
    """Each option file, merged onto the schema and its `defaults`, gives the composed config its values; a
    preset that inherits (trainer/cpu from trainer/auto) keeps every value it does not change."""
    overrides = [f"{group}={option}"]
    if group == "data" and option == "folder":
        overrides.append("data.root=/some/images")
    if group == "model" and option == "timm":
        overrides.append("model.name=resnet18")
    composed = OmegaConf.to_container(
        make_cfg(*overrides), resolve=True, throw_on_missing=True, enum_to_str=True
    )
    path = Path(CONF_DIR) / group / f"{option}.yaml"
    stated = OmegaConf.to_container(OmegaConf.load(path))
    prefix = "" if path.read_text().startswith("# @package _global_") else f"{group}."
    parents = [d for d in stated.get("defaults", []) if isinstance(d, str) and d != "_self_"]
    for parent in parents:
        for key, value in leaves(
            OmegaConf.to_container(OmegaConf.load(path.parent / f"{parent}.yaml"))
        ).items():
            if key not in stated and f"{prefix}{key}" not in SET_BY_TESTS:
                assert at(composed, f"{prefix}{key}") == value, key
    for key, value in leaves(stated).items():
        if value != "???" and f"{prefix}{key}" not in SET_BY_TESTS:
            assert at(composed, f"{prefix}{key}") == value, key


def test_cli_config_error_is_one_line_and_exits_nonzero(tmp_path):
    done = run_cli("trainer.max_epoch=3", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "config error: Could not override 'trainer.max_epoch': Key 'max_epoch' is not in struct; "
        "did you mean trainer.max_epochs?"
    ]
    assert not (tmp_path / "mlruns").exists()  # nothing started, nothing written


def test_folder_data_without_root_fails_before_any_run(make_cfg, tmp_path):
    from omegaconf.errors import MissingMandatoryValue

    from pipeline.runner import run

    with pytest.raises(MissingMandatoryValue):
        run(make_cfg("data=folder"))
    assert experiments_in(tmp_path) == []  # no experiment, so no run, was started
