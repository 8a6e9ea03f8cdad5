"""Defaults chosen from the model and the data (pipeline.recipe), discriminative rates, and the run's
closing lines: pure functions, no training."""

import logging

import pytest
import timm
import torch
from conftest import make_image_folder

from pipeline import summary
from pipeline.context import Context
from pipeline.evaluation.metrics import classification_metrics
from pipeline.models.factory import create_model
from pipeline.models.finetune import param_groups, stage_lr_factors
from pipeline.progress import Progress, duration
from pipeline.recipe import auto_epochs, auto_image_size, conformal_mix, finetune_recipe, imbalance_recipe
from pipeline.stages.planning import resolve_plan

AUTO = {"strategy": "auto", "unfreeze_epoch": 1, "backbone_lr_factor": 0.1, "first_stage_lr_factor": 0.01}
SCRATCH = {"name": "resnet18", "pretrained": False, "weights": None}
PRETRAINED = {"name": "tf_efficientnet_lite0", "pretrained": False, "weights": "pkg:some/file.pth"}


def test_auto_fine_tunes_pretrained_weights_gradually_and_trains_random_init_at_one_rate():
    assert finetune_recipe(AUTO, PRETRAINED) == {**AUTO, "strategy": "gradual"}
    assert finetune_recipe(AUTO, {**SCRATCH, "pretrained": True})["strategy"] == "gradual"
    scratch = finetune_recipe(AUTO, SCRATCH)
    assert scratch["strategy"] == "full" and scratch["backbone_lr_factor"] == 1.0
    assert scratch["first_stage_lr_factor"] is None


def test_an_explicit_strategy_is_kept_as_given():
    probe = {**AUTO, "strategy": "linear_probe"}
    assert finetune_recipe(probe, SCRATCH) == probe


@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "resnet18"])
def test_earlier_stages_learn_slower_from_the_top_of_the_backbone_down_to_the_stem(name):
    model = timm.create_model(name, num_classes=3)
    factors = stage_lr_factors(model, backbone_lr_factor=0.1, first_stage_lr_factor=0.01)
    ordered = [factors[n] for n, _ in model.named_parameters() if not n.startswith(("fc.", "classifier."))]
    assert ordered[0] == pytest.approx(0.01) and ordered[-1] == pytest.approx(0.1)
    assert ordered == sorted(ordered) and len(set(ordered)) >= 4  # rising stage by stage
    groups = param_groups(model, 1e-3, weight_decay=0.05, backbone_lr_factor=0.1, first_stage_lr_factor=0.01)
    assert max(g["lr"] for g in groups if g["name"].startswith("head")) == pytest.approx(1e-3)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_a_model_without_stages_gets_one_backbone_rate():
    model = create_model("simple_cnn", 3, kwargs={"channels": [4, 8]})
    assert set(stage_lr_factors(model, 0.1, 0.01).values()) == {0.1}


@pytest.mark.parametrize(
    "balance, monitor, counts, expected",
    [
        ("auto", "auto", [100, 50, 10], ("weighted_sampler", "val/bal_acc")),  # 10:1
        ("auto", "auto", [100, 90, 40], ("none", "val/acc")),  # 2.5:1, under the threshold
        ("none", "val/acc", [100, 50, 10], ("none", "val/acc")),  # the user's choice stands
        ("class_weights", "auto", [100, 10], ("class_weights", "val/bal_acc")),
    ],
)
def test_imbalance_recipe_balances_and_picks_by_balanced_accuracy_from_the_threshold(
    balance, monitor, counts, expected
):
    chosen_balance, chosen_monitor, line = imbalance_recipe(balance, monitor, counts, threshold=3.0)
    assert (chosen_balance, chosen_monitor) == expected
    said = line is not None
    assert said == (max(counts) / min(counts) >= 3 and "auto" in (balance, monitor))


def test_balanced_accuracy_is_the_mean_per_class_recall_where_accuracy_rewards_the_big_class():
    targets = torch.tensor([0] * 8 + [1] * 2)
    logits = torch.tensor([[5.0, 0.0]] * 10)  # always the big class
    metrics = classification_metrics(logits, targets, 2, 1, 5)
    assert metrics["acc"] == pytest.approx(0.8) and metrics["bal_acc"] == pytest.approx(0.5)


