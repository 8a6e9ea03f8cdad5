"""A real MLflow tracking server (scripts/mlflow_server.py) on a free loopback port: the pipeline records
through it, parallel runs too, and the server stops as a whole process group. A server that is down is
one clear error, at once."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from conftest import CONF_DIR, experiments_in, free_port, load_script
from mlflow.tracking import MlflowClient

from pipeline import process_group
from pipeline.errors import PipelineError
from pipeline.runner import run


def test_pipeline_records_through_the_server(tracking_server, make_cfg, image_folder, tmp_path):
    url = tracking_server
    run(make_cfg("stages=[data]", f"tracking.uri={url}", "tracking.experiment=served", root=image_folder))

    client = MlflowClient(url)
    experiment = client.get_experiment_by_name("served")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # stored by the server, not here
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    (child,) = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert (parent.info.status, child.info.run_name, child.info.status) == ("FINISHED", "data", "FINISHED")
    assert parent.data.metrics["data/num_images"] == 36 and child.data.metrics["data/num_classes"] == 3
    assert "config.yaml" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    stats = mlflow.artifacts.download_artifacts(
        run_id=child.info.run_id, artifact_path="stats.json", tracking_uri=url, dst_path=str(tmp_path)
    )
    assert '"num_images": 36' in Path(stats).read_text()


def test_server_stops_as_a_whole_process_group(tmp_path):
    """Its own server: stopping the module's one would leave later tests without it."""
    script, port = load_script("mlflow_server"), free_port()
    proc = script.start(tmp_path, port=port)
    url = f"http://127.0.0.1:{port}"
    try:
        process_group.wait_ready(url, proc)
    finally:
        process_group.stop(proc)
    assert proc.returncode is not None and not process_group.group_alive(proc.pid)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=2).close()


def test_a_server_that_is_down_is_one_clear_error_at_once(make_cfg, tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(PipelineError, match=f"MLflow tracking server {url} is not reachable"):
        run(make_cfg("stages=[data]", f"tracking.uri={url}"))
    assert time.monotonic() - started < 10  # MLflow's own HTTP retries would take minutes
    assert experiments_in(tmp_path) == []  # no silent fallback to the embedded store


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("nohup", [False, True], ids=["terminal", "nohup"])
def test_a_closed_terminal_stops_the_server_unless_started_with_nohup(tmp_path, nohup):
    """`make server` as a terminal runs it: SIGHUP when the terminal closes ends the script and the server's
    own process group (in a session of its own, it hears no SIGHUP); under nohup it keeps serving."""
    port, script = free_port(), Path(CONF_DIR).parent / "scripts" / "mlflow_server.py"
    env = {**os.environ, "PYTHONPATH": str(Path(CONF_DIR).parent)}
    ignore = signal.SIG_IGN if nohup else signal.SIG_DFL
    proc = subprocess.Popen(
        [sys.executable, str(script), "--port", str(port), "--dir", str(tmp_path / "server")],
        env=env, start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGHUP, ignore),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        process_group.wait_ready(f"http://127.0.0.1:{port}", proc)
        os.kill(proc.pid, signal.SIGHUP)
        if nohup:
            time.sleep(2)
            assert proc.poll() is None and listening(port)
            os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert not listening(port)  # the server's group went with it
    finally:
        process_group.stop(proc)
