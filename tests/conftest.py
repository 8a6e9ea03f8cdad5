"""Shared fixtures: tiny image folders made in tmp_path and the real config, composed and shrunk."""

import os
import shutil
import socket
import subprocess
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from PIL import Image  # noqa: E402

from pipeline import process_group  # noqa: E402
from pipeline.schema import register  # noqa: E402

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
PATTERNS = ("stripes_h", "stripes_v", "checker")


def pattern_image(kind: str, size: int, rng: np.random.Generator) -> Image.Image:
    """A noisy, randomly shifted stripe or checker pattern: easy to learn, never identical twice."""
    yy, xx = np.mgrid[0:size, 0:size] + rng.integers(0, 4, size=2)[:, None, None]
    grid = {"stripes_h": (yy // 3) % 2, "stripes_v": (xx // 3) % 2, "checker": ((yy // 3) + (xx // 3)) % 2}[
        kind
    ]
    pixels = grid * 200 + rng.normal(0, 20, (size, size)) + 25
    colour = rng.uniform(0.6, 1.0, 3)
    return Image.fromarray(np.clip(pixels[..., None] * colour, 0, 255).astype(np.uint8))


def make_image_folder(root: Path, per_class: int = 12, size: int = 24, splits: tuple[str, ...] = (), seed=0):
    """root/<class>/*.png, or root/<split>/<class>/*.png when splits are given."""
    rng = np.random.default_rng(seed)
    for split in splits or ("",):
        for kind in PATTERNS:
            folder = root / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pattern_image(kind, size, rng).save(folder / f"{i:03d}.png")
    return root


def make_multilabel_folder(root: Path, images: int = 48, cell: int = 16, splits: bool = True, seed=0) -> Path:
    """root/images/*.png, each a 2x2 grid showing one to three of the patterns (blank cells grey), and
    root/labels.csv (path,labels[,split]; labels joined by ";"); returns the labels file."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    rows = ["path,labels,split" if splits else "path,labels"]
    for n in range(images):
        shown = sorted(rng.choice(PATTERNS, size=int(rng.integers(1, 4)), replace=False).tolist())
        canvas = Image.new("RGB", (2 * cell, 2 * cell), (128, 128, 128))
        for kind, at in zip(shown, rng.permutation(4)[: len(shown)], strict=True):
            canvas.paste(pattern_image(kind, cell, rng), ((at % 2) * cell, (at // 2) * cell))
        canvas.save(root / "images" / f"{n:03d}.png")
        split = ("train", "train", "train", "val", "test")[n % 5]
        rows.append(f"images/{n:03d}.png,{';'.join(shown)}" + (f",{split}" if splits else ""))
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def load_script(name: str):
    """A script of scripts/ (not a package) imported as a module, for testing its functions."""
    import importlib.util

    path = Path(CONF_DIR).parent / "scripts" / f"{name}.py"
    if (
        str(path.parent) not in sys.path
    ):  # as when run: a script imports its neighbours (bench_common) by name
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m pipeline <args>` in a child process, as a user runs it."""
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONPATH": str(Path(CONF_DIR).parent)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def artifact_paths(client, run_id: str, path: str | None = None) -> set[str]:
    """Every artifact file of an MLflow run, as paths relative to its artifact root."""
    out = set()
    for item in client.list_artifacts(run_id, path):
        out |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return out


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """The URL of a real MLflow tracking server (scripts/mlflow_server.py) on a free loopback port, for the
    module's tests; stopped at the end of the module whatever happens."""
    script, port = load_script("mlflow_server"), free_port()
    proc = script.start(tmp_path_factory.mktemp("server"), port=port)
    url = f"http://127.0.0.1:{port}"
    try:
        process_group.wait_ready(url, proc)
        yield url
    finally:
        process_group.stop(proc)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "images")


@pytest.fixture(autouse=True)
def _no_outside_tracking(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(autouse=True)
def _cli_runs_on_the_cpu(request, monkeypatch):
    """A pipeline started as a child process sees no GPU unless the test is marked `gpu` (in-process runs
    compose trainer=cpu): on a GPU machine, CLI tests would otherwise train on it, or under DDP."""
    if "gpu" not in request.keywords:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


def compose_cfg(tmp: Path, *overrides: str, root: Path | None = None):
    """Compose conf/config.yaml as the CLI would, pointed at the folder `tmp` and shrunk for CPU tests."""
    register()
    base = [
        f"output_dir={tmp / 'out'}",
        f"tracking.dir={tmp / 'mlruns'}",
        f"data.cache_dir={tmp / 'cache'}",
        "trainer=cpu",
        "trainer.enable_progress_bar=false",
        "data.audit=false",  # tests/test_audit.py turns it on, with the backbone exported once (audit_cache)
    ]
    if root is not None:
        base.append(f"data.root={root}")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=[*base, *overrides])


@pytest.fixture(scope="session")
def audit_cache(tmp_path_factory) -> Path:
    """One data.cache_dir for the tests that embed images: the backbone's ONNX export (~6 s) happens once."""
    return tmp_path_factory.mktemp("audit-cache")


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An embedded MLflow store with its tables made: creating them costs ~1.4 s a store, copying ~0.03 s."""
    from mlflow.tracking import MlflowClient

    store = tmp_path_factory.mktemp("template") / "mlruns"
    MlflowClient(f"sqlite:///{store / 'mlflow.db'}").search_experiments()
    return store


def experiments_in(tmp: Path) -> list[str]:
    """The experiment names the store under `tmp` holds, beyond MLflow's own Default."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}")
    return [e.name for e in client.search_experiments() if e.name != "Default"]


@pytest.fixture
def store(tmp_path: Path, empty_store: Path) -> Path:
    """tmp_path/mlruns, the embedded store tests record to, ready made and empty."""
    shutil.copytree(empty_store, tmp_path / "mlruns")
    return tmp_path / "mlruns"


@pytest.fixture
def make_cfg(tmp_path: Path, store: Path):
    """Composes configs for tmp_path, recording to `store`."""

    def _make(*overrides: str, root: Path | None = None):
        return compose_cfg(tmp_path, *overrides, root=root)

    return _make
