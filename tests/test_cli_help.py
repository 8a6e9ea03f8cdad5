"""`python -m pipeline --help`: every config group with its options, and the config the overrides compose."""

import subprocess
import sys

import yaml

from pipeline.cli_help import config_groups


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
