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
