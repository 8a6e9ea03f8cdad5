"""The only module that talks to MLflow.

One parent run per pipeline run holds the resolved config, git and command-line tags and the headline
metrics of every stage; one nested child run per stage holds that stage's params, metrics and artifacts.
A run that ends by an exception is marked FAILED, never left RUNNING.
"""

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

PARAM_VALUE_LIMIT = 6000  # MLflow's limit on a param value's length


def resolve_tracking_uri(uri: str | None, store_dir: str) -> str:
    """MLFLOW_TRACKING_URI wins, then tracking.uri, then the embedded SQLite store under store_dir."""
    env_uri = os.environ.get("MLFLOW_TRACKING_URI")
    if env_uri:
        return env_uri
    if uri:
        return uri
    return f"sqlite:///{Path(store_dir).resolve() / 'mlflow.db'}"


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{'model': {'name': 'x'}} -> {'model.name': 'x'}; values become strings MLflow accepts."""
    out: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = str(value)[:PARAM_VALUE_LIMIT]
    return out


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def git_tags() -> dict[str, str]:
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {}
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {"git.commit": commit, "git.dirty": str(bool(dirty))}


class Tracker:
    def __init__(self, experiment: str, uri: str | None = None, store_dir: str = "mlruns"):
        self.uri = resolve_tracking_uri(uri, store_dir)
        mlflow.set_tracking_uri(self.uri)
        self.client = MlflowClient(self.uri)
        self.experiment_id = self._experiment_id(experiment, store_dir)
        self.parent_id: str | None = None

    def _experiment_id(self, name: str, store_dir: str) -> str:
        existing = self.client.get_experiment_by_name(name)
        if existing is not None:
            return existing.experiment_id
        artifacts = None
        if self.uri.startswith("sqlite:") and self.uri == resolve_tracking_uri(None, store_dir):
            artifacts = (Path(store_dir).resolve() / "artifacts").as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=artifacts)
        except mlflow.exceptions.MlflowException:  # created meanwhile by a parallel run
            return self.client.get_experiment_by_name(name).experiment_id

    @contextmanager
    def pipeline_run(self, config: dict[str, Any], config_yaml: str, run_name: str | None) -> Iterator[str]:
        with mlflow.start_run(experiment_id=self.experiment_id, run_name=run_name) as run:
            self.parent_id = run.info.run_id
            mlflow.set_tags({**git_tags(), "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])})
            mlflow.log_params(flatten(config))
            mlflow.log_text(config_yaml, "config.yaml")
            try:
                yield run.info.run_id
            finally:
                self.parent_id = None

    @contextmanager
    def stage_run(self, stage: str) -> Iterator[str]:
        with mlflow.start_run(
            experiment_id=self.experiment_id, run_name=stage, nested=True, tags={"stage": stage}
        ) as run:
            yield run.info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        mlflow.log_params(flatten(params))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None, headline: bool = False) -> None:
        """Log to the active stage run; headline metrics are repeated on the parent for comparison."""
        values = {k: float(v) for k, v in metrics.items()}
        mlflow.log_metrics(values, step=step)
        if headline and self.parent_id is not None:
            for key, value in values.items():
                self.client.log_metric(self.parent_id, key, value, step=step or 0)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        mlflow.log_artifact(str(path), artifact_path)

    def log_figure(self, figure, name: str) -> None:
        mlflow.log_figure(figure, name)

    def log_dict(self, data: dict[str, Any], name: str) -> None:
        mlflow.log_dict(data, name)

    def log_text(self, text: str, name: str) -> None:
        mlflow.log_text(text, name)
