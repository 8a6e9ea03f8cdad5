"""`make bench`: the pipeline's own paths measured side by side with the bare baselines they wrap.

In one run: train-step time of the Lightning Classifier against a plain PyTorch loop on the same model
and tensors, step by step; data loading through the pipeline's dataset (albumentations) against the same
augmentation in torchvision.transforms.v2; onnxruntime against PyTorch eager latency on the exported
default model; wall time and peak memory of `make smoke` and the start-up time of the CLI; the train stage
on real photos against the plain loop, step by step, and the sanity stage's time. A bench is not a test:
it reports figures against their targets and never fails on them.

    python scripts/bench.py [--quick] [--out bench]        # or: make bench (ARGS=--quick)
"""

import argparse
import datetime
import importlib.metadata
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import median
from types import SimpleNamespace
from unittest import mock

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from bench_common import HAND_SIGNS  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torchvision.transforms import v2  # noqa: E402

from pipeline.data.datamodule import ImageDataModule  # noqa: E402
from pipeline.data.images import ImageDataset  # noqa: E402
from pipeline.data.sources import build_index  # noqa: E402
from pipeline.data.transforms import Preprocess  # noqa: E402
from pipeline.export.benchmark import (
    BATCH_SIZES,  # noqa: E402
    latency,  # noqa: E402
)
from pipeline.models.factory import create_model_from_spec  # noqa: E402
from pipeline.models.finetune import param_groups  # noqa: E402
from pipeline.models.module import Classifier  # noqa: E402
from pipeline.models.optim import build_optimizer  # noqa: E402
from pipeline.models.trainer import build_trainer, training_callbacks  # noqa: E402
from pipeline.onnx_io import export_onnx, onnx_runner, session, torch_runner  # noqa: E402
from pipeline.recipe import finetune_recipe  # noqa: E402
from pipeline.runner import run as run_pipeline  # noqa: E402
from pipeline.schema import Config, plain, register  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NUM_CLASSES = 10
RATIO_TARGET = 0.98
FOLDER_TARGET = 0.95  # real photos through the pipeline / bare compute on in-memory tensors

NORMALIZE = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))  # any fixed values: both sides of a pair use the same
PACKAGES = ("torch", "torchvision", "lightning", "timm", "albumentations", "onnxruntime", "mlflow")


@dataclass(frozen=True)
class Plan:
    """How much of each measurement to take; --quick shrinks everything to check the bench itself."""

    models: tuple[str, ...] = ("resnet18", "simple_cnn")
    warmup_steps: int = 10
    steps: int = 40
    rounds: int = 4
    images: int = 2000
    latency_runs: int = 50
    startup_runs: int = 3
    folder_sizes: tuple[int, ...] = (64, 128)
    folder_epochs: int = 2  # the last epoch's rate counts: the first also fills caches


QUICK = Plan(
    ("resnet18",), warmup_steps=3, steps=5, rounds=1, images=300, latency_runs=5, startup_runs=1,
    folder_sizes=(32,), folder_epochs=1,
)  # fmt: skip


@dataclass
class Figure:
    key: str  # stable name in report.json, e.g. train.resnet18.ratio
    label: str
    value: float
    unit: str
    note: str = ""
    target: float | None = None  # the value should be at least this
    ceiling: float | None = None  # the value should be at most this

    def __post_init__(self):
        self.value = float(self.value)  # a numpy scalar would make `met` a numpy bool, which json refuses

    @property
    def met(self) -> bool | None:
        if self.target is not None:
            return self.value >= self.target
        return None if self.ceiling is None else self.value <= self.ceiling

    def goal(self) -> str:
        if self.met is None:
            return ""
        bound = f">= {self.target:g}" if self.target is not None else f"<= {self.ceiling:g}"
        return f"{bound} ({'met' if self.met else 'missed'})"


def say(text: str) -> None:
    print(f"[bench] {text}", flush=True)


