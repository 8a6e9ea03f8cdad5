"""An honest score and a run you can follow: flat folders keep a held-out test split that never reaches
training or checkpoint choice; imbalanced folders are balanced and judged by balanced accuracy; a run logged
to a file shows each epoch and ends with a summary."""

import logging
from collections import Counter

import pytest
from conftest import make_image_folder, run_cli
from mlflow.tracking import MlflowClient

import pipeline.data.images as images
import pipeline.data.resized_cache as resized_cache
from pipeline.data.sources import build_index
from pipeline.runner import run

TINY = ["data.image_size=16", "data.batch_size=8", "data.audit=false", "data.num_workers=0",
        "model=simple_cnn", "model.kwargs.channels=[8,16]", "model.kwargs.convs_per_block=1",
        "sanity.overfit_target_loss=0.5", "trainer.max_epochs=2"]  # fmt: skip


def test_a_flat_folder_gets_a_held_out_test_split_by_default(make_cfg, image_folder):
    cfg = make_cfg(root=image_folder)
    index = build_index(image_folder, cfg.data.val_fraction, cfg.data.test_fraction, cfg.data.split_seed)
    assert cfg.data.test_fraction == 0.15
    assert index.counts()["test"] == {"checker": 2, "stripes_h": 2, "stripes_v": 2}  # 15% of 12, rounded


def test_a_class_too_small_to_hold_out_stays_whole_in_train(tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=12)
    for extra in sorted((root / "checker").iterdir())[1:]:
        extra.unlink()  # checker keeps a single image
    index = build_index(root, 0.2, 0.15, seed=0)
    assert Counter(r.split for r in index.records if "checker" in r.path) == {"train": 1}
    assert index.counts()["val"]["stripes_h"] == 2 and index.counts()["test"]["stripes_h"] == 2


def test_test_images_never_reach_training_or_checkpoint_choice(make_cfg, image_folder, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="pipeline")
    """Every image decoded for the sanity checks, training and the per-epoch validation that picks the
    checkpoint is recorded: none is a test image. The validate stage then scores the test split."""
    decoded: list[str] = []
    load = images.decode_checked
    spy = lambda path: decoded.append(path) or load(path)  # noqa: E731
    monkeypatch.setattr(images, "decode_checked", spy)
    monkeypatch.setattr(resized_cache, "decode_checked", spy)  # training reads train and val from there
    run(make_cfg(*TINY, "stages=[data,sanity,train]", root=image_folder))
    index = build_index(image_folder, 0.2, 0.15, seed=42)
    test_paths = {r.path for r in index.split("test")}
    assert test_paths and not test_paths & set(decoded)
    assert {r.path for r in index.split("val")} <= set(decoded)  # the spy saw the checkpoint's val passes

    decoded.clear()
    ckpt = f"{make_cfg().output_dir}/checkpoints/best.ckpt"
    run(make_cfg(*TINY, "stages=[validate]", f"ckpt_path={ckpt}", root=image_folder))
    assert test_paths <= set(decoded)
    assert not any("no test split" in m for m in caplog.messages)
    run(make_cfg(*TINY, "stages=[validate]", f"ckpt_path={ckpt}", "data.test_fraction=0", root=image_folder))
    assert any(m.startswith("no test split: val scores picked the checkpoint") for m in caplog.messages)


def test_a_val_folder_without_test_is_held_out_and_scored_once_as_test(make_cfg, tmp_path, monkeypatch):
    """train/ and val/ folders: val becomes the test split, untouched until the validate stage, and the
    checkpoint is picked on a seeded slice of train; data.holdout=none keeps val for checkpoint choice."""
    root = make_image_folder(tmp_path / "d", per_class=10, splits=("train", "val"))
    user_val = {str(p) for p in (root / "val").rglob("*.png")}
    decoded: list[str] = []
    load = images.decode_checked
    spy = lambda path: decoded.append(path) or load(path)  # noqa: E731
    monkeypatch.setattr(images, "decode_checked", spy)
    monkeypatch.setattr(resized_cache, "decode_checked", spy)
    run(make_cfg(*TINY, "stages=[data,sanity,train]", root=root))
    assert decoded and not user_val & set(decoded)
    index = build_index(root, 0.2, 0.15, seed=42)
    assert {r.path for r in index.split("test")} == user_val
    assert index.counts()["val"] == {"checker": 2, "stripes_h": 2, "stripes_v": 2}  # 20% of train's 10

    decoded.clear()
    ckpt = f"{make_cfg().output_dir}/checkpoints/best.ckpt"
    run(make_cfg(*TINY, "stages=[validate]", f"ckpt_path={ckpt}", root=root))
    assert user_val <= set(decoded)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    (validate,) = [r for r in client.search_runs(client.search_experiments()[0].experiment_id)
                   if r.info.run_name == "validate"]  # fmt: skip
    assert "test/acc" in validate.data.metrics

    kept = build_index(root, 0.2, 0.15, seed=42, holdout="none")
    assert {r.path for r in kept.split("val")} == user_val and not kept.split("test")


def test_imbalanced_training_split_is_balanced_and_judged_by_balanced_accuracy(make_cfg, tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=14)
    for extra in sorted((root / "checker").iterdir())[4:]:
        extra.unlink()  # 4 checker images against 14 of each stripe: 2 and 9 in train
    run(make_cfg(*TINY, "stages=[train]", root=root))
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    (train,) = [r for r in client.search_runs(client.search_experiments()[0].experiment_id)
                if r.info.run_name == "train"]  # fmt: skip
    assert train.data.params["train.balance"] == "weighted_sampler"
    assert train.data.params["train.objective"] == "val/bal_acc"
    assert {"train/best_val_bal_acc", "train/last_val_acc"} <= set(train.data.metrics)


@pytest.mark.slow
def test_a_run_logged_to_a_file_shows_each_epoch_and_ends_with_a_summary(image_folder, tmp_path, store):
    where = [f"data.root={image_folder}", f"tracking.dir={tmp_path / 'mlruns'}", "trainer=cpu",
             f"data.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'out'}"]  # fmt: skip
    done = run_cli(*TINY, *where, "stages=[data,train,validate]", cwd=tmp_path)  # stdout is a pipe
    assert done.returncode == 0, done.stderr[-2000:]
    log = done.stdout + done.stderr
    assert "[train] epoch 1/2: train/loss" in log and "[train] epoch 2/2: train/loss" in log
    assert "ETA" in log.split("[train] epoch 1/2")[1].splitlines()[0]
    assert "[pipeline] finished in" in log and "[pipeline] test (6 images): acc" in log
    assert "GPU available" not in log and "TPU available" not in log
    log_file = (tmp_path / "out" / "pipeline.log").read_text()  # Hydra's job log gets the same lines
    assert "[pipeline.train][INFO] - epoch 2/2: train/loss" in log_file and "finished in" in log_file

    bad = tmp_path / "not_a.ckpt"
    bad.write_bytes(b"garbage")
    done = run_cli(*TINY, *where, "stages=[validate]", f"ckpt_path={bad}", cwd=tmp_path)
    assert done.returncode == 2
    assert "[pipeline] stage validate failed after" in done.stdout
    (line,) = done.stderr.strip().splitlines()  # the CLI's one line for bad input, nothing else
    assert line.startswith(f"error: cannot load checkpoint {bad}")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    failed = client.search_runs(client.search_experiments()[0].experiment_id, "attributes.status = 'FAILED'")
    assert sorted(r.info.run_name == "validate" for r in failed) == [False, True]  # the parent and its stage
