"""A finished run exits: no loader worker outlives its pass, and none can hold the process at exit."""

import multiprocessing
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import CONF_DIR, make_image_folder

from pipeline.data.datamodule import ImageDataModule
from pipeline.data.sources import build_index
from pipeline.data.transforms import Preprocess

PREPROCESS = Preprocess(12, (0.5,) * 3, (0.25,) * 3, "bicubic", 0.875)
ENV = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONPATH": str(Path(CONF_DIR).parent)}
EXIT_WITHIN_S = 10


def test_a_one_pass_loaders_workers_stop_when_its_pass_ends(tmp_path):
    index = build_index(make_image_folder(tmp_path / "images", per_class=6, size=16), 0.25, 0.25, 0)
    others = set(multiprocessing.active_children())  # e.g. a process pool another test left
    loader = ImageDataModule(index, PREPROCESS, [], 2, num_workers=2).eval_dataloader("test")
    assert sum(len(y) for _, y in loader) > 0
    left = set(multiprocessing.active_children()) - others
    assert not left, "the loader is still referenced, its workers must not be"


LEFTOVER_WORKERS = """
import sys
from pathlib import Path
import pipeline.__main__ as entry
from pipeline.data.datamodule import ImageDataModule
from pipeline.data.sources import build_index
from pipeline.data.transforms import Preprocess

index = build_index(Path({root!r}), 0.25, 0.25, 0)
preprocess = Preprocess(12, (0.5,) * 3, (0.25,) * 3, "bicubic", 0.875)
loader = ImageDataModule(index, preprocess, [], 2, 2).train_dataloader()  # persistent, ignoring SIGTERM
batches = iter(loader)
next(batches)
sys.argv = ["pipeline", "--help"]
entry.main()  # returns after the help text, through the exit path of every run
print("main returned", flush=True)
"""


def test_the_cli_exits_with_loader_workers_still_alive(tmp_path):
    """Loader workers ignore SIGTERM; multiprocessing's exit handler sends SIGTERM and waits for them: the
    entry point must not leave any alive for it (with gc frozen, nothing else collects their loader)."""
    root = make_image_folder(tmp_path / "images", per_class=6, size=16)
    script = LEFTOVER_WORKERS.format(root=str(root))
    try:
        command = [sys.executable, "-c", script]
        done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the process was still alive 60 s after its work ended")
    assert done.returncode == 0 and "main returned" in done.stdout, done.stderr[-2000:]


def test_a_run_with_loader_workers_exits_right_after_its_summary(tmp_path):
    """train and export (its parity pass over the val split) with two loader workers each."""
    root = make_image_folder(tmp_path / "images", per_class=8, size=16)
    command = [
        sys.executable, "-m", "pipeline", "data=folder", f"data.root={root}",
        f"output_dir={tmp_path / 'out'}", f"tracking.dir={tmp_path / 'mlruns'}",
        f"data.cache_dir={tmp_path / 'cache'}", "trainer=cpu",
        "data.audit=false", "stages=[train,export]", "model=simple_cnn", "model.kwargs.channels=[4,8]",
        "data.image_size=16", "data.batch_size=8", "data.num_workers=2", "trainer.max_epochs=1",
        "export.quantize=none", "export.latency_runs=2", "trainer.enable_progress_bar=false",
    ]  # fmt: skip
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    summary_at: list[float] = []

    def read() -> None:  # in a thread: a hung run's workers would keep the pipe open
        for line in process.stdout:
            if "] finished in " in line:
                summary_at.append(time.monotonic())

    threading.Thread(target=read, daemon=True).start()
    try:
        code = process.wait(timeout=300)
    finally:
        process.kill()
    assert code == 0 and summary_at, "the run did not finish"
    assert time.monotonic() - summary_at[0] < EXIT_WITHIN_S
