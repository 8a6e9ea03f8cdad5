"""`python -m pipeline --help`: every config group with its options, and the config the overrides compose;
and how the entry point leaves."""

import contextlib
import gc
import subprocess
import sys

import pytest
import yaml
from conftest import run_cli

from pipeline import __main__ as entry
from pipeline.cli_help import config_groups
from pipeline.errors import PipelineError


def test_groups_are_the_option_files_under_conf_without_hydras_own():
    groups = config_groups()
    assert "resnet18" in groups["model"] and "smoke" in groups["debug"]
    assert not any(group.startswith("hydra") for group in groups)


def test_help_prints_the_groups_and_the_config_the_overrides_compose():
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "model=vgg11", "trainer.max_epochs=7", "--help"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    head, config = done.stdout.split("Override anything in the config (foo.bar=value)\n\n")
    assert "model: alexnet, efficientnet_lite0" in head
    composed = yaml.safe_load(config)
    assert composed["model"]["name"] == "vgg11_bn" and composed["trainer"]["max_epochs"] == 7


def refuse() -> None:
    raise PipelineError("a bad override")


@pytest.mark.parametrize(
    "argv, hydra_main", [(["--help"], None), (["model=x"], refuse)], ids=["done", "failed"]
)
def test_the_entry_point_spares_python_its_last_collections_on_the_way_out(monkeypatch, argv, hydra_main):
    monkeypatch.setattr(sys, "argv", ["pipeline", *argv])
    if hydra_main is not None:
        monkeypatch.setattr(entry, "_hydra_main", hydra_main)
    gc.unfreeze()
    try:
        with pytest.raises(SystemExit) if hydra_main else contextlib.nullcontext():
            entry.main()
        assert gc.get_freeze_count() > 0  # live objects moved out of reach of the shutdown collections
    finally:
        gc.unfreeze()


@pytest.mark.parametrize(
    "typed, meant",
    [
        ("data.batchsize=3", "data.batch_size"),
        ("trainer.max_epoch=3", "trainer.max_epochs"),
        ("optimizer.lrr=0.1", "optimizer.lr"),
        ("augment.crop_pc=0.8", "augment.crop_pct"),
        ("calibrate.conformal_alpah=0.2", "calibrate.conformal_alpha"),
        ("dat.root=x", "data.root"),
        ("data.xyzzy=1", None),  # nothing near: no guess
    ],
)
def test_a_mistyped_key_gets_the_nearest_one(tmp_path, typed, meant):
    done = run_cli("model=simple_cnn", typed, cwd=tmp_path)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    line = done.stderr.strip()
    assert line.startswith(f"config error: Could not override '{typed.split('=')[0]}'")
    assert line.endswith(f"; did you mean {meant}?" if meant else "'DataConfig'"), line
