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
import os
import subprocess
import sys
from pathlib import Path

from mlflow_server import foreground

from pipeline.export.serving_app import MODEL_URI

ROOT = Path(__file__).resolve().parents[1]
MODEL_NAME = "image_classifier"  # pipeline.export.served logs it under this name


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{ROOT / 'mlruns' / 'mlflow.db'}"


def newest_model_uri(uri: str) -> str:
    """`models:/<model id>` of the newest image classifier logged in the store at `uri`."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    models = client.search_logged_models(
        experiments,
        filter_string=f"name = '{MODEL_NAME}'",
        order_by=[{"field_name": "creation_timestamp", "ascending": False}],
        max_results=1,
    )
    if not models:
        raise SystemExit(f"error: no {MODEL_NAME} model in {uri}: run the export stage first (make train)")
    return f"models:/{models[0].model_id}"


def start(model_uri: str, port: int, uri: str) -> subprocess.Popen:
    """MLflow's scoring app for the model, its body capped (pipeline.export.serving_app), in a new session."""
    command = [
        sys.executable, "-m", "uvicorn", "--factory", "pipeline.export.serving_app:create_app",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, MODEL_URI: model_uri}
    return subprocess.Popen(command, env=env, start_new_session=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-uri", help="models:/..., runs:/... or a folder; default: the newest logged")
    parser.add_argument("--port", type=int, default=5001)
    args = parser.parse_args()
    uri = tracking_uri()
    model_uri = args.model_uri or newest_model_uri(uri)
    url = f"http://127.0.0.1:{args.port}"
    proc = start(model_uri, args.port, uri)
    return foreground(proc, url, f"serving {model_uri} on {url}/invocations; Ctrl-C stops it")


if __name__ == "__main__":
    sys.exit(main())
