"""The console look of the project's log lines and who writes them (pipeline.logs)."""

import logging

import pytest

from pipeline.logs import ConsoleFormatter, RankZeroFilter


def record(name: str, level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


@pytest.mark.parametrize(
    "name, level, shown",
    [
        ("pipeline.train", logging.INFO, "[train] epoch 1/2"),
        ("pipeline", logging.INFO, "[pipeline] epoch 1/2"),
        ("pipeline.validate", logging.WARNING, "[validate] warning: epoch 1/2"),
        ("pipeline", logging.ERROR, "[pipeline] epoch 1/2"),
        ("lightning.pytorch", logging.WARNING, "[lightning.pytorch][WARNING] - epoch 1/2"),
    ],
)
def test_console_lines_name_the_stage_or_the_library(name, level, shown):
    assert ConsoleFormatter().format(record(name, level, "epoch 1/2")) == shown


@pytest.mark.parametrize("variables, kept", [({}, True), ({"RANK": "0"}, True), ({"RANK": "1"}, False),
                                             ({"LOCAL_RANK": "1"}, False)])  # fmt: skip
def test_only_rank_zero_writes(monkeypatch, variables, kept):
    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert RankZeroFilter().filter(record("pipeline.train", logging.INFO, "x")) is kept


def test_a_file_name_with_a_new_line_stays_on_one_console_line(tmp_path):
    odd = tmp_path / "cat\nphoto\t1.png"
    record = logging.LogRecord(
        "pipeline.data", logging.WARNING, __file__, 1, "outlier: %s (%s)", (odd, "cats"), None
    )
    line = ConsoleFormatter().format(record)
    assert line == f"[data] warning: outlier: {tmp_path}/cat\\nphoto\\t1.png (cats)" and "\n" not in line
    assert record.getMessage().count("\n") == 1  # the record itself is untouched (the log file's copy)
