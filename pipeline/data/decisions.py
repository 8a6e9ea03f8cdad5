"""Review decisions (`make review`): what a user decided about the audit's suspects, kept as a small
versioned YAML file beside the reviewed run and applied to the next run's index (`data.decisions`). The
user's images and folders are never touched: a relabel or a drop lives in this file only.

    version: 1
    run: <the reviewed run's id>
    root: <the data root the paths are relative to>
    decisions:
      train/cat/0001.jpg: {action: relabel, label: dog, kind: label_issues}
      train/cat/0002.jpg: {action: drop, kind: outliers}
      train/dog/0003.jpg: {action: keep, kind: label_issues}
"""

import hashlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import yaml

from pipeline.atomic import written_in_place
from pipeline.errors import PipelineError
from pipeline.tasks import MULTILABEL

VERSION = 1
ACTIONS = ("relabel", "drop", "keep")
KINDS = ("label_issues", "outliers", "quality")  # the audit's lists (pipeline.data.audit.COLUMNS)
FILE_NAME = "decisions.yaml"
ARTIFACT = f"review/{FILE_NAME}"  # where a review logs the file to the reviewed run in MLflow


@dataclass(frozen=True)
class Decision:
    action: str  # relabel, drop or keep
    kind: str  # the audit list the image was reviewed in
    label: str | None = None  # relabel: the class the image belongs to


@dataclass(frozen=True)
class Decisions:
    run: str  # the reviewed run
    root: str  # the data root the paths are relative to
    by_path: dict[str, Decision]  # relative path -> decision

    def digest(self) -> str:
        """A short digest of the decisions themselves: the dataset's version in MLflow."""
        text = yaml.safe_dump(self.as_file()["decisions"])
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def as_file(self) -> dict:
        """The file's content (the module docstring's form)."""
        entries = {
            p: {k: v for k, v in asdict(d).items() if v is not None} for p, d in sorted(self.by_path.items())
        }
        return {"version": VERSION, "run": self.run, "root": self.root, "decisions": entries}

    def counts(self) -> dict[str, int]:
        return {action: sum(d.action == action for d in self.by_path.values()) for action in ACTIONS}


def relative(path: str, root: str) -> str:
    """An indexed image's path as the decisions file names it: relative to the data root when under it."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return path


def load(path: Path) -> Decisions:
    """The decisions in `path`; a file that is not one says why in one line (PipelineError)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise PipelineError(f"data.decisions: cannot read {path}: {str(err).splitlines()[0]}") from err
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise PipelineError(f"data.decisions: {path} is not a decisions file (version: {VERSION} expected)")
    entries = data.get("decisions") or {}
    if not isinstance(entries, dict):
        raise PipelineError(f"data.decisions: {path}: `decisions` must map image paths to decisions")
    by_path = {str(p): parsed(p, e) for p, e in entries.items()}
    return Decisions(str(data.get("run", "")), str(data.get("root", "")), by_path)


def parsed(image: str, entry) -> Decision:
    """One entry of the file, checked: a known action and kind, a label exactly when relabelling."""
    if not isinstance(entry, dict) or entry.get("action") not in ACTIONS:
        raise PipelineError(f"data.decisions: {image}: action must be one of {', '.join(ACTIONS)}")
    kind, label = entry.get("kind", "label_issues"), entry.get("label")
    if kind not in KINDS:
        raise PipelineError(f"data.decisions: {image}: kind must be one of {', '.join(KINDS)}")
    if (entry["action"] == "relabel") != (label is not None):
        raise PipelineError(f"data.decisions: {image}: a label goes with action relabel, and only with it")
    return Decision(entry["action"], kind, None if label is None else str(label))


def save(path: Path, decisions: Decisions) -> None:
    """Write `decisions` to `path` atomically, merged into what the file already holds: a second review of
    the same run adds to the first, the newer decision on an image winning."""
    merged = dict(load(path).by_path) if path.is_file() else {}
    merged.update(decisions.by_path)
    text = yaml.safe_dump(replace(decisions, by_path=merged).as_file(), sort_keys=False, allow_unicode=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with written_in_place(path) as partial:
        partial.write_text(text, encoding="utf-8")


def apply(index, decisions: Decisions):
    """The index with the relabels and drops applied (records of pipeline.data.sources.DatasetIndex), and
    the decisions that name no indexed image (the folder changed since the review)."""
    from pipeline.data.sources import require_train_images

    classes = {name: i for i, name in enumerate(index.class_names)}
    if index.task == MULTILABEL and any(d.action == "relabel" for d in decisions.by_path.values()):
        raise PipelineError("data.decisions: a relabel names one class; this folder's images have several")
    for image, decision in decisions.by_path.items():
        if decision.action == "relabel" and decision.label not in classes:
            raise PipelineError(
                f"data.decisions: {image}: relabel to {decision.label!r}, not a class of this folder "
                f"({', '.join(index.class_names)})"
            )
    records, seen = [], set()
    for record in index.records:
        key = relative(record.path, index.root)
        decision = decisions.by_path.get(key)
        seen.add(key)
        if decision is None or decision.action == "keep":
            records.append(record)
        elif decision.action == "relabel":
            records.append(replace(record, label=classes[decision.label]))
    unmatched = sorted(set(decisions.by_path) - seen)
    return require_train_images(replace(index, records=records)), unmatched


def kept(decisions: Decisions | None, root: str) -> set[tuple[str, str]]:
    """(absolute path, audit kind) of every image a reviewer kept: the audit does not flag it there again."""
    if decisions is None:
        return set()
    return {
        (str(Path(root) / p) if not Path(p).is_absolute() else p, d.kind)
        for p, d in decisions.by_path.items()
        if d.action == "keep"
    }
