"""The lines that end every run: what ran and for how long, headline scores, where things are, what next."""

from pathlib import Path

from pipeline.errors import first_line
from pipeline.evaluation.conformal import APPROXIMATE_BELOW
from pipeline.progress import duration

SCORES = ("acc", "bal_acc", "map", "f1_macro")  # map: several labels an image, which have no accuracy


def _times(timings: dict[str, float]) -> str:
    return ", ".join(f"{stage} {duration(seconds)}" for stage, seconds in timings.items())


def with_interval(metrics: dict[str, float], key: str, spec: str = ".4f") -> str:
    """`0.9417 (95% CI 0.9125-0.9667)`, or the value alone when it has no interval."""
    low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
    interval = f" (95% CI {low:.4f}-{high:.4f})" if low is not None and high is not None else ""
    return f"{metrics[key]:{spec}}{interval}"


def _scores(metrics: dict[str, float], split: str) -> str | None:
    shown = [
        f"{name} {with_interval(metrics, f'{split}/{name}')}"
        for name in SCORES
        if f"{split}/{name}" in metrics
    ]
    if not shown:
        return None
    count = metrics.get(f"data/{split}_images")
    return f"{split}{f' ({count:.0f} images)' if count else ''}: {', '.join(shown)}"


SMOKE_NOTE = (
    "debug=smoke checked the plumbing (every stage ran), not a model: a few batches at 16 px, so the scores "
    "above mean nothing; `make train` (add data=folder data.root=<images>) trains a real one"
)


def finished(
    seconds: float, timings: dict[str, float], metrics: dict[str, float], output_dir: Path, run_id: str,
    run_page: str, onnx_path: Path | None, smoke: bool = False, runs_page: str | None = None,
) -> list[str]:  # fmt: skip
    """Test scores lead when there is a test split: val picked the checkpoint, so its scores flatter. A smoke
    run's scores come with what they are: a check of the plumbing, not of a model."""
    lines = [f"finished in {duration(seconds)} ({_times(timings)})"]
    scores = [s for s in (_scores(metrics, "test"), _scores(metrics, "val")) if s]
    if scores:
        lines.append("; ".join(scores))
    if "calib/images" in metrics:
        lines.append(trust_line(metrics, "test" if "test/acc" in metrics else "val"))
    if smoke:
        lines.append(SMOKE_NOTE)
    lines.append(f"outputs in {output_dir}; MLflow run {run_id}")
    if onnx_path:
        lines.append(f"next: make predict INPUT=<images> MODEL={onnx_path}  |  make serve (HTTP)")
    lines.append(f"this run in the MLflow UI (make ui): {run_page}")
    if runs_page:
        lines.append(f"compare runs (best test acc first, headline columns): {runs_page}")
    return lines


def trial_line(number: int, seconds: float, metrics: dict[str, float], run_id: str) -> str:
    """A sweep trial's one line: its val scores (test waits for the best trial) and its run."""
    scores = _scores(metrics, "val") or "no val scores"
    return f"trial {number} finished in {duration(seconds)}: {scores}; MLflow run {run_id}"


def trust_line(metrics: dict[str, float], split: str) -> str:
    """What the calibrate stage fitted on how many images, and what it gave on `split`."""
    n = int(metrics["calib/images"])
    temperature = metrics.get("calib/temperature", 1.0)
    parts = [f"temperature {temperature:.3f}" if temperature != 1.0 else "no temperature needed"]
    if "calib/conformal_threshold" in metrics:
        target = 1 - metrics["calib/conformal_alpha"]
        balanced = metrics.get("calib/conformal_balanced") == 1.0
        sets = (
            f"prediction sets hold every class of probability >= {metrics['calib/conformal_threshold']:.4g} "
            f"for {target:.0%} coverage{' of every class equally often' if balanced else ''}"
        )
        if f"{split}/conformal_coverage" in metrics:
            sets += f" ({split}: {metrics[f'{split}/conformal_coverage']:.1%})"
        effective = metrics.get("calib/conformal_effective_images", n)
        if effective < APPROXIMATE_BELOW:
            worth = f" worth {effective:.0f} once weighted by class" if balanced else ""
            sets += f", approximate: {n} images{worth} are too few to promise it (under {APPROXIMATE_BELOW})"
        parts.append(sets)
    if "calib/labels_answered" in metrics:
        answered = metrics["calib/labels_answered"]
        parts.append(f"an answer threshold a label ({answered:.2f} labels answered an image on those images)")
    if "calib/unknown_threshold" in metrics and f"{split}/unknown_rate" in metrics:
        parts.append(f"unknown answer for {metrics[f'{split}/unknown_rate']:.1%} of {split} images")
    fitted_on = "val images (no calib split)" if metrics.get("calib/on_val") else "calib images"
    return f"trust, fitted on {n} {fitted_on}: " + "; ".join(parts)


def failed(timings: dict[str, float], err: BaseException) -> str:
    """Which stage failed, after how long, and the first line of why."""
    stage = next(reversed(timings)) if timings else "start"
    why = first_line(err)
    done = {name: s for name, s in timings.items() if name != stage}
    before = f" (finished: {_times(done)})" if done else ""
    return f"stage {stage} failed after {duration(timings.get(stage, 0.0))}{before}: {why}"