def compose_config(*overrides: str) -> DictConfig:
    """The real conf/config.yaml on the CPU, as the CLI composes it."""
    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=["trainer=cpu", *overrides])


def finetune_plan(cfg: DictConfig) -> dict:
    """The fine-tuning recipe the train stage resolves for this config (one process, no DDP)."""
    return finetune_recipe(plain(cfg.finetune), plain(cfg.model))


# ---- 1. train-step throughput ----


class PairedSteps(Callback):
    """Before each of Lightning's steps, one bare step (`bare_step`) on the same batch, timed; the pipeline's
    step is the time between two step ends (the first from the epoch's start: loading included) less the
    bare step between them. Both sides share every second, so a burst of load on this machine (rates of one
    side swung 345-505 img/s from round to round) hits both. The last epoch's steps are kept."""

    def __init__(self, bare_step: Callable[[torch.Tensor, torch.Tensor], None]):
        self.bare_step = bare_step
        self.bare: list[float] = []
        self.ends: list[float] = []

    def on_train_epoch_start(self, *_) -> None:
        self.bare, self.ends = [], [time.perf_counter()]

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        started = time.perf_counter()
        self.bare_step(*batch)
        self.bare.append(time.perf_counter() - started)

    def on_train_batch_end(self, *_) -> None:
        self.ends.append(time.perf_counter())

    def step_seconds(self, warmup: int) -> tuple[np.ndarray, np.ndarray]:
        """(pipeline, bare) seconds of each step after the first `warmup` steps."""
        bare = np.array(self.bare[warmup:])
        return np.diff(self.ends[warmup:]) - bare, bare


