"""What a pipeline run writes into MLflow, through one Tracker: the store it opens (checked before a run
starts), params, metrics, artifacts, datasets and the model, each write uninterrupted and a full disk named
(pipeline.run_lifecycle starts and ends the runs; run_story builds the datasets and words they hold; export/
logs and serves the model through MLflow's pyfunc).

One parent run per pipeline run holds the resolved config, git and command-line tags and the headline
metrics of every stage; one nested child run per stage holds that stage's params, metrics and artifacts.
"""

import errno
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.atomic import one_at_a_time
from pipeline.errors import PipelineError, sqlite_full
from pipeline.plan import RESOLVED_LATER
from pipeline.signals import dataset_entity, uninterrupted

log = logging.getLogger("pipeline")

PARAM_VALUE_LIMIT = 6000  # MLflow's limit on a param value's length
SERVER_CHECK_TIMEOUT_S = 5  # a down server fails here, not after MLflow's minutes of HTTP retries
# MLflow 3's UI opens an experiment on its GenAI view (traces) unless this tag says it holds model training
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# The runs table a user compares runs in: pipeline (parent) runs only, best test accuracy first, the headline
# columns. The UI (3.17) reads a view from an experiment tag `mlflow.sharedViewState.<key>` when its URL has
# `viewStateShareKey=<key>`, as its own "copy share link" writes it; column ids are `<kind>.\`<name>\``.
RUNS_VIEW_KEY = "headline"
RUNS_VIEW = {
    "searchFilter": "tags.pid != ''",  # set on parent runs only
    "orderByKey": "metrics.`test/acc`",
    "orderByAsc": False,
    "selectedColumns": [
        "params.`model.name`",
        "params.`data.name`",
        "params.`data.root`",
        "attributes.`Duration`",
        "metrics.`test/acc`",
        "metrics.`test/acc_ci_low`",
        "metrics.`test/acc_ci_high`",
        "metrics.`test/f1_macro`",
        "metrics.`test/ece`",
        "metrics.`val/acc`",
        "metrics.`train/epochs`",
    ],  # fmt: skip
}
VIEW_TAGS = {f"mlflow.sharedViewState.{RUNS_VIEW_KEY}": json.dumps(RUNS_VIEW)}
DESCRIPTION_TAG = "mlflow.note.content"  # what the run page shows as its description (markdown)
EXPERIMENT_NOTE = "Image classification: one parent run per pipeline run, one child run per stage."
UI_PORT = 5000  # make ui's default


def resolve_tracking_uri(uri: str | None, store_dir: str) -> str:
    """MLFLOW_TRACKING_URI wins, then tracking.uri, then the embedded SQLite store under store_dir."""
    env_uri = os.environ.get("MLFLOW_TRACKING_URI")
    if env_uri:
        return env_uri
    if uri:
        return uri
    return f"sqlite:///{Path(store_dir).resolve() / 'mlflow.db'}"


def run_artifact(uri: str | None, store_dir: str, run_id: str, artifact: str, target: Path) -> Path:
    """A file logged to run `run_id`, downloaded under `target`."""
    client = MlflowClient(resolve_tracking_uri(uri, store_dir))
    try:
        client.get_run(run_id)
        target.mkdir(parents=True, exist_ok=True)
        return Path(client.download_artifacts(run_id, artifact, str(target)))
    except (MlflowException, OSError) as err:  # no such run, or no such file in it
        reason = (str(err).splitlines() or [""])[0][:200]
        raise PipelineError(f"no {artifact} in MLflow run {run_id}: {reason}") from err


