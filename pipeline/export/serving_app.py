"""The HTTP app `make serve` runs: MLflow's own scoring server (the same routes and answers as `mlflow models
serve`) for a logged image classifier, behind a cap on the request body, which MLflow would read whole at any
size before the model sees a row, and with error replies that never quote the request (MLflow's do).

    PIPELINE_SERVE_MODEL_URI=models:/<id> uvicorn --factory pipeline.export.serving_app:create_app

PIPELINE_SERVE_MAX_BYTES (default 32 MiB): a larger body gets a 413 (Starlette's RequestBodyLimitMiddleware),
from its Content-Length header before any of it is read, or as soon as a chunked body passes the cap. The
model's own limits: pipeline.export.served.
"""

import json
import logging
import os
import re
import subprocess
import sys

from pipeline.export.metadata import provenance_line
from pipeline.logs import to_console
from pipeline.process_group import start_in_own_group

log = logging.getLogger("pipeline.serve")

MODEL_URI = "PIPELINE_SERVE_MODEL_URI"
MAX_BYTES = "PIPELINE_SERVE_MAX_BYTES"
DEFAULT_MAX_BYTES = 32 * 2**20  # 64 rows (the row cap) of ~370 KB photos, base64-encoded


# What MLflow's scoring server (3.17) puts in an error reply that is the client's own data, or noise, and what
# stands in its place. Hand-written: MLflow has no option to leave the request out of its messages.
QUOTED = (
    (re.compile(r"^Failed to predict data '.*'\. \nError: ", re.S), ""),  # the request's rows, repr'd
    (re.compile(r"\nInput: .*", re.S), ""),  # a body that is not JSON, whole
    (re.compile(r"for value `.*?`", re.S), "for the value sent"),  # a parameter's value
    (re.compile(r" Got '.*'\.$", re.S), ""),  # an unsupported Content-Type header
    (re.compile(r" IMPORTANT: The MLflow Model scoring protocol.*", re.S), ""),
)
MAX_MESSAGE = 300


def public_message(message: str) -> str:
    """An error message without the request's data in it, at most MAX_MESSAGE characters, on one line."""
    for pattern, replacement in QUOTED:
        message = pattern.sub(replacement, message)
    message = " ".join(message.split())
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


class ErrorReplies:
    """ASGI middleware that sends an error reply (status >= 400) as `{"error_code", "message"}` with the
    message through public_message: no stack trace, no server path from it, no byte of the request; a 413
    (Starlette's body limit, inside) says the cap. Every reply carries `headers` (which model answers)."""

    def __init__(self, app, headers: list[tuple[bytes, bytes]], max_bytes: int) -> None:
        self.app, self.headers, self.max_bytes = app, headers, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        held: dict = {}
        declared = dict(scope["headers"]).get(b"content-length", b"").decode()

        async def send_public(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.headers]}
            if message["type"] == "http.response.start" and message["status"] >= 400:
                held.update(start=message, body=b"")
                return None
            if message["type"] == "http.response.body" and held:
                held["body"] += message.get("body", b"")
                if message.get("more_body"):
                    return None
                status = held["start"]["status"]
                document = self.too_large(declared) if status == 413 else public_reply(held["body"])
                return await reply(send, status, document, self.headers)
            return await send(message)

        return await self.app(scope, receive, send_public)

    def too_large(self, declared: str) -> dict:
        size = f"{int(declared):,}+" if declared.isdigit() else f"over {self.max_bytes:,}"
        text = f"request body of {size} bytes; at most {self.max_bytes:,} ({MAX_BYTES})"
        return {"error_code": "REQUEST_LIMIT_EXCEEDED", "message": text}


def public_reply(body: bytes) -> dict:
    try:
        found = json.loads(body)
    except ValueError:  # a text/plain reply (415)
        found = {"message": body.decode("utf-8", "replace")}
    if not isinstance(found, dict):
        found = {"message": str(found)}
    code = found.get("error_code")
    return {"error_code": code if isinstance(code, str) else "BAD_REQUEST",
            "message": public_message(str(found.get("message", "")))}  # fmt: skip


async def reply(send, status: int, document: dict, extra: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(document).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app():
    """MLflow's scoring app for the model at $PIPELINE_SERVE_MODEL_URI, its body capped, its errors public."""
    from mlflow.pyfunc import scoring_server
    from starlette.middleware.body_limit import RequestBodyLimitMiddleware

    model = scoring_server.load_model_with_mlflow_config(os.environ[MODEL_URI])
    document = model.unwrap_python_model().model.document
    to_console()
    log.info("model %s: %s", os.environ[MODEL_URI], provenance_line(document))
    max_bytes = int(os.environ.get(MAX_BYTES, DEFAULT_MAX_BYTES))
    capped = RequestBodyLimitMiddleware(scoring_server.init(model), max_body_size=max_bytes)
    return ErrorReplies(capped, [(MODEL_HEADER, model_header(document))], max_bytes)


MODEL_HEADER = b"x-model-run"  # on every reply: the run that made the model answering


def model_header(document: dict) -> bytes:
    """`<run name> <run id>` of the run that made the model, ASCII only (an HTTP header)."""
    made = document.get("provenance") or {}
    text = f"{made.get('run_name')} {made.get('run_id')}" if made else "unknown"
    return text.encode("ascii", "backslashreplace")


def start_server(model_uri: str, port: int, tracking_uri: str) -> subprocess.Popen:
    """This app for the model under uvicorn on 127.0.0.1:`port`, in its own process group."""
    command = [
        sys.executable, "-m", "uvicorn", "--factory", "pipeline.export.serving_app:create_app",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, MODEL_URI: model_uri}
    return start_in_own_group(command, env)
