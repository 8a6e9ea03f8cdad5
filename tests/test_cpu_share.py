"""Runs side by side get a share of the CPU: worker processes follow the launcher's thread budget."""

import logging
import os

import torch
from joblib import Parallel, delayed

from pipeline.cpu_share import fit_workers_to_share, scoring_workers


def _budget_in_a_job() -> tuple[str | None, int]:
    return os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads()


def test_the_parallel_launchers_backend_gives_each_job_its_share_of_threads():
    shares = Parallel(n_jobs=2, backend="loky")(delayed(_budget_in_a_job)() for _ in range(2))
    expected = max(1, len(os.sched_getaffinity(0)) // 2)
    assert shares == [(str(expected), expected)] * 2


def test_workers_are_lowered_to_the_thread_budget(make_cfg, monkeypatch, caplog):
    cfg = make_cfg("data.num_workers=4", "data.inspect_workers=3")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with caplog.at_level(logging.INFO, logger="pipeline"):
        fit_workers_to_share(cfg)
    assert (cfg.data.num_workers, cfg.data.inspect_workers) == (1, 1)
    assert "data.num_workers=4 lowered to 1" in caplog.text


def test_workers_are_kept_without_a_budget(make_cfg, monkeypatch):
    cfg = make_cfg("data.num_workers=4", "data.inspect_workers=3")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    fit_workers_to_share(cfg)
    assert (cfg.data.num_workers, cfg.data.inspect_workers) == (4, 3)


def test_passes_that_only_score_on_the_cpu_keep_a_quarter_of_the_cores_for_workers(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert [scoring_workers(n, "cpu") for n in (0, 2, 8)] == [0, 2, 4]
    assert scoring_workers(8, "cuda") == 8  # workers decode while the GPU computes
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert scoring_workers(2, "cpu") == 0
