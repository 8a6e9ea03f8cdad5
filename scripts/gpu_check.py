"""`make gpu-check`: the whole pipeline on this machine's GPUs, one prepared run of about 10 minutes at most.

Without CUDA it says so in one line and exits 0. With CUDA: the digits on one GPU (bf16, channels_last,
torch.compile), on every GPU under DDP when there are several, and EfficientNet-Lite0's default fine-tuning
on the hand signs from ../shared when they are there; beside them, a bare training loop of the same network
on the same GPU (the throughput the train stage should approach). Writes bench/gpu_check.md and .json: per
run, each stage's device and seconds, test accuracy, ONNX parity, training images/s.

    python scripts/gpu_check.py [--out bench] [--timeout 180]
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from bench_common import HAND_SIGNS, ROOT, RUN_ID, child_env, machine, write_report

DIGITS = ["data=digits", "model=resnet18", "trainer.max_epochs=5"]
ONE_GPU = ["trainer=gpu", "trainer.devices=1", "train.compile=true", "train.channels_last=true"]
STAGE_DEVICE = {"data": "data.audit_device", "sanity": "sanity.device", "validate": "validate.device"}


def runs(gpus: int) -> dict[str, list[str]]:
    """name -> overrides, for the GPUs there are and the shared folders present."""
    chosen = {"digits_1gpu": [*DIGITS, *ONE_GPU]}
    if gpus > 1:
        chosen["digits_ddp"] = [*DIGITS, "trainer=ddp", "trainer.accelerator=gpu", f"trainer.devices={gpus}"]
    if HAND_SIGNS.is_dir():
        chosen["hand_signs_1gpu"] = [
            "data=folder",
            f"data.root={HAND_SIGNS}",
            "model=efficientnet_lite0",
            *ONE_GPU,
        ]
    return chosen


def pipeline_run(name: str, overrides: list[str], work: Path, timeout: float) -> dict:
    """One whole pipeline run in a child process; what its MLflow runs say of devices, times and scores."""
    import subprocess

    from mlflow.tracking import MlflowClient

    command = [
        sys.executable, "-m", "pipeline", *overrides, "trainer.enable_progress_bar=false",
        f"tracking.dir={work / 'mlruns'}", f"hydra.run.dir={work / name}", f"data.cache_dir={work / 'cache'}",
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return {"wall_s": round(wall, 1), "error": done.stderr.strip().splitlines()[-1:]}
    client = MlflowClient(f"sqlite:///{work / 'mlruns' / 'mlflow.db'}")
    parent = client.get_run(RUN_ID.search(done.stdout + done.stderr).group(1))
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    stages = {c.info.run_name: c for c in children}
    train = stages["train"].data
    train_s = (stages["train"].info.end_time - stages["train"].info.start_time) / 1000
    images = float(train.params["train.images_per_epoch"]) * train.metrics.get("train/epochs", 0)
    return {
        "wall_s": round(wall, 1),
        "stage_s": {n: round((c.info.end_time - c.info.start_time) / 1000, 1) for n, c in stages.items()},
        "devices": {n: stages[n].data.params.get(p) for n, p in STAGE_DEVICE.items() if n in stages},
        "train_accelerator": train.params.get("train.accelerator"),
        "world_size": train.params.get("train.world_size"),
        "train_images_per_s": round(images / train_s, 1),  # validation every epoch included
        "test_acc": parent.data.metrics.get("test/acc"),
        "parity_max_abs_diff": parent.data.metrics.get("export/parity_max_abs_diff"),
    }


def bare_loop(steps: int = 50, batch: int = 64, size: int = 32) -> float:
    """Images/s of plain training steps of the digits' network (ResNet-18, 10 classes) on random batches:
    bf16 autocast, channels_last, AdamW, no data loading."""
    import torch

    from pipeline.models.factory import create_model

    model = create_model("resnet18", 10).cuda().to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, size, size, device="cuda").to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device="cuda")
    for step in range(steps + 10):  # 10 warm-up steps
        if step == 10:
            torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def markdown(results: dict, info: dict) -> str:
    header = (
        "| run | devices (data, sanity, validate) | train | stage seconds | train img/s | test acc | parity |"
    )
    lines = [
        "# GPU check",
        "",
        f"{info['date']}, commit {info['commit']}, {info['gpus']} x {info['gpu_name']}. Bare training loop "
        f"(ResNet-18, batch 64, 32 px, bf16): {info['bare_images_per_s']:.0f} images/s.",
        "",
        header,
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | failed after {r['wall_s']} s: {' '.join(r['error'])} | | | | | |")
            continue
        stages = ", ".join(f"{k} {v}" for k, v in r["stage_s"].items())
        lines.append(
            f"| {name} | {', '.join(str(v) for v in r['devices'].values())} | {r['train_accelerator']} x "
            f"{r['world_size']} | {stages} | {r['train_images_per_s']} | {r['test_acc']} | "
            f"{r['parity_max_abs_diff']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    parser.add_argument("--timeout", type=float, default=180, help="seconds per pipeline run")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device on this machine: nothing to check (run it where there is a GPU)")
        return 0
    load_before = os.getloadavg()[0]
    gpus = torch.cuda.device_count()
    bare = bare_loop()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        results = {name: pipeline_run(name, o, Path(tmp), args.timeout) for name, o in runs(gpus).items()}
    info = machine(load_before, gpus=gpus, gpu_name=torch.cuda.get_device_name(0), bare_images_per_s=bare)
    write_report(args.out, "gpu_check", markdown(results, info), {"machine": info, "runs": results})
    return 0 if all("error" not in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
