import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONF_DIR
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

GROUP_OPTIONS = [
    (group.name, option.stem)
    for group in sorted(Path(CONF_DIR).iterdir())
    if group.is_dir()
    for option in sorted(group.glob("*.yaml"))
]


@pytest.mark.parametrize("group, option", GROUP_OPTIONS)
def test_every_config_choice_composes_and_resolves(make_cfg, group, option):
    overrides = [f"{group}={option}"]
    if group == "data" and option == "folder":
        overrides.append("data.root=/some/images")
    if group == "model" and option == "timm":
        overrides.append("model.name=resnet18")
    cfg = make_cfg(*overrides)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.max_epoch=3", "not in 'TrainerConfig'"),
        ("trainer.max_epochs=abc", "could not be converted"),
        ("optimizer.lr=fast", "could not be converted"),
        ("model=nonexistent", "Could not find 'model/nonexistent'"),
    ],
)
def test_unknown_keys_and_wrong_types_fail_at_compose(make_cfg, override, message):
    with pytest.raises(ConfigCompositionException) as err:
        make_cfg(override)
    assert message in f"{err.value} {err.value.__cause__}"


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONPATH": str(Path(CONF_DIR).parent)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_config_error_is_one_line_and_exits_nonzero(tmp_path):
    done = run_cli("trainer.max_epoch=3", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "config error: Could not override 'trainer.max_epoch': Key 'max_epoch' not in 'TrainerConfig'"
    ]
    assert not (tmp_path / "mlruns").exists()  # nothing started, nothing written


def test_cli_missing_data_folder_is_one_line_and_marks_the_run_failed(tmp_path):
    done = run_cli(f"data.root={tmp_path / 'nowhere'}", f"tracking.dir={tmp_path / 'mlruns'}", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: data folder not found: {tmp_path / 'nowhere'}"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("image-classification").experiment_id])
    assert sorted((r.info.run_name, r.info.status) for r in runs if r.info.run_name == "data") == [
        ("data", "FAILED")
    ]
    assert {r.info.status for r in runs} == {"FAILED"} and len(runs) == 2


def test_folder_data_without_root_fails_before_any_run(make_cfg, tmp_path):
    from omegaconf.errors import MissingMandatoryValue

    from pipeline.runner import run

    with pytest.raises(MissingMandatoryValue):
        run(make_cfg("data=folder"))
    assert not (tmp_path / "mlruns").exists()