def _use_tracking_uri(uri: str) -> None:
    """Point MLflow's fluent API at `uri` without leaving it in MLFLOW_TRACKING_URI: mlflow.set_tracking_uri
    writes the variable, which would then win over tracking.dir/uri for every later run in this process
    (Hydra's in-process multirun jobs, tests)."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


def check_reachable(uri: str) -> None:
    """A tracking server must answer before a run starts; any HTTP reply counts (auth is MLflow's job)."""
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=SERVER_CHECK_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return
    except OSError as err:  # refused, unknown host, timed out (URLError is an OSError)
        reason = getattr(err, "reason", err)
        raise PipelineError(
            f"MLflow tracking server {uri} is not reachable ({reason}): start it with `make server` "
            "or set tracking.uri"
        ) from err


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


def download_best_checkpoint(run_id: str, uri: str, dst: Path) -> Path:
    """The train stage's `checkpoints/best.ckpt`, given a pipeline (parent) run or its train run."""
    client = MlflowClient(uri)
    try:
        run = client.get_run(run_id)
    except mlflow.exceptions.MlflowException as err:
        raise PipelineError(f"from_run: no MLflow run {run_id} at {uri}") from err
    train_id = run_id
    if run.data.tags.get("stage") != "train":
        found = client.search_runs(
            [run.info.experiment_id],
            f"tags.mlflow.parentRunId = '{run_id}' and tags.stage = 'train'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not found:
            raise PipelineError(f"from_run: run {run_id} has no train stage run; pass a run that trained")
        train_id = found[0].info.run_id
    try:
        path = mlflow.artifacts.download_artifacts(
            run_id=train_id, artifact_path="checkpoints/best.ckpt", dst_path=str(dst), tracking_uri=uri
        )
    except mlflow.exceptions.MlflowException as err:
        raise PipelineError(
            f"from_run: train run {train_id} logged no checkpoints/best.ckpt (did training finish?)"
        ) from err
    return Path(path)


def log_inputs_racing(client: MlflowClient, run_id: str, inputs: list, attempts: int = 4) -> None:
    """client.log_inputs, tried again when another run stored the same dataset at the same moment: MLflow
    inserts a dataset the first time any run logs it, and of two jobs of a sweep doing so at once (seen on
    SLURM) one gets a UNIQUE-constraint error; by the next try the dataset is there and is reused."""
    for attempt in range(attempts):
        try:
            return client.log_inputs(run_id, inputs)
        except MlflowException as err:
            if "UNIQUE constraint failed" not in str(err) or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def artifact_folder() -> str:
    """Where the active run's artifacts go, as a local path where they are local."""
    uri = mlflow.get_artifact_uri()
    return urllib.parse.unquote(urllib.parse.urlparse(uri).path) if uri.startswith("file:") else uri


class Tracker:
    def __init__(self, experiment: str, uri: str | None = None, store_dir: str = "mlruns"):
        self.uri = resolve_tracking_uri(uri, store_dir)
        if self.uri.startswith(("http://", "https://")):
            check_reachable(self.uri)
        _use_tracking_uri(self.uri)
        try:
            with one_at_a_time(self.uri):
                self.client = MlflowClient(self.uri)  # creates the tables of a new store
                self.experiment_id = self._experiment_id(experiment)
        except PipelineError:
            raise
        except Exception as err:  # any store MLflow cannot open (unknown scheme, no database): bad input
            reason = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:200]}"
            raise PipelineError(f"cannot use the MLflow store {self.uri}: {reason}") from err
        self.parent_id: str | None = None

    def _experiment_id(self, name: str) -> str:
        """The experiment's id, created when new; one made by an older version gets the training kind."""
        existing = self.client.get_experiment_by_name(name)
        if existing is not None:
            note = existing.tags.get(DESCRIPTION_TAG, EXPERIMENT_NOTE)
            wanted = {**EXPERIMENT_KIND, **VIEW_TAGS, DESCRIPTION_TAG: note}
            for key, value in wanted.items():  # a description someone wrote is kept
                if existing.tags.get(key) != value:
                    self.client.set_experiment_tag(existing.experiment_id, key, value)
            return existing.experiment_id
        artifacts = None  # a server's store keeps its own; MLflow puts other stores' in ./mlruns of the cwd
        if self.uri.startswith("sqlite:///"):  # beside the database, wherever MLFLOW_TRACKING_URI put it
            artifacts = (Path(self.uri.removeprefix("sqlite:///")).resolve().parent / "artifacts").as_uri()
        try:
            tags = {**EXPERIMENT_KIND, **VIEW_TAGS, DESCRIPTION_TAG: EXPERIMENT_NOTE}
            created = self.client.create_experiment(name, artifact_location=artifacts, tags=tags)
        except mlflow.exceptions.MlflowException:  # created meanwhile by a parallel run
            return self.client.get_experiment_by_name(name).experiment_id
        if artifacts is None and not self.uri.startswith(("http://", "https://")):
            location = self.client.get_experiment(created).artifact_location
            log.info(
                "experiment %s created: its artifacts go to %s (MLflow's default for this store)",
                name,
                location,
            )
        return created

    @contextmanager
    def store_write(self) -> Iterator[None]:
        """An MLflow write, uninterrupted (pipeline.signals), with a full disk named by its file: SQLite says
        only "database or disk is full", and a local artifact copy raises ENOSPC without a file name."""
        with uninterrupted():
            try:
                yield
            except Exception as err:
                if (named := self._full_disk_named(err)) is None:
                    raise
                raise named from err

    def _full_disk_named(self, err: BaseException | None) -> OSError | None:
        while err is not None:
            if sqlite_full(err) and self.uri.startswith("sqlite:///"):
                return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.uri.removeprefix("sqlite:///"))
            if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT) and not err.filename:
                return OSError(err.errno, err.strerror, artifact_folder())
            err = err.__cause__ or err.__context__
        return None

    def logged_epochs(self) -> set[int]:
        """The steps of `train/loss` the active (stage) run already holds."""
        run = mlflow.active_run()
        if run is None:
            return set()
        return {m.step for m in self.client.get_metric_history(run.info.run_id, "train/loss")}

    def set_tags(self, tags: dict[str, str]) -> None:
        with self.store_write():
            mlflow.set_tags(tags)

    def log_params(self, params: dict[str, Any]) -> None:
        with self.store_write():
            mlflow.log_params(flatten(params))

    def log_resolved(self, values: dict[str, Any]) -> None:
        """The values `auto` settings resolved to, on the parent run (see RESOLVED_LATER)."""
        if self.parent_id is None:
            return
        logged = self.client.get_run(self.parent_id).data.params
        fresh = {k: str(v) for k, v in values.items() if k in RESOLVED_LATER and k not in logged}
        with self.store_write():
            for key, value in fresh.items():
                self.client.log_param(self.parent_id, key, value)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None, headline: bool = False) -> None:
        """Log to the active stage run; headline metrics are repeated on the parent for comparison."""
        values = {k: float(v) for k, v in metrics.items()}
        with self.store_write():
            mlflow.log_metrics(values, step=step)
            if headline and self.parent_id is not None:
                for key, value in values.items():
                    self.client.log_metric(self.parent_id, key, value, step=step or 0)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        with self.store_write():
            mlflow.log_artifact(str(path), artifact_path)

    def log_figure(self, figure, name: str) -> None:
        with self.store_write():
            mlflow.log_figure(figure, name)

    def log_dict(self, data: dict[str, Any], name: str) -> None:
        with self.store_write():
            mlflow.log_dict(data, name)

    def log_text(self, text: str, name: str) -> None:
        with self.store_write():
            mlflow.log_text(text, name)

    def run_name(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.run_name

    def ui_base(self) -> str:
        return self.uri if self.uri.startswith(("http://", "https://")) else f"http://127.0.0.1:{UI_PORT}"

    def run_page(self, run_id: str) -> str:
        """The run's page in the MLflow UI (make ui for the embedded store), in its model-training view: a
        browser that has not chosen a view gets the GenAI pages, whatever the experiment's kind."""
        return (
            f"{self.ui_base()}/#/experiments/{self.experiment_id}/runs/{run_id}?workflowType=machine_learning"
        )

    def runs_page(self) -> str:
        """The experiment's runs table in the RUNS_VIEW: pipeline runs, best first, headline columns."""
        return (
            f"{self.ui_base()}/#/experiments/{self.experiment_id}/runs?workflowType=machine_learning"
            f"&viewStateShareKey={RUNS_VIEW_KEY}"
        )

    def describe(self, run_id: str, note: str) -> None:
        """Replace the parent run's description (markdown)."""
        with self.store_write():
            self.client.set_tag(run_id, DESCRIPTION_TAG, note)

    def log_datasets(self, datasets: dict[str, Any]) -> None:
        """mlflow.data datasets by context (train, val, test) as inputs of the stage run and the parent."""
        from mlflow.entities import DatasetInput, InputTag

        # mlflow.log_input, the public call, logs to the active run only
        inputs = [
            DatasetInput(dataset_entity(d), [InputTag("mlflow.data.context", ctx)])
            for ctx, d in datasets.items()
        ]
        with self.store_write():
            for run_id in filter(None, (mlflow.active_run().info.run_id, self.parent_id)):
                log_inputs_racing(self.client, run_id, inputs)

    def log_model(self, log: Callable[[], Any]):
        """A model logged in the stage run by `log` (an MLflow log_model call, returning its ModelInfo),
        linked to the parent run as its output so the parent's page lists it: (model URI, registered version
        or None)."""
        from mlflow.entities import LoggedModelOutput

        with self.store_write():
            info = log()
            if self.parent_id is not None:
                self.client.log_outputs(self.parent_id, [LoggedModelOutput(info.model_id, 0)])
        return info.model_uri, info.registered_model_version