def random_batches(count: int, batch_size: int, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(count, batch_size, 3, size, size, generator=g)
    labels = torch.randint(NUM_CLASSES, (count, batch_size), generator=g)
    return list(zip(images, labels, strict=True))


def bare_parts(cfg: DictConfig) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """Model and optimizer of the loop everyone writes by hand, with the train stage's optimizer groups."""
    model = create_model_from_spec(plain(cfg.model), NUM_CLASSES).train()
    spec = plain(cfg.optimizer)
    finetune = finetune_plan(cfg)
    factors = (finetune["backbone_lr_factor"], finetune["first_stage_lr_factor"])
    return model, build_optimizer(param_groups(model, spec["lr"], spec["weight_decay"], *factors), spec)


def bare_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Callable:
    """One step of the hand-written loop on a batch: forward, cross-entropy, backward, optimizer step."""

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def paired_seconds(cfg: DictConfig, batches: list, warmup: int, work: Path) -> tuple[np.ndarray, np.ndarray]:
    """(pipeline, bare) seconds per step, paired (PairedSteps): the train stage's Classifier, callbacks and
    Trainer settings fed the in-memory batches, each step after a bare step on the same batch."""
    groups = ("optimizer", "scheduler", "train")
    finetune = finetune_plan(cfg)
    classifier = Classifier(
        model=plain(cfg.model),
        num_classes=NUM_CLASSES,
        class_names=[str(i) for i in range(NUM_CLASSES)],
        preprocess=Preprocess(cfg.data.image_size, *NORMALIZE).to_dict(),
        finetune=finetune,
        **{group: plain(cfg[group]) for group in groups},
    )
    pairs = PairedSteps(bare_step(*bare_parts(cfg)))
    # called at fit start and epoch end, outside the timed steps
    no_tracker = SimpleNamespace(log_metrics=lambda *_, **__: None, logged_epochs=set)
    _, callbacks = training_callbacks("val/acc", "max", finetune, None, no_tracker, work / "checkpoints")
    options = {**plain(cfg.trainer), "max_epochs": 1, "limit_val_batches": 0, "enable_progress_bar": False}
    trainer = build_trainer(options, [*callbacks, pairs], work)
    trainer.fit(classifier, train_dataloaders=DataLoader(batches, batch_size=None))
    return pairs.step_seconds(warmup)


def train_figures(model: str, plan: Plan, work: Path) -> list[Figure]:
    cfg = compose_config(f"model={model}")
    size, batch = cfg.data.image_size, cfg.data.batch_size
    batches = random_batches(plan.warmup_steps + plan.steps, batch, size)
    ours, theirs, ratios = [], [], []
    for r in range(plan.rounds):
        say(f"train {model} {size} px b{batch}: round {r + 1}/{plan.rounds}, paired steps")
        pipeline_s, bare_s = paired_seconds(cfg, batches, plan.warmup_steps, work / f"{model}_{r}")
        ours.append(pipeline_s)
        theirs.append(bare_s)
        ratios.append(float(np.median(bare_s / pipeline_s)))
    ours_s, theirs_s = float(np.median(np.concatenate(ours))), float(np.median(np.concatenate(theirs)))
    how = (
        f"median of {plan.rounds} x {plan.steps} steps after {plan.warmup_steps} warm-up, each step paired "
        f"with a bare step on the same batch; {torch.get_num_threads()} torch threads"
    )
    spread = f"rounds {min(ratios):.3f}-{max(ratios):.3f}; median of the per-step ratios"
    name, key = f"Train step, {model} {size} px b{batch}", f"train.{model}"
    return [
        Figure(f"{key}.lightning_ips", f"{name}: pipeline (Lightning)", batch / ours_s, "images/s", how),
        Figure(f"{key}.bare_ips", f"{name}: bare PyTorch loop", batch / theirs_s, "images/s", how),
        Figure(f"{key}.ratio", f"{name}: pipeline / bare", median(ratios), "", spread, RATIO_TARGET),
        Figure(f"{key}.extra_ms", f"{name}: time the pipeline adds a step", 1000 * (ours_s - theirs_s), "ms",
               "the medians"),
    ]  # fmt: skip


# ---- 2. data-loading throughput ----


def write_image_folder(root: Path, count: int, size: int = 64) -> Path:
    """PNGs of smooth colour fields with noise (they compress like photos, not like flat test patterns)."""
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / f"class_{i % NUM_CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((size, size))
        pixels = np.asarray(coarse, dtype=np.int16) + rng.integers(-12, 13, (size, size, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i:05d}.png")
    return root


def torchvision_augmentations(specs: list[dict]) -> list[v2.Transform]:
    """The light preset's albumentations ops as torchvision ops, with the config's own values."""
    ops = []
    for spec in specs:
        kind = spec["_target_"].rpartition(".")[2]
        if kind == "Affine":
            shift = max(abs(v) for v in spec["translate_percent"])
            op = v2.RandomAffine(tuple(spec["rotate"]), translate=(shift, shift), scale=tuple(spec["scale"]))
        elif kind == "RandomBrightnessContrast":
            op = v2.ColorJitter(brightness=spec["brightness_limit"], contrast=spec["contrast_limit"])
        else:
            raise ValueError(f"no torchvision counterpart written for albumentations.{kind}")
        ops.append(v2.RandomApply([op], p=spec["p"]))
    return ops


def torchvision_transform(pre: Preprocess, specs: list[dict]) -> v2.Compose:
    """Resize, augment, normalize as the pipeline does; uint8 tensors until the last two steps, as
    torchvision advises. Bilinear without antialiasing, like albumentations' cv2 INTER_LINEAR."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize((pre.image_size, pre.image_size), antialias=False),
            *torchvision_augmentations(specs),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(pre.mean), list(pre.std)),
        ]
    )


class TorchvisionDataset(ImageDataset):
    """The same records and PIL decode as the pipeline's dataset; torchvision does the rest."""

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        record = self.records[i]
        with Image.open(record.path) as img:
            return self.transform(img.convert("RGB")), record.label


def epoch_rate(loader: DataLoader) -> float:
    start, count = time.perf_counter(), 0
    for x, _ in loader:
        count += len(x)
    return count / (time.perf_counter() - start)


def data_figures(plan: Plan, work: Path) -> list[Figure]:
    cfg = compose_config()
    d = cfg.data
    say(f"data: writing {plan.images} PNGs at 64x64")
    index = build_index(write_image_folder(work / "images", plan.images), d.val_fraction, 0.0, d.split_seed)
    pre = Preprocess(d.image_size, *NORMALIZE)
    specs = plain(cfg.augment)["train"]
    args = (index, pre, specs, d.batch_size, d.num_workers, d.balance, cfg.seed)  # as the train stage passes
    modules = [ImageDataModule(*args) for _ in range(2)]
    modules[1].train_set = TorchvisionDataset(modules[0].train_set.records, torchvision_transform(pre, specs))
    loaders = [m.train_dataloader() for m in modules]  # identical loader settings; one each, workers persist
    for loader in loaders:
        epoch_rate(loader)  # warm-up: worker start, file cache
    rates: list[list[float]] = [[], []]
    for r in range(plan.rounds):
        say(f"data: round {r + 1}/{plan.rounds}")
        for side, loader in enumerate(loaders):
            rates[side].append(epoch_rate(loader))
    how = (
        f"{len(modules[0].train_set)} train images an epoch, augment={cfg.augment.name}, "
        f"64 to {d.image_size} px, b{d.batch_size}, data.num_workers={d.num_workers}, "
        f"{torch.get_num_threads()} torch threads; median of {plan.rounds} epochs"
    )
    ours, theirs = (median(r) for r in rates)
    return [
        Figure("data.pipeline_ips", "Data loading: pipeline (albumentations)", ours, "images/s", how),
        Figure("data.torchvision_ips", "Data loading: torchvision.transforms.v2", theirs, "images/s", how),
        Figure("data.ratio", "Data loading: pipeline / torchvision", ours / theirs, ""),
    ]


# ---- 3. inference latency ----


def latency_figures(plan: Plan, work: Path) -> list[Figure]:
    """The export stage's own timing (pipeline.export.benchmark) on a fresh export of the default model."""
    cfg = compose_config()
    size = cfg.data.image_size
    model = create_model_from_spec(plain(cfg.model), NUM_CLASSES)
    say(f"latency: exporting {cfg.model.name} to ONNX (opset {cfg.export.opset})")
    path = export_onnx(model, work / "model.onnx", size, cfg.export.opset)
    runners = {"torch": torch_runner(model), "onnx": onnx_runner(session(path))}
    result = latency(runners, size, BATCH_SIZES, plan.latency_runs)
    how = f"{cfg.model.name} {size} px, median of {plan.latency_runs} calls"
    eager_how, ort_how = f"{how}, {torch.get_num_threads()} threads", f"{how}, the pipeline's session options"
    figures = []
    for n in BATCH_SIZES:
        eager, ort = result[f"latency_ms_torch_b{n}"], result[f"latency_ms_onnx_b{n}"]
        name, key = f"Latency b{n}", f"latency.b{n}"
        figures += [
            Figure(f"{key}.eager_ms", f"{name}: PyTorch eager", eager, "ms", eager_how),
            Figure(f"{key}.ort_ms", f"{name}: onnxruntime", ort, "ms", ort_how),
            Figure(f"{key}.speedup", f"{name}: eager / onnxruntime", eager / ort, ""),
        ]
    return figures


# ---- 4. smoke run and start-up ----


def child_env() -> dict[str, str]:
    """Without the parent make's command-line variables (`make bench ARGS=--quick` exports ARGS and hands
    its overrides on in MAKEFLAGS) and without MLFLOW_TRACKING_URI, which would send the smoke run to the
    user's store."""
    dropped = {"ARGS", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "MLFLOW_TRACKING_URI"}
    return {k: v for k, v in os.environ.items() if k not in dropped} | {"NO_ALBUMENTATIONS_UPDATE": "1"}


def timed_run(command: list[str], log: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS in MiB of the largest process in the command's tree: wait4's rusage
    covers the child and every descendant it waited for, as /usr/bin/time -v reports it."""
    with open(log, "w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(command, cwd=ROOT, env=child_env(), stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; Popen must not wait again
    if proc.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise RuntimeError(f"`{' '.join(command)}` exited with {proc.returncode}; its output ended:\n{tail}")
    return wall, usage.ru_maxrss / 1024


def process_figures(plan: Plan, work: Path) -> list[Figure]:
    say("make smoke (MLflow store, outputs and data cache in a temporary folder)")
    smoke = ["make", "--no-print-directory", "smoke", f"tracking.dir={work / 'mlruns'}"]
    smoke += [f"hydra.run.dir={work / 'out'}", f"data.cache_dir={work / 'cache'}"]
    wall, rss = timed_run(smoke, work / "smoke.log")
    say(f"python -m pipeline --help x{plan.startup_runs}")
    help_command = [sys.executable, "-m", "pipeline", "--help"]
    startup = median(timed_run(help_command, work / "help.log")[0] for _ in range(plan.startup_runs))
    rss_how = "the largest process of make's tree (wait4's rusage, what /usr/bin/time -v reports)"
    stages = {stage: stage_seconds(work / "mlruns", stage) for stage in Config().stages}  # the smoke runs all
    return [
        Figure("smoke.wall_s", "make smoke: wall time", wall, "s", "5 stages, cold data cache", ceiling=30),
        *[
            Figure(f"smoke.{stage}_s", f"make smoke: {stage} stage", sec, "s", "its MLflow run's duration")
            for stage, sec in stages.items()
        ],
        Figure(
            "smoke.outside_stages_s",
            "make smoke: outside the stages",
            wall - sum(stages.values()),
            "s",
            "start-up (imports, a new MLflow store), the pipeline run's own records, exit",
        ),
        Figure("smoke.max_rss_mib", "make smoke: peak RSS", rss, "MiB", rss_how),
        Figure(
            "cli.help_s",
            "python -m pipeline --help",
            startup,
            "s",
            f"median of {plan.startup_runs}",
            ceiling=1,
        ),
    ]


# ---- 5. real photos: training throughput against bare compute, and the sanity stage ----


@contextmanager
def bench_store():
    """In this process, runs go to the bench's own store (tracking.dir), never to MLFLOW_TRACKING_URI's, as
    child_env does for the commands it starts."""
    with mock.patch.dict(os.environ):
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        yield


def stage_seconds(tracking_dir: Path, stage: str) -> float:
    """Wall seconds of the newest stage run of that name in the embedded store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tracking_dir / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    (found,) = client.search_runs(experiments, f"tags.mlflow.runName = '{stage}'", max_results=1)
    return (found.info.end_time - found.info.start_time) / 1000


def folder_figures(plan: Plan, work: Path) -> list[Figure]:
    """stages=[data,sanity,train] on the hand-sign photos (resnet18, batch 64, default loader settings), in
    this process: each training step of the last epoch paired with a bare step on the same batch
    (PairedSteps), their total times compared, so loading stalls count against the pipeline; and the sanity
    stage's seconds. Skipped, with a line, where ../shared is absent (a user's clone)."""
    if not HAND_SIGNS.is_dir():
        say(f"real-folder figures skipped: {HAND_SIGNS} not found")
        return []
    figures = []
    for size in plan.folder_sizes:
        say(f"hand-sign photos, resnet18 {size} px b64, {plan.folder_epochs} epoch(s), paired steps")
        cfg = compose_config(
            "data=folder", f"data.root={HAND_SIGNS}", "stages=[data,sanity,train]", "data.audit=false",
            "model=resnet18", f"data.image_size={size}", "data.batch_size=64",
            f"trainer.max_epochs={plan.folder_epochs}", "trainer.enable_progress_bar=false",
            f"output_dir={work / f'folder{size}'}", f"tracking.dir={work / 'mlruns'}",
            f"data.cache_dir={work / 'cache'}",
        )  # fmt: skip
        pairs = PairedSteps(bare_step(*bare_parts(cfg)))
        with bench_store():
            run_pipeline(cfg, callbacks=(pairs,))
        ours, bare = pairs.step_seconds(warmup=0)
        how = (
            f"last of {plan.folder_epochs} epoch(s), {len(ours)} steps: total bare / total pipeline; "
            f"pipeline {64 * len(ours) / ours.sum():.0f} img/s, bare {64 * len(bare) / bare.sum():.0f}"
        )
        figures += [
            Figure(f"folder.resnet18_{size}.ratio", f"Real photos {size} px: pipeline / bare",
                   bare.sum() / ours.sum(), "", how, target=FOLDER_TARGET),
            Figure(f"folder.resnet18_{size}.sanity_s", f"Sanity stage, real photos {size} px",
                   stage_seconds(work / "mlruns", "sanity"), "s", "overfit one batch and the other checks"),
        ]  # fmt: skip
    return figures


# ---- report ----


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or "unknown"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown")


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"{commit} (uncommitted changes)" if dirty else commit


def machine() -> dict:
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "commit": git_commit(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],  # taken before the run: other work on the machine
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {name: importlib.metadata.version(name) for name in PACKAGES},
    }


def fmt(value: float) -> str:
    return f"{value:.3f}" if abs(value) < 10 else f"{value:,.1f}"


def markdown(figures: list[Figure], info: dict, quick: bool) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    lines = [
        "# Benchmarks" + (" (--quick: too few steps for real figures)" if quick else ""),
        "",
        f"{info['date']}, commit {info['commit']}",
        "",
        f"Machine: {info['cpu_count']} CPUs ({info['cpu_model']}), torch threads {info['torch_threads']}, "
        f"load average {info['load_average_1min']:.2f} before the run and "
        f"{info['load_average_after']:.2f} after, {info['platform']}, "
        f"Python {info['python']}; {versions}.",
        "",
        "| figure | value | target | how |",
        "|---|---|---|---|",
    ]
    for f in figures:
        lines.append(f"| {f.label} | {f'{fmt(f.value)} {f.unit}'.rstrip()} | {f.goal()} | {f.note} |")
    lines += ["", "A ratio above 1 favours the pipeline (throughput) or onnxruntime (latency)."]
    return "\n".join(lines) + "\n"


def write_reports(figures: list[Figure], info: dict, out: Path, quick: bool = False) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "report.md", out / "report.json"
    md.write_text(markdown(figures, info, quick))
    rows = [{**asdict(f), "met": f.met} for f in figures]
    js.write_text(json.dumps({"machine": info, "quick": quick, "figures": rows}, indent=2) + "\n")
    return md, js


def quiet_lightning() -> None:
    """Every fit would repeat Lightning's banner and tip, and warnings that are expected here (no val loader,
    so no val/acc for the best checkpoint) or known (LeafSpec); its other warnings still show."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    for message in (
        ".*validation_step.*val_dataloader.*",
        ".*LeafSpec.*",
        ".*could not find the monitored key.*",
    ):
        warnings.filterwarnings("ignore", message=message)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps of everything, to check the bench")
    parser.add_argument("--out", type=Path, default=ROOT / "bench", help="where report.md and .json go")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else Plan()
    quiet_lightning()
    info, start = machine(), time.perf_counter()
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        figures += process_figures(plan, work)
        for model in plan.models:
            figures += train_figures(model, plan, work)
        figures += data_figures(plan, work)
        figures += latency_figures(plan, work)
        figures += folder_figures(plan, work)
    info["load_average_after"] = os.getloadavg()[0]
    md, js = write_reports(figures, info, args.out, args.quick)
    print(md.read_text())
    say(f"done in {time.perf_counter() - start:.0f} s: {md} and {js}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
