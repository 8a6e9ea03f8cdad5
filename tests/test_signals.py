"""The one owner of signals (pipeline.signals), and the library internals it relies on, pinned: a Lightning or
MLflow upgrade that changes one fails here, by name, before it breaks interrupts or dataset logging."""

import os
import signal

import lightning as L
import mlflow
import pandas as pd
import pytest
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


def test_an_interrupt_that_a_library_s_cleanup_replaced_still_exits_130(capsys):
    """Ctrl-C while Hydra composes a sweep's next trial: OmegaConf's flag cleanup raised its own error over
    the KeyboardInterrupt, which read as a config error (exit 2)."""
    from omegaconf.errors import ConfigAttributeError

    import pipeline.__main__ as entry

    try:
        try:
            raise KeyboardInterrupt
        finally:
            raise ConfigAttributeError("'NoneType' object has no attribute '_invalidate_flags_cache'")
    except ConfigAttributeError as err:
        with pytest.raises(SystemExit) as exited:
            entry.exit_on_known_error(err)
    assert exited.value.code == 130 and capsys.readouterr().err == "interrupted\n"
    with pytest.raises(SystemExit) as exited:
        entry.exit_on_known_error(ConfigAttributeError("Key 'x' is not in struct"))
    assert exited.value.code == 2 and capsys.readouterr().err.startswith("config error:")
