"""The one owner of signals (pipeline.signals), and the library internals it relies on, pinned: a Lightning or
MLflow upgrade that changes one fails here, by name, before it breaks interrupts or dataset logging."""

import os
import signal

import lightning as L
import mlflow
import pandas as pd
from mlflow.entities import Dataset as DatasetEntity

from pipeline.signals import dataset_entity, sigterm_sets_lightning_flag, uninterrupted


def test_lightnings_sigterm_flag_is_what_trainer_received_sigterm_reads():
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    previous = signal.getsignal(signal.SIGTERM)
    try:
        sigterm_sets_lightning_flag(trainer)
        assert trainer.received_sigterm is False
        os.kill(os.getpid(), signal.SIGTERM)
        assert trainer.received_sigterm is True
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_an_mlflow_dataset_becomes_the_entity_a_runs_inputs_hold():
    dataset = mlflow.data.from_pandas(pd.DataFrame({"path": ["a.png"], "label": ["cat"]}), name="train")
    entity = dataset_entity(dataset)
    assert isinstance(entity, DatasetEntity) and entity.name == "train" and entity.digest == dataset.digest


def test_a_signal_during_an_mlflow_write_takes_effect_when_the_write_is_done():
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append("handled"))
    try:
        with uninterrupted():
            os.kill(os.getpid(), signal.SIGTERM)
            seen.append("write done")
        assert seen == ["write done", "handled"]
    finally:
        signal.signal(signal.SIGTERM, previous)
