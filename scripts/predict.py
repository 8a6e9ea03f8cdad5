"""Top-k predictions for images from an exported ONNX file alone (onnxruntime; no torch, no training code).

    python scripts/predict.py IMAGE|FOLDER|GLOB ... [--model model.onnx] [--top-k 5] [--format json|csv]
    make predict INPUT=<image, folder or glob> [MODEL=<file.onnx>] [TOPK=5] [FORMAT=json|csv]

Preprocessing and class names come from the model's metadata. The model defaults to the newest
outputs/runs/*/model.onnx (a real run's: smoke runs write under outputs/smoke/); the first line on stderr
says which file and which run made it. Output goes to stdout as it is computed (or to --output once every
image is done, never over the model or an input): JSON Lines, one object per image, or CSV with one row per
image. A file that cannot be decoded, or is too large, gets a row whose `error` says why (and a stderr line).
Exit code: 0 when every image was predicted, 1 when some were not, 2 (one `error: ...` line) for a
model that is missing, not ONNX or not exported by this pipeline, an input naming no image, a bad --output.
"""

import argparse
import csv
import io
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from pipeline.atomic import written_in_place
from pipeline.errors import PipelineError
from pipeline.export.inference import (
    OnnxClassifier,
    Prediction,
    Skipped,
    expand_inputs,
    load_classifier,
    predict,
    refused,
)
from pipeline.export.metadata import provenance_line
from pipeline.logs import on_one_line

RUNS = Path("outputs/runs")


def newest_model() -> Path:
    """The newest model a real run exported (smoke runs write theirs under outputs/smoke/, conf/debug)."""
    found = sorted(RUNS.glob("*/model.onnx"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise PipelineError(f"no {RUNS}/*/model.onnx: train first or pass --model (make predict MODEL=...)")
    return found[-1]


def json_lines(predictions: Iterator[Prediction], k: int) -> Iterator[str]:
    """The served model's answer (pipeline.export.inference.answer) with the image's path first."""
    for p in predictions:
        yield json.dumps({"path": str(p.path), **p.answer})


SINGLE_FIELDS = (
    "label", "probability", "unknown", "unknown_score", "prediction_set", "labels", "probabilities", "note",
    "error",
)  # fmt: skip


def csv_lines(predictions: Iterator[Prediction], k: int) -> Iterator[str]:
    """The answer's fields a column each (a set's labels joined by |, null as empty), then the top k."""

    def row(values: list) -> str:
        out = io.StringIO()
        csv.writer(out, lineterminator="").writerow(values)
        return out.getvalue()

    top = [f"{name}_{i}" for i in range(1, k + 1) for name in ("top_label", "top_probability")]
    yield row(["path", *SINGLE_FIELDS, *top])

    def cell(value) -> str:
        return "" if value is None else "|".join(map(str, value)) if isinstance(value, list) else str(value)

    for p in predictions:
        a = p.answer
        ranked = [v for pair in zip(a["top_labels"], a["top_probabilities"], strict=True) for v in pair]
        yield row(
            [
                str(p.path),
                *(cell(a[name]) for name in SINGLE_FIELDS),
                *ranked,
                *[""] * (len(top) - len(ranked)),
            ]
        )


FORMATS = {"json": json_lines, "csv": csv_lines}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", help="image files, folders (searched recursively) or globs")
    parser.add_argument("--model", type=Path, help="ONNX file (default: newest outputs/runs/*/model.onnx)")
    parser.add_argument("--top-k", type=int, default=5, help="classes per image (capped at the class count)")
    parser.add_argument("--format", choices=sorted(FORMATS), default="json")
    parser.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--max-pixels",
        type=int,
        help="larger images are skipped, undecoded (default: the model's run's data.max_pixels)",
    )
    args = parser.parse_args(argv)
    if args.top_k < 1 or args.batch_size < 1 or (args.max_pixels is not None and args.max_pixels < 1):
        parser.error("--top-k, --batch-size and --max-pixels must be at least 1")
    return args


def run(model: OnnxClassifier, paths: list[Path], args: argparse.Namespace, out: TextIO) -> int:
    k = min(args.top_k, len(model.class_names))
    skipped = 0

    def predictions() -> Iterator[Prediction]:
        nonlocal skipped
        for result in predict(model, paths, args.batch_size, k, args.max_pixels):
            if isinstance(result, Skipped):
                skipped += 1
                print(f"skipped {on_one_line(result.path)}: {result.reason}", file=sys.stderr, flush=True)
                yield Prediction(result.path, refused(result.reason))
            else:
                yield result

    for line in FORMATS[args.format](predictions(), k):
        print(line, file=out, flush=True)
    return 1 if skipped else 0


def refuse_overwriting(output: Path | None, model: Path, inputs: list[Path]) -> None:
    """--output must not name the model or an input: writing there would destroy what is being read."""
    if output is None or not output.exists():
        return
    if output.is_dir():
        raise PipelineError(f"--output {output} is a folder: name the file to write")
    for read, what in ((model, "the model"), *((path, "an input image") for path in inputs)):
        if output.samefile(read):
            raise PipelineError(f"--output {output} is {what}: name a new file (nothing was written)")


@contextmanager
def destination(path: Path | None) -> Iterator[TextIO]:
    """stdout, or a file written beside `path` and moved onto it when every image is done: an interrupted or
    failed run leaves an earlier file of that name whole."""
    if path is None:
        yield sys.stdout
        return
    try:
        with written_in_place(path) as partial, partial.open("w") as out:
            yield out
    except OSError as err:
        raise PipelineError(f"cannot write {path}: {err.strerror or err}") from err


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        model_path = args.model or newest_model()
        model = load_classifier(model_path)
        paths = expand_inputs(args.inputs)
        refuse_overwriting(args.output, model_path, paths)
        print(f"model {model_path}: {provenance_line(model.document)}", file=sys.stderr, flush=True)
        with destination(args.output) as out:
            return run(model, paths, args, out)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader left (`| head`): stop quietly, as Python's docs advise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
