"""Serve an image classifier the pipeline logged over HTTP on 127.0.0.1, as `mlflow models serve` would.

    python scripts/serve.py [--model-uri models:/<name>/<version>] [--port 5001]     # or: make serve
    curl -s 127.0.0.1:5001/invocations -H 'Content-Type: application/json' \\
         -d "{\\"dataframe_records\\": [{\\"image\\": \\"$(base64 -w0 photo.jpg)\\"}]}"

Without --model-uri, the newest `image_classifier` model logged by the export stage in the store that
MLFLOW_TRACKING_URI names (else the embedded store, mlruns/mlflow.db). MLflow's own scoring app (the same
routes and answers) runs under uvicorn behind a request-body cap (pipeline.export.serving_app). The server
runs in its own process group and is stopped as a group (Ctrl-C, SIGTERM).
"""

import argparse
import sys
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.export.served import newest_model_uri
from pipeline.export.serving_app import start_server
from pipeline.logs import to_console
from pipeline.process_group import foreground
from pipeline.tracking import resolve_tracking_uri

ROOT = Path(__file__).resolve().parents[1]


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else the embedded store `make train` writes."""
    return resolve_tracking_uri(None, str(ROOT / "mlruns"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-uri", help="models:/..., runs:/... or a folder; default: the newest logged")
    parser.add_argument("--port", type=int, default=5001)
    args = parser.parse_args()
    to_console()
    uri = tracking_uri()
    try:
        model_uri = args.model_uri or newest_model_uri(uri)
    except PipelineError as err:
        sys.exit(f"error: {err}")
    url = f"http://127.0.0.1:{args.port}"
    proc = start_server(model_uri, args.port, uri)
    ready = f"serving {model_uri} on {url}/invocations; Ctrl-C stops it"
    return foreground(proc, url, ready)


if __name__ == "__main__":
    sys.exit(main())
