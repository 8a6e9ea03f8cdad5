"""`make bench-serve`: the served image classifier under load, next to scripts/predict.py on the same images.

Starts `mlflow models serve` (scripts/serve.py) on 127.0.0.1 for the newest logged image classifier (or
--model-uri), then --clients threads post one image each per request (base64 in `dataframe_records`) until
--requests have been sent, bounded by --timeout seconds; reports requests/s, p50/p95/p99 latency and errors.
Then the torch-free predictor of scripts/predict.py scores the same files in this process (batch 1 and 32),
from the ONNX file inside the served model. Writes bench/serve.md and bench/serve.json.

    python scripts/bench_serve.py [--requests 500] [--clients 4] [--images .cache/data/digits]
"""

import argparse
import base64
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from bench_common import ROOT, machine, write_report
from mlflow_server import stop, wait_ready
from serve import newest_model_uri, start, tracking_uri


def post(url: str, image: bytes) -> float:
    """Seconds for one request; raises on any non-200 answer."""
    body = json.dumps({"dataframe_records": [{"image": base64.b64encode(image).decode()}]}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()
    return time.perf_counter() - started


def load(url: str, images: list[bytes], requests: int, clients: int, timeout: float) -> dict:
    """`requests` posts from `clients` threads; latencies in ms, errors counted, stopped at `timeout`."""
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(requests))
    lock = threading.Lock()
    deadline = time.monotonic() + timeout

    def client() -> None:
        while time.monotonic() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            try:
                seconds = post(url, images[i % len(images)])
                with lock:
                    latencies.append(seconds * 1000)
            except (urllib.error.URLError, OSError) as err:
                with lock:
                    errors.append(str(err))

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) if latencies else (float("nan"),) * 3
    return {
        "clients": clients, "requests": len(latencies) + len(errors), "errors": len(errors),
        "first_error": errors[0] if errors else None, "wall_s": round(wall, 2),
        "requests_per_s": round(len(latencies) / wall, 1), "p50_ms": round(float(p50), 1),
        "p95_ms": round(float(p95), 1), "p99_ms": round(float(p99), 1),
    }  # fmt: skip


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


def markdown(result: dict, info: dict) -> str:
    served, rates = result["served"], result["predict_py"]
    return "\n".join([
        "# Serving under load", "",
        f"{info['date']}, commit {info['commit']}, {info['cpu_count']} CPUs, load average "
        f"{info['load_before']:.2f} before and {info['load_after']:.2f} after; model {result['model_uri']}, "
        f"{result['images']} distinct images.", "",
        "| | requests | errors | requests/s | p50 | p95 | p99 |", "|---|---|---|---|---|---|---|",
        f"| served, {served['clients']} clients | {served['requests']} | {served['errors']} "
        f"| {served['requests_per_s']} | {served['p50_ms']} ms | {served['p95_ms']} ms "
        f"| {served['p99_ms']} ms |",
        "", f"scripts/predict.py's predictor on the same images: {rates['batch_1']} images/s at batch 1, "
        f"{rates['batch_32']} images/s at batch 32.", "",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-uri")
    parser.add_argument("--images", type=Path, default=ROOT / ".cache" / "data" / "digits")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=300, help="seconds the load may last at most")
    parser.add_argument("--port", type=int, default=5002)
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    args = parser.parse_args(argv)
    paths = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"})[:200]
    if not paths:
        print(f"error: no images under {args.images} (make smoke writes the digits there)", file=sys.stderr)
        return 2
    load_before, uri = os.getloadavg()[0], tracking_uri()
    model_uri = args.model_uri or newest_model_uri(uri)
    proc = start(model_uri, args.port, uri)
    try:
        wait_ready(f"http://127.0.0.1:{args.port}", proc)
        url = f"http://127.0.0.1:{args.port}/invocations"
        served = load(url, [p.read_bytes() for p in paths], args.requests, args.clients, args.timeout)
    finally:
        stop(proc)
    onnx_path = served_onnx(model_uri, uri)
    rates = {f"batch_{b}": predictor_rate(onnx_path, paths, b) for b in (1, 32)}
    result = {"model_uri": model_uri, "images": len(paths), "served": served, "predict_py": rates}
    info = machine(load_before)
    write_report(args.out, "serve", markdown(result, info), {"machine": info, **result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
