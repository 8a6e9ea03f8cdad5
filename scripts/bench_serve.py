"""`make bench-serve`: the served image classifier under load, next to scripts/predict.py on the same images.

Starts `make serve` (scripts/serve.py) on 127.0.0.1 for the newest logged image classifier (or
--model-uri), then --clients threads post one image each per request (base64 in `dataframe_records`) until
--requests have been sent, bounded by --timeout seconds; reports requests/s, p50/p95/p99 latency and errors.
A second load mixes in bad requests (--bad-share of them: not an image, a 12,000 x 12,000 PNG, a path on the
server, an empty body): every good one must answer 200 and every bad one 4xx; the server's peak memory is
sampled throughout. Then the torch-free predictor of scripts/predict.py scores the same files in this
process (batch 1 and 32), from the ONNX file inside the served model. Writes bench/serve.md and
bench/serve.json.

    python scripts/bench_serve.py [--requests 1000] [--clients 4] [--bad-share 0.25] [--images <folder>]
"""

import argparse
import base64
import io
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from bench_common import ROOT, machine, machine_line, write_report

from pipeline.export.served import newest_model_uri
from pipeline.export.serving_app import start_server
from pipeline.process_group import group_rss_mb, stop, wait_ready
from pipeline.tracking import resolve_tracking_uri


def good_body(image: bytes) -> bytes:
    return json.dumps({"dataframe_records": [{"image": base64.b64encode(image).decode()}]}).encode()


def bad_bodies() -> dict[str, bytes]:
    """One request body of each kind the server must refuse with a 4xx and go on serving."""
    from PIL import Image

    bomb = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(bomb, "PNG")  # a few KB declaring 144 megapixels
    return {
        "not an image": good_body(b"just some text"),
        "pixel bomb": good_body(bomb.getvalue()),
        "server path": json.dumps({"dataframe_records": [{"path": "/etc/passwd"}]}).encode(),
        "empty body": b"",
    }


def post(url: str, body: bytes) -> tuple[int, float]:
    """The HTTP status of one request and its seconds."""
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as err:
        err.read()
        status = err.code
    return status, time.perf_counter() - started


class PeakMemory(threading.Thread):
    """Samples a process group's resident memory every 50 ms until stopped; `peak_mb` is the highest."""

    def __init__(self, pgid: int):
        super().__init__(daemon=True)
        self.pgid, self.peak_mb, self.done = pgid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            self.peak_mb = max(self.peak_mb, group_rss_mb(self.pgid))


def load(url: str, bodies: list[tuple[bool, bytes]], requests: int, clients: int, timeout: float) -> dict:
    """`requests` posts from `clients` threads, cycling over (good?, body); latencies of good requests in ms;
    a failure is a good request not answered 200 or a bad one not answered 4xx; stopped at `timeout`."""
    latencies: list[float] = []
    failures: list[str] = []
    sent = {True: 0, False: 0}  # good, bad
    counter = iter(range(requests))
    lock = threading.Lock()
    deadline = time.monotonic() + timeout

    def client() -> None:
        while time.monotonic() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            good, body = bodies[i % len(bodies)]
            try:
                status, seconds = post(url, body)
                failed = status != 200 if good else not 400 <= status < 500
                reason = f"{'good' if good else 'bad'} request answered {status}"
            except (urllib.error.URLError, OSError) as err:
                failed, reason, seconds = True, str(err), 0.0
            with lock:
                sent[good] += 1
                if failed:
                    failures.append(reason)
                elif good:
                    latencies.append(seconds * 1000)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) if latencies else (float("nan"),) * 3
    return {
        "clients": clients, "requests": sent[True] + sent[False], "bad_requests": sent[False],
        "errors": len(failures), "first_error": failures[0] if failures else None, "wall_s": round(wall, 2),
        "requests_per_s": round((sent[True] + sent[False]) / wall, 1), "p50_ms": round(float(p50), 1),
        "p95_ms": round(float(p95), 1), "p99_ms": round(float(p99), 1),
    }  # fmt: skip


