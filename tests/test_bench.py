"""The bench's own logic (scripts/bench.py) on made-up numbers: paired steps with the bare step taken out,
targets marked in both reports, and a torchvision side that computes the pipeline's tensors. No timing is
asserted: a bench reports, it does not fail."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script
from omegaconf import OmegaConf
from PIL import Image

from pipeline.data.transforms import eval_transform, train_transform


@pytest.fixture(scope="module")
def bench():
    return load_script("bench")


def test_paired_steps_take_the_bare_step_out_of_the_pipelines_interval(bench):
    pairs = bench.PairedSteps(lambda x, y: None)
    pairs.ends = [0.0, 1.0, 2.0, 3.0, 3.5, 4.0, 4.6]  # the epoch's start, then six step ends
    pairs.bare = [0.5, 0.5, 0.5, 0.2, 0.2, 0.3]  # the bare steps inside those intervals
    pipeline, bare = pairs.step_seconds(warmup=3)
    assert pipeline == pytest.approx([0.3, 0.3, 0.3]) and bare == pytest.approx([0.2, 0.2, 0.3])
    pipeline, _ = pairs.step_seconds(warmup=0)  # the first interval holds the epoch's first batch loading
    assert pipeline == pytest.approx([0.5, 0.5, 0.5, 0.3, 0.3, 0.3])


def test_in_process_runs_keep_out_of_the_users_store(bench, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://users-server:5000")
    with bench.bench_store():
        assert "MLFLOW_TRACKING_URI" not in bench.os.environ
    assert bench.os.environ["MLFLOW_TRACKING_URI"] == "http://users-server:5000"  # theirs again afterwards


def test_reports_mark_each_target(bench, tmp_path):
    figures = [
        bench.Figure("a.ratio", "A: pipeline / bare", np.float64(0.97), "", target=0.95),  # numpy sums
        bench.Figure("b.ratio", "B: pipeline / bare", 0.9, "", target=0.95),
        bench.Figure("c.ms", "C: latency", 1234.5, "ms", "median of 5"),
        bench.Figure("d.s", "D: start-up", 1.2, "s", "", ceiling=1),
    ]
    md, js = bench.write_reports(figures, {**bench.machine(), "load_average_after": 0.5}, tmp_path / "bench")
    report = json.loads(js.read_text())
    assert [f["met"] for f in report["figures"]] == [True, False, None, False]
    assert report["machine"]["torch_threads"] >= 1
    rows = md.read_text().splitlines()
    assert "| A: pipeline / bare | 0.970 | >= 0.95 (met) |  |" in rows
    assert "| B: pipeline / bare | 0.900 | >= 0.95 (missed) |  |" in rows
    assert "| C: latency | 1,234.5 ms |  | median of 5 |" in rows
    assert "| D: start-up | 1.200 s | <= 1 (missed) |  |" in rows


def test_torchvision_side_computes_the_pipelines_tensors(bench):
    pre = bench.Preprocess(32, *bench.NORMALIZE)
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    theirs = bench.torchvision_transform(pre, [])(Image.fromarray(image))
    ours = eval_transform(pre)(image=image)["image"]
    assert (theirs - ours).abs().max() <= 1 / 255 / min(pre.std) + 1e-6  # one grey level of rounding

    light = [OmegaConf.to_container(s) for s in bench.compose_config().augment.train]
    augmented = bench.torchvision_transform(pre, light)(Image.fromarray(image))
    assert augmented.shape == train_transform(pre, light)(image=image)["image"].shape


def test_an_augmentation_without_a_counterpart_is_refused(bench):
    with pytest.raises(ValueError, match="HorizontalFlip"):
        bench.torchvision_augmentations([{"_target_": "albumentations.HorizontalFlip", "p": 0.5}])


def test_bench_serve_mixes_in_one_bad_request_in_four_of_each_kind():
    bench = load_script("bench_serve")
    bodies = bench.mixed([b"image"] * 16, bad_share=0.25)
    bad = [body for good, body in bodies if not good]
    assert len(bodies) == 16 and len(bad) == 4 and len(set(bad)) == 4
    assert set(bad) == set(bench.bad_bodies().values())


def test_gpu_check_says_in_one_line_that_there_is_no_gpu_and_exits_0(tmp_path):
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"
    done = subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert done.returncode == 0 and done.stdout.strip().startswith("gpu-check: no CUDA device"), done.stderr
    assert list(tmp_path.iterdir()) == []  # no report without a GPU


def test_bench_sweep_pairs_each_pruned_search_with_its_unpruned_one():
    sweep = load_script("bench_sweep")
    results = [
        {"mode": "unpruned", "repeat": 0, "wall_s": 200.0, "best_value": 0.98, "complete": 16, "pruned": 0},
        {"mode": "pruned", "repeat": 0, "wall_s": 80.0, "best_value": 0.9775, "complete": 6, "pruned": 10},
    ]  # fmt: skip
    info = {"date": "d", "commit": "c", "cpu_count": 2, "load_before": 0.5, "load_after": 1.0}
    text = sweep.report(results, info, type("Args", (), {"set": [], "trials": 16})())
    assert "| 0 | pruned | 0.40x | -0.0025 |" in text
