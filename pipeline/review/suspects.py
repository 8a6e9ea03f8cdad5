"""What a review shows: one run's suspects (the data stage's audit tables), the images the run indexed and
the decisions already made, read from MLflow. Only files of that run are read."""

import csv
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.data import decisions as decisions_file
from pipeline.errors import PipelineError
from pipeline.tracking import resolve_tracking_uri

KINDS = {"label_issues": "suspected label issue", "outliers": "outlier", "quality": "poor image"}
SEARCHED = 50  # the newest parent runs searched for one with an audit, when no run is named


@dataclass
class Suspect:
    path: str
    kind: str  # label_issues, outliers or quality (pipeline.data.audit.COLUMNS)
    label: str  # the given label
    split: str
    score: float
    suggested: str | None = None  # label_issues: the class the audit's classifier prefers
    issues: list[str] = field(default_factory=list)  # quality: what the image measured poorly on
    neighbours: list[str] = field(default_factory=list)  # the nearest images, nearest first


@dataclass
class ReviewRun:
    run_id: str
    root: str  # the data root the decisions' paths are relative to
    classes: list[str]
    labels: dict[str, str]  # every image the run indexed -> its label: the only files the page may serve
    suspects: list[Suspect]
    decisions_path: Path  # where this review saves, and what it started from
    checkpoint: Path | None = None  # the model the run trained, if it is still there (Grad-CAM)


def open_run(uri: str | None, store_dir: str, run_id: str | None, out: Path | None) -> ReviewRun:
    """The run `run_id` (else the newest with an audit) with its suspects; decisions go under `out` (else the
    run's output folder, review/), starting from the ones saved there or logged to the run."""
    client = MlflowClient(resolve_tracking_uri(uri, store_dir))
    run_id = run_id or newest_audited(client)
    data_run = stage_run(client, run_id, "data")
    local = Path(client.download_artifacts(data_run.info.run_id, "audit"))
    labels, classes = indexed(Path(client.download_artifacts(data_run.info.run_id, "index.csv")))
    output = Path(client.get_run(run_id).data.params.get("output_dir", "."))
    target = decisions_target(client, run_id, out or output / "review")
    checkpoint = output / "checkpoints" / "best.ckpt"
    return ReviewRun(
        run_id,
        data_run.data.params.get("data.root", ""),
        classes,
        labels,
        read_suspects(local, labels),
        target,
        checkpoint if checkpoint.is_file() else None,
    )


def decisions_target(client: MlflowClient, run_id: str, folder: Path) -> Path:
    """folder/decisions.yaml, copied from the run's logged review when a review made elsewhere left one."""
    target = folder / decisions_file.FILE_NAME
    logged = decisions_file.ARTIFACT
    if not target.is_file() and logged in {a.path for a in client.list_artifacts(run_id, "review")}:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(client.download_artifacts(run_id, logged), target)
    return target


def newest_audited(client: MlflowClient) -> str:
    """The newest parent run whose data stage wrote the audit's tables."""
    for run in client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        "tags.pid != ''",
        order_by=["attributes.start_time DESC"],
        max_results=SEARCHED,
    ):
        if "mlflow.parentRunId" in run.data.tags:
            continue
        try:
            data_run = stage_run(client, run.info.run_id, "data")
        except PipelineError:
            continue
        if any(a.path == "audit" for a in client.list_artifacts(data_run.info.run_id)):
            return run.info.run_id
    raise PipelineError(
        "no run with a data audit in this MLflow store: run the data stage first (make train)"
    )


def stage_run(client: MlflowClient, run_id: str, stage: str):
    """The stage run `stage` of pipeline run `run_id`."""
    try:
        parent = client.get_run(run_id)
    except MlflowException as err:
        raise PipelineError(f"no MLflow run {run_id} in this store") from err
    children = client.search_runs(
        [parent.info.experiment_id],
        f"tags.mlflow.parentRunId = '{run_id}' and attributes.run_name = '{stage}'",
    )
    if not children:
        raise PipelineError(f"run {run_id} has no {stage} stage: review a run whose data stage ran")
    return children[0]


def indexed(index_csv: Path) -> tuple[dict[str, str], list[str]]:
    """Every indexed image's label, and the class names in label order, from the run's index.csv."""
    with index_csv.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    classes = {int(r["label"]): r["class_name"] for r in rows}
    return {r["path"]: r["class_name"] for r in rows}, [classes[i] for i in sorted(classes)]


def read_suspects(audit: Path, labels: dict[str, str]) -> list[Suspect]:
    """The audit's rows, each kind worst first; a poor image's issues in one row; only indexed images."""
    rows = {name: table(audit / f"{name}.csv") for name in KINDS}
    suspects = [
        Suspect(r["path"], "label_issues", r["given_label"], r["split"], float(r["score"]),
                suggested=r["suggested_label"], neighbours=near(r))
        for r in rows["label_issues"]
    ] + [
        Suspect(r["path"], "outliers", r["label"], r["split"], float(r["score"]), neighbours=near(r))
        for r in rows["outliers"]
    ]  # fmt: skip
    poor: dict[str, Suspect] = {}
    for r in rows["quality"]:
        suspect = poor.setdefault(
            r["path"], Suspect(r["path"], "quality", labels.get(r["path"], ""), r["split"], float(r["score"]))
        )
        suspect.issues.append(r["issue"])
    return [s for s in [*suspects, *poor.values()] if s.path in labels]


def near(row: dict) -> list[str]:
    """The audit's neighbours of a row (a JSON list; absent in tables of older runs)."""
    return json.loads(row.get("neighbours") or "[]")


def table(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
