"""The HTTP app `make serve` runs: MLflow's own scoring server (the same routes and answers as `mlflow models
serve`) for a logged image classifier, behind a cap on the request body, which MLflow would read whole at any
size before the model sees a row.

    PIPELINE_SERVE_MODEL_URI=models:/<id> uvicorn --factory pipeline.export.serving_app:create_app

PIPELINE_SERVE_MAX_BYTES (default 32 MiB): a larger body gets a 413, from its Content-Length header before any
of it is read, or as soon as a chunked body passes the cap. The model's own limits: pipeline.export.served.
"""

import json
import os
import subprocess
import sys

from pipeline.process_group import start_in_own_group

MODEL_URI = "PIPELINE_SERVE_MODEL_URI"
MAX_BYTES = "PIPELINE_SERVE_MAX_BYTES"
DEFAULT_MAX_BYTES = 32 * 2**20  # 64 rows (the row cap) of ~370 KB photos, base64-encoded


class BodyLimit:
    """ASGI middleware that hands the app a body of at most `max_bytes`, else answers 413 itself.
    Hand-written: neither Starlette nor uvicorn has a body-size limit."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and int(declared) > self.max_bytes:  # uvicorn refuses a malformed one
            return await self.refuse(send, int(declared))
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await self.refuse(send, size)
            if not message.get("more_body"):
                break
        return await self.app(scope, replay(b"".join(chunks), receive), send)

    async def refuse(self, send, size: int) -> None:
        text = f"request body of {size:,}+ bytes; at most {self.max_bytes:,} (PIPELINE_SERVE_MAX_BYTES)"
        body = json.dumps({"error_code": "REQUEST_LIMIT_EXCEEDED", "message": text}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def replay(body: bytes, receive):
    """A `receive` that gives the body read so far once, then what the client sends next (its disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive_again():
        return pending.pop() if pending else await receive()

    return receive_again


def create_app():
    """MLflow's scoring app for the model at $PIPELINE_SERVE_MODEL_URI, its body capped."""
    from mlflow.pyfunc import scoring_server

    model = scoring_server.load_model_with_mlflow_config(os.environ[MODEL_URI])
    return BodyLimit(scoring_server.init(model), int(os.environ.get(MAX_BYTES, DEFAULT_MAX_BYTES)))


def start_server(model_uri: str, port: int, tracking_uri: str) -> subprocess.Popen:
    """This app for the model under uvicorn on 127.0.0.1:`port`, in its own process group."""
    command = [
        sys.executable, "-m", "uvicorn", "--factory", "pipeline.export.serving_app:create_app",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, MODEL_URI: model_uri}
    return start_in_own_group(command, env)
