"""A new user's first hour, scripted: a fresh clone, the README's commands in order, and checks that predict
and serve answer with the model `make train` made, not a smoke run's.

    make newcomer                 # clones this checkout's HEAD to a temporary folder and runs `make install`
    make newcomer ARGS=--reuse-venv   # links this checkout's .venv instead (minutes faster; same lock file)

Steps: make smoke, make train, make smoke again (so a smoke run is the newest), make predict on a digit
(its first stderr line must name the train run), make serve on a free port (its x-model-run header must name
the train run), make ui (it answers), make help. The README's folder commands need a user's folder: a test
resolves them (tests/test_docs.py). Each step's wall time is printed; exit 0 when every check holds.
"""

import argparse
import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import urllib.response
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARENT_RUN = re.compile(r"outputs in \S+; MLflow run ([0-9a-f]{32})")


def step(name: str, command: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    print(f"{name}: exit {done.returncode} in {time.perf_counter() - start:.1f} s", flush=True)
    if done.returncode != 0:
        sys.exit(f"{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answer_of(target: str, clone: Path, env: dict, request) -> urllib.response.addinfourl:
    """`make <target> PORT=<free port>` (a server), the reply to `request(port)` once it answers, then the
    server stopped as Ctrl-C would (its process group)."""
    port = free_port()
    server = subprocess.Popen(
        ["make", target, f"PORT={port}"], cwd=clone, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(request(port), timeout=10) as reply:
                    reply.read()
                    return reply
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    sys.exit(f"make {target} did not answer within 120 s")
                time.sleep(1)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def served_run(clone: Path, env: dict, image: Path) -> str:
    """`make serve`'s x-model-run header in its answer to one image."""
    body = json.dumps({"dataframe_records": [{"image": base64.b64encode(image.read_bytes()).decode()}]})

    def request(port: int) -> urllib.request.Request:
        url = f"http://127.0.0.1:{port}/invocations"
        return urllib.request.Request(url, body.encode(), {"Content-Type": "application/json"})

    return answer_of("serve", clone, env, request).headers["x-model-run"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reuse-venv", action="store_true", help="link this checkout's .venv, no install")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="newcomer-"))
    clone = work / "clone"
    # as a user's shell would be: no store of ours, none of this make's variables (make exports those given
    # on its command line, ARGS included, to the environment and MAKEFLAGS)
    leave_out = {"MLFLOW_TRACKING_URI", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "ARGS"}
    env = {k: v for k, v in os.environ.items() if k not in leave_out}
    try:
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        if args.reuse_venv:
            (clone / ".venv").symlink_to(ROOT / ".venv")
        else:
            step("make install", ["make", "install"], clone, env)
        step("make smoke", ["make", "smoke"], clone, env)
        trained = PARENT_RUN.search(step("make train", ["make", "train"], clone, env).stdout)[1]
        step("make smoke (again: the newest run is a smoke run)", ["make", "smoke"], clone, env)
        digit = sorted((clone / ".cache" / "data" / "digits" / "3").glob("*.png"))[0]
        predicted = step("make predict", ["make", "predict", f"INPUT={digit}"], clone, env)
        model_line = next(line for line in predicted.stderr.splitlines() if line.startswith("model "))
        answer = json.loads(predicted.stdout.strip().splitlines()[-1])
        print(f"  {model_line}\n  answer: {answer['label']} ({answer['probability']})")
        header = served_run(clone, env, digit)
        print(f"  make serve: x-model-run {header}")
        ui = answer_of("ui", clone, env, lambda port: f"http://127.0.0.1:{port}/").status
        print(f"  make ui: HTTP {ui}")
        helped = step("make help", ["make", "help"], clone, env).stdout
        checks = {
            "predict names the train run": f"({trained})" in model_line and "smoke" not in model_line,
            "serve names the train run": header.endswith(trained),
            "make ui answers": ui == 200,
            "make help lists the commands and the config groups": "newcomer" in helped and "model:" in helped,
        }
        for name, held in checks.items():
            print(f"{'ok' if held else 'FAILED'}: {name}")
        return 0 if all(checks.values()) else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