def test_summary_leads_with_test_scores_and_says_where_things_are(tmp_path):
    metrics = {"test/acc": 0.9, "test/bal_acc": 0.85, "val/acc": 0.95, "data/test_images": 40}
    timings = {"data": 5.0, "train": 70.0}
    lines = summary.finished(75.0, timings, metrics, tmp_path, "abc", "http://ui/#/runs/abc", None)
    assert lines[0] == "finished in 1m15s (data 5s, train 1m10s)"
    assert lines[1] == "test (40 images): acc 0.9000, bal_acc 0.8500; val: acc 0.9500"
    assert str(tmp_path) in lines[2] and "abc" in lines[2]
    assert lines[3] == "this run in the MLflow UI (make ui): http://ui/#/runs/abc" and len(lines) == 4
    line = summary.failed({"data": 5.0, "train": 62.0}, ValueError("bad thing\nmore detail"))
    assert line == "stage train failed after 1m02s (finished: data 5s): bad thing"


def test_a_smoke_runs_summary_says_its_scores_check_the_plumbing_not_a_model(tmp_path):
    metrics = {"test/acc": 0.28, "data/test_images": 269}
    lines = summary.finished(62.0, {"train": 8.0}, metrics, tmp_path, "abc", "http://ui", None, smoke=True)
    assert lines[1].startswith("test (269 images): acc 0.2800")
    assert lines[2].startswith("debug=smoke checked the plumbing (every stage ran), not a model")


def test_progress_logs_at_its_interval_and_not_for_quick_work(caplog):
    caplog.set_level(logging.INFO, logger="pipeline")
    progress = Progress("data", "inspected files", total=10, interval=0.0)
    progress.advance(4)
    (record,) = caplog.records
    assert record.name == "pipeline.data" and record.getMessage().startswith("inspected files: 4/10 (40%)")
    caplog.clear()
    quiet = Progress("data", "inspected files", total=10, interval=60.0)
    quiet.advance(9)
    assert caplog.records == []
    assert (duration(5), duration(185), duration(3725)) == ("5s", "3m05s", "1h02m")


def test_the_eta_follows_the_phase_running_now(caplog, monkeypatch):
    """The audit embeds 30 images in 15 s with PyTorch, exports, then runs 20 a second: the ETA after that
    says 3 s for 60 left, not the 30 s the whole-run average would."""
    clock = iter([0.0, 15.0, 17.0, 18.0])
    monkeypatch.setattr("pipeline.progress.time.perf_counter", lambda: next(clock))
    caplog.set_level(logging.INFO, logger="pipeline")
    progress = Progress("data", "embedded images", total=110, interval=1.0)  # starts at 0 s
    progress.advance(30)  # 15 s: 2/s so far
    progress.new_phase()  # 17 s: the backbone exported
    progress.advance(20)  # 18 s: 20 in a second
    last = caplog.records[-1].getMessage()
    assert last == "embedded images: 50/110 (45%), 20/s, ETA 3s", last


def test_auto_size_is_192_for_large_training_images_and_160_for_small_ones():
    assert auto_image_size([224, 250, 180])[0] == 192  # median 224
    assert auto_image_size([100, 100, 300])[0] == 160  # median 100: upscaled to 160, never to 192
    assert auto_image_size([])[0] == 160
    line = "data.image_size=auto: 160 px (the training images' median short side is 191 px)"
    assert auto_image_size([191, 191])[1] == line


def test_auto_epochs_are_12_up_to_160_px_and_above_keep_the_compute_of_12_epochs_at_128_px():
    assert [auto_epochs(s) for s in (16, 32, 128, 160, 176, 192, 224)] == [12, 12, 12, 12, 7, 6, 4]


@pytest.mark.parametrize("side, size, epochs", [(200, 192, 6), (100, 160, 12)])
def test_a_run_resolves_auto_size_and_epochs_from_its_training_images(make_cfg, tmp_path, side, size, epochs):
    root = make_image_folder(tmp_path / "images", per_class=4, size=side)
    cfg = make_cfg("data.image_size=auto", "trainer.max_epochs=auto", root=root)
    plan = resolve_plan(cfg, Context(output_dir=tmp_path))
    assert (plan.preprocess.image_size, plan.max_epochs) == (size, epochs)
    assert (cfg.data.image_size, cfg.trainer.max_epochs) == ("auto", "auto")  # the config as given


@pytest.mark.parametrize(
    ("mix", "counts", "expected"),
    [
        ("auto", [30, 30, 29], "calib"),
        ("auto", [90, 30, 29], "balanced"),  # 3.1:1, at data.imbalance_threshold 3 or more
        ("calib", [90, 30, 29], "calib"),
        ("balanced", [30, 30, 29], "balanced"),
    ],
)
def test_sets_promise_equal_classes_where_the_training_classes_are_imbalanced(mix, counts, expected):
    assert conformal_mix(mix, counts, threshold=3.0) == expected
