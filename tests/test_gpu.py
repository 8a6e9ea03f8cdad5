"""GPU training: bf16 mixed precision and channels_last through the real train stage. Skips without CUDA."""

import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.runner import run

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_train_stage_on_gpu_with_bf16_and_channels_last(make_cfg, image_folder, tmp_path):
    cfg = make_cfg(
        "stages=[train]",
        "trainer=gpu",
        "trainer.devices=1",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        "train.channels_last=true",
        "data.image_size=32",
        "data.batch_size=8",
        root=image_folder,
    )
    run(cfg)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    (train,) = [
        r
        for r in client.search_runs(client.search_experiments()[0].experiment_id)
        if r.info.run_name == "train"
    ]
    assert train.data.params["train.accelerator"] == "CUDAAccelerator"
    assert train.data.metrics["train/epochs"] == 2 and train.data.metrics["train/best_val_acc"] > 0


def test_checks_validation_and_audit_run_on_the_gpu_that_trains(
    make_cfg, image_folder, tmp_path, audit_cache
):
    cfg = make_cfg(
        "stages=[data,sanity,train,validate]",
        "trainer=gpu",
        "trainer.devices=1",
        "trainer.max_epochs=1",
        "data.image_size=32",
        "data.batch_size=8",
        "data.audit=true",
        "audit.image_size=64",
        f"data.cache_dir={audit_cache}",
        root=image_folder,
    )
    run(cfg)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    stages = {r.info.run_name: r for r in client.search_runs(client.search_experiments()[0].experiment_id)}
    devices = {
        "data": stages["data"].data.params["data.audit_device"],
        "sanity": stages["sanity"].data.params["sanity.device"],
        "validate": stages["validate"].data.params["validate.device"],
    }
    assert devices == dict.fromkeys(devices, "cuda:0")
