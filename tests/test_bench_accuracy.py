"""The accuracy bench's own logic (scripts/bench_accuracy.py) on a folder it makes: the imbalanced copy
keeps the planned share of each class as links, a missing photo folder is skipped, not an error, and
every recipe is a valid config."""

import pytest
from conftest import load_script, make_image_folder


@pytest.fixture(scope="module")
def bench():
    return load_script("bench_accuracy")


def test_imbalanced_copy_keeps_each_class_share_as_links(bench, tmp_path):
    source = make_image_folder(tmp_path / "src", per_class=20)
    copy = bench.imbalanced_copy(source, tmp_path / "skewed", seed=0)
    kept = {d.name: sorted(d.iterdir()) for d in sorted(copy.iterdir())}
    assert [len(v) for v in kept.values()] == [20, 10, 4]  # KEEP 1.0, 0.5, 0.2 over the three classes
    assert all(f.is_symlink() and f.resolve().parent.name == name for name, fs in kept.items() for f in fs)


def test_a_missing_photo_folder_is_skipped_with_a_line(bench, tmp_path, capsys):
    assert bench.main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "bench")]) == 0
    assert "not found: skipped" in capsys.readouterr().out and not (tmp_path / "bench").exists()


BENCH = load_script("bench_accuracy")


@pytest.mark.parametrize("recipe", [*BENCH.RECIPES, *BENCH.IMBALANCED])
def test_every_recipe_is_a_config_the_pipeline_accepts(make_cfg, image_folder, recipe):
    """A recipe naming a setting that was renamed would only fail an hour into the bench."""
    from pipeline.config_checks import check_config

    _, overrides = {**BENCH.RECIPES, **BENCH.IMBALANCED}[recipe]
    check_config(make_cfg("data=folder", *overrides, root=image_folder))
