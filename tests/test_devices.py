"""Where the single-process stages run (pipeline.devices): the training accelerator's first device."""

import pytest
import torch

from pipeline.devices import parallel_job_device, stage_device
from pipeline.errors import PipelineError


@pytest.mark.parametrize(
    "accelerator, devices, expected",
    [("auto", "auto", "cuda:0"), ("gpu", 2, "cuda:0"), ("cuda", [1, 2], "cuda:1"), ("cpu", "auto", "cpu")],
)
def test_stages_run_on_the_first_gpu_training_uses_unless_told_cpu(
    monkeypatch, accelerator, devices, expected
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert str(stage_device(accelerator, devices)) == expected


def test_without_a_gpu_every_accelerator_choice_runs_stages_on_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert {str(stage_device(a)) for a in ("auto", "gpu", "cuda", "cpu")} == {"cpu"}


def test_parallel_jobs_take_distinct_gpus_and_more_jobs_than_gpus_are_refused():
    assert [parallel_job_device(2, num, gpus=4) for num in range(4)] == [[0], [1], [0], [1]]
    with pytest.raises(PipelineError, match=r"runs 3 jobs at once and this machine has 2 GPU\(s\): set "):
        parallel_job_device(3, 0, gpus=2)
