"""Review what a run's data audit found, in a local web page, and save the decisions for the next run.

    python scripts/review.py [--run <run id>] [--port 5002] [--out DIR]           # or: make review RUN=<id>

The suspected label issues, outliers and poor images of the run (default: the newest run with a data
audit in the store MLFLOW_TRACKING_URI names, else the embedded mlruns/) on http://127.0.0.1:<port>/, worst
first. Each decision is saved at once to <the run's output folder>/review/decisions.yaml (or --out) and
logged to the run; `data.decisions=<that file or the run id>` applies them on the next run. Ctrl-C stops it.
"""

import argparse
import os
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from pipeline.errors import PipelineError
from pipeline.logs import to_console
from pipeline.review.app import Review, create_app
from pipeline.review.suspects import open_run
from pipeline.tracking import resolve_tracking_uri

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="the run to review; default: the newest with a data audit")
    parser.add_argument("--port", type=int, default=5002)
    parser.add_argument("--out", type=Path, help="the folder of decisions.yaml; default: <run output>/review")
    args = parser.parse_args()
    to_console()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # the page's files are small
    uri = resolve_tracking_uri(None, str(ROOT / "mlruns"))
    try:
        run = open_run(uri, str(ROOT / "mlruns"), args.run, args.out)
    except PipelineError as err:
        print(f"review: {err}", file=sys.stderr)
        return 2
    client = MlflowClient(uri)
    review = Review(run, on_save=lambda path: client.log_artifact(run.run_id, str(path), "review"))
    import uvicorn

    print(
        f"review: run {run.run_id}, {len(run.suspects)} suspects, decisions in {run.decisions_path}\n"
        f"open http://127.0.0.1:{args.port}/ (Ctrl-C stops it)",
        flush=True,
    )
    uvicorn.run(create_app(review), host="127.0.0.1", port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