def mixed(images: list[bytes], bad_share: float) -> list[tuple[bool, bytes]]:
    """Good and bad bodies interleaved so that `bad_share` of any long enough run of requests is bad."""
    bad = list(bad_bodies().values())
    every = max(1, round(1 / bad_share)) if bad_share > 0 else 0
    bodies, b = [], 0
    for i, image in enumerate(images):
        if every and i % every == every - 1:
            bodies.append((False, bad[b % len(bad)]))
            b += 1
        else:
            bodies.append((True, good_body(image)))
    return bodies


def predictor_rate(onnx_path: Path, paths: list[Path], batch_size: int) -> float:
    """Images/s of scripts/predict.py's predictor over `paths` (decode, preprocess, onnxruntime)."""
    from pipeline.export.inference import load_classifier, predict

    model = load_classifier(onnx_path)
    started = time.perf_counter()
    done = sum(1 for _ in predict(model, paths, batch_size, 5))
    return round(done / (time.perf_counter() - started), 1)


def served_onnx(model_uri: str, uri: str) -> Path:
    import mlflow

    mlflow.set_tracking_uri(uri)
    folder = Path(mlflow.artifacts.download_artifacts(model_uri))
    return next(folder.rglob("*.onnx"))


def row(name: str, load: dict) -> str:
    return (
        f"| {name}, {load['clients']} clients | {load['requests']} | {load['bad_requests']} "
        f"| {load['errors']} "
        f"| {load['requests_per_s']} | {load['p50_ms']} ms | {load['p95_ms']} ms | {load['p99_ms']} ms "
        f"| {load['peak_mb']:.0f} MB |"
    )


def markdown(result: dict, info: dict) -> str:
    rates = result["predict_py"]
    return "\n".join([
        "# Serving under load", "",
        f"{machine_line(info)}; model {result['model_uri']}, "
        f"{result['images']} distinct images. Errors: a good request not answered 200, or a bad one not "
        "answered 4xx. Latencies of good requests; peak: the server's resident memory (all its processes).",
        "",
        "| | requests | of them bad | errors | requests/s | p50 | p95 | p99 | peak memory |",
        "|---|---|---|---|---|---|---|---|---|",
        row("good requests only", result["served"]),
        row(f"{result['bad_share']:.0%} bad requests mixed in", result["mixed"]),
        "", f"scripts/predict.py's predictor on the same images: {rates['batch_1']} images/s at batch 1, "
        f"{rates['batch_32']} images/s at batch 32.", "",
    ])  # fmt: skip


def measured(url: str, pgid: int, bodies: list[tuple[bool, bytes]], args: argparse.Namespace) -> dict:
    memory = PeakMemory(pgid)
    memory.start()
    try:
        return {**load(url, bodies, args.requests, args.clients, args.timeout), "peak_mb": memory.peak_mb}
    finally:
        memory.done.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-uri")
    parser.add_argument("--images", type=Path, default=ROOT / ".cache" / "data" / "digits")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=300, help="seconds the load may last at most")
    parser.add_argument("--bad-share", type=float, default=0.25, help="of the mixed load's requests")
    parser.add_argument("--port", type=int, default=5002)
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    args = parser.parse_args(argv)
    paths = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"})[:200]
    if not paths:
        print(f"error: no images under {args.images} (make smoke writes the digits there)", file=sys.stderr)
        return 2
    load_before, uri = os.getloadavg()[0], resolve_tracking_uri(None, str(ROOT / "mlruns"))
    model_uri = args.model_uri or newest_model_uri(uri)
    proc = start_server(model_uri, args.port, uri)
    try:
        wait_ready(f"http://127.0.0.1:{args.port}", proc)
        url = f"http://127.0.0.1:{args.port}/invocations"
        images = [p.read_bytes() for p in paths]
        served = measured(url, proc.pid, [(True, good_body(image)) for image in images], args)
        mixed_load = measured(url, proc.pid, mixed(images, args.bad_share), args)
    finally:
        stop(proc)
    onnx_path = served_onnx(model_uri, uri)
    rates = {f"batch_{b}": predictor_rate(onnx_path, paths, b) for b in (1, 32)}
    result = {
        "model_uri": model_uri, "images": len(paths), "served": served, "bad_share": args.bad_share,
        "mixed": mixed_load, "predict_py": rates,
    }  # fmt: skip
    info = machine(load_before)
    write_report(args.out, "serve", markdown(result, info), {"machine": info, **result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
