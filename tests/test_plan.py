"""Resolved once a run: the plan (what `auto` becomes), shared by the stages that train and never written
into the config the run was given, and the inspection of the images."""

import contextlib
import sys
import types

import pytest
from omegaconf.errors import ReadonlyConfigError

from pipeline.context import Context
from pipeline.models.module import load_classifier
from pipeline.ranks import SilentTracker
from pipeline.run_lifecycle import pipeline_run
from pipeline.runner import run, run_stages
from pipeline.stages import index as index_module
from pipeline.stages import planning as plan_module
from pipeline.tracking import Tracker

SMALL = [
    "model=simple_cnn", "model.kwargs.channels=[4,8]", "model.kwargs.convs_per_block=1", "augment=none",
    "data.image_size=16", "data.batch_size=16", "validate.gradcam=0", "validate.top_losses=0",
]  # fmt: skip


def test_a_stage_cannot_write_the_config_the_run_was_given(make_cfg, tmp_path, monkeypatch):
    writes = types.ModuleType("pipeline.stages.data")

    def run(cfg, ctx, tracker):
        cfg.data.image_size = 64

    writes.run = run
    monkeypatch.setitem(sys.modules, "pipeline.stages.data", writes)
    with pytest.raises(ReadonlyConfigError):
        cfg, ctx = make_cfg("data.image_size=auto"), Context(output_dir=tmp_path)
        run_stages(cfg, ["data"], ctx, SilentTracker(), stage_run=lambda name: contextlib.nullcontext())


def test_the_stages_that_train_share_one_plan_resolved_once(make_cfg, image_folder, tmp_path, monkeypatch):
    resolved, resolve = [], plan_module.resolve_plan

    def counted(*args):
        resolved.append(resolve(*args))
        return resolved[-1]

    monkeypatch.setattr(plan_module, "resolve_plan", counted)
    cfg = make_cfg(*SMALL, "trainer.max_epochs=auto", root=image_folder)
    tracker = Tracker("plan", None, str(tmp_path / "mlruns"))
    with pipeline_run(tracker, {}, "", ("plan", "cmd", "")):
        ctx = run_stages(cfg, ["sanity", "train"], Context(output_dir=tmp_path), tracker)
    assert len(resolved) == 1 and ctx.plan is resolved[0]
    assert ctx.plan.max_epochs == 12 and cfg.trainer.max_epochs == "auto"
    classifier = load_classifier(ctx.ckpt_path)
    assert classifier.hparams.preprocess == ctx.plan.preprocess.to_dict()


def test_a_run_inspects_its_images_once(make_cfg, image_folder, tmp_path, monkeypatch):
    """The data stage decodes and hashes every file; the stages after it read what it found."""
    calls, inspect = [], index_module.inspect_files

    def counted(paths, *args):
        calls.append(len(paths))
        return inspect(paths, *args)

    monkeypatch.setattr(index_module, "inspect_files", counted)
    run(make_cfg(*SMALL, "trainer.max_epochs=1", "stages=[data,sanity,train,validate]", root=image_folder))
    assert calls == [36]  # 3 classes of 12: once, all of them
