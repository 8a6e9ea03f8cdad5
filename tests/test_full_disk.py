"""A full disk or an impossible run folder ends the run in one line, exit 2, its MLflow run FAILED, and what
was written before intact."""

import errno
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import CONF_DIR, make_image_folder
from mlflow.tracking import MlflowClient

from pipeline.__main__ import error_line
from pipeline.atomic import written_in_place
from pipeline.models import checkpoint_io
from pipeline.models.checkpoint_io import AtomicCheckpointIO

ENV = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONPATH": str(Path(CONF_DIR).parent)}


def test_a_checkpoint_the_full_disk_cut_short_is_no_space_and_the_previous_one_stays(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"epoch": 1}, path)

    def short_write(obj, target):  # what torch's zip writer does when the disk fills mid-file
        Path(target).write_bytes(b"PK\x03\x04 cut")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 2833344 vs 2833240")

    monkeypatch.setattr(checkpoint_io.torch, "save", short_write)
    monkeypatch.setattr(checkpoint_io.shutil, "disk_usage", lambda folder: SimpleNamespace(free=0))
    with pytest.raises(OSError) as refused:
        AtomicCheckpointIO().save_checkpoint({"epoch": 2}, path)
    assert error_line(refused.value) == f"error: no space left on {path.parent} while writing {path}"
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no partial file left


def cli(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "pipeline", "data=folder", f"data.root={make_image_folder(tmp_path / 'im')}",
        f"tracking.dir={tmp_path / 'mlruns'}", f"data.cache_dir={tmp_path / 'cache'}", "trainer=cpu",
        "data.audit=false", "trainer.enable_progress_bar=false", *overrides,
    ]  # fmt: skip
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)


def test_an_impossible_run_folder_is_one_line_and_exit_2(tmp_path):
    done = cli(tmp_path, "hydra.run.dir=/proc/nope", "stages=[data]")
    expected = "error: cannot write /proc/nope: No such file or directory\n"
    assert (done.returncode, done.stderr) == (2, expected)


@pytest.fixture
def full_disk(tmp_path):
    """A 3 MB tmpfs (needs root; skipped where mounting is not allowed)."""
    mount = tmp_path / "full"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_run_whose_folder_fills_up_fails_in_one_line_and_marks_its_run_failed(tmp_path, full_disk):
    done = cli(
        tmp_path, f"hydra.run.dir={full_disk / 'run'}", "stages=[data,train]", "model=resnet18",
        "data.image_size=16", "trainer.max_epochs=1", "trainer.limit_train_batches=1",
    )  # fmt: skip
    checkpoints = full_disk / "run" / "checkpoints"
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.splitlines()[-1].startswith(f"error: no space left on {checkpoints} while writing")
    assert "Traceback" not in done.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert {r.info.run_name: r.info.status for r in runs if r.info.run_name in ("data", "train")} == {
        "data": "FINISHED",
        "train": "FAILED",
    }
    assert {r.info.status for r in runs if "stage" not in r.data.tags} == {"FAILED"}  # the parent
    assert (full_disk / "run" / "index.csv").stat().st_size > 0  # the data stage's files stay


def test_a_write_that_fails_leaves_the_previous_file_whole_and_no_partial_one(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous")
    with pytest.raises(OSError) as raised, written_in_place(target) as partial:
        partial.write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device", str(partial))
    assert raised.value.filename == str(target)  # the error names the file asked for, not its temporary name
    assert target.read_bytes() == b"previous" and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    with written_in_place(target) as partial:
        partial.write_bytes(b"new")
    assert target.read_bytes() == b"new"


def fill(folder: Path, leave_kb: int) -> None:
    """Fill the file system of `folder` up to `leave_kb` kilobytes free."""
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    (folder / "filler").write_bytes(b"\0" * max(0, free - leave_kb * 1024))


def test_a_full_cache_folder_is_one_line_naming_its_database(tmp_path, full_disk):
    fill(full_disk, leave_kb=8)
    done = cli(tmp_path, f"data.cache_dir={full_disk / 'cache'}", "stages=[data]")
    assert done.returncode == 2, done.stderr[-3000:]
    cache = full_disk / "cache"
    assert (
        done.stderr.splitlines()[-1]
        == f"error: no space left on {cache} while writing {cache}/inspection.sqlite"
    )
    assert "Traceback" not in done.stderr


def test_a_store_that_fills_mid_run_is_one_line_and_its_runs_end_when_there_is_room(tmp_path, full_disk):
    """SQLite and the artifact copies fail without naming a file, and the run cannot even be marked FAILED:
    one error line names the store, a warning says the run stays open, and the next run closes it."""
    store = full_disk / "mlruns"
    first = cli(tmp_path, f"tracking.dir={store}", "stages=[data]")
    assert first.returncode == 0, first.stderr[-3000:]
    fill(full_disk, leave_kb=150)
    done = cli(
        tmp_path, f"tracking.dir={store}", "stages=[data,train]", "model=simple_cnn", "data.image_size=16",
        "trainer.max_epochs=3",
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].startswith(f"error: no space left on {store}")
    assert len(done.stderr.splitlines()) == 1, done.stderr
    left_open = "could not be marked FAILED (database or disk is full)" in done.stdout
    (full_disk / "filler").unlink()
    again = cli(tmp_path, f"tracking.dir={store}", "stages=[data]")
    assert again.returncode == 0, again.stderr[-3000:]
    assert left_open == ("left RUNNING by a process that is gone: marked KILLED" in again.stdout)
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert "RUNNING" not in {r.info.status for r in runs}
