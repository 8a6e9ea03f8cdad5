"""The export stage on a tiny trained model: the ONNX file describes itself, matches PyTorch, is timed,
quantized with its metadata, and logged and registered as an MLflow model."""

import base64
import http.client
import io
import json
import math
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from conftest import compose_cfg, free_port, make_image_folder
from mlflow.tracking import MlflowClient
from PIL import Image

from pipeline import process_group
from pipeline.data.sources import build_index
from pipeline.data.transforms import Preprocess
from pipeline.errors import PipelineError
from pipeline.export import benchmark
from pipeline.export.benchmark import WARMUP_RUNS, latency
from pipeline.export.compare import accuracy, agreement, collect_logits
from pipeline.export.metadata import describe, read_metadata
from pipeline.export.quantize import nodes_feeding, quantize_int8
from pipeline.export.served import newest_model_uri
from pipeline.export.serving_app import start_server
from pipeline.models.module import load_classifier
from pipeline.runner import run
from pipeline.stages.export import fitted_metadata

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
RUN_MAX_PIXELS = 50_000_000  # the exported model carries it to predict and serve
EXPORT = [
    "stages=[train,calibrate,validate,export]",  # calibrate fits the temperature, sets and unknown answer
    "validate.gradcam=0",
    "validate.top_losses=0",
    "model=simple_cnn",
    "model.kwargs.channels=[4,8]",
    "model.kwargs.convs_per_block=1",
    "augment=none",
    "data.image_size=16",
    "data.batch_size=8",
    f"data.max_pixels={RUN_MAX_PIXELS}",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "optimizer.lr=0.01",
    "export.quantize=static",
    "export.register=true",
    "export.model_name=tiny-cnn",
    "export.latency_runs=2",
    "tracking.run_name=exported",
]
TIMED = [
    f"{kind}_{runner}_b{n}"
    for kind in ("latency_ms", "throughput")
    for runner in ("torch", "onnx", "int8")
    for n in (1, 32)
]


@dataclass
class Exported:
    out: Path
    root: Path
    client: MlflowClient
    parent: mlflow.entities.Run
    export: mlflow.entities.Run


@pytest.fixture(scope="module")
def exported(tmp_path_factory, empty_store) -> Exported:
    tmp = tmp_path_factory.mktemp("export")
    shutil.copytree(empty_store, tmp / "mlruns")
    root = make_image_folder(tmp / "images", per_class=8, size=16)
    run(compose_cfg(tmp, *EXPORT, root=root))
    client = MlflowClient(f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("image-classification").experiment_id
    (parent,) = client.search_runs([experiment], "attributes.run_name = 'exported'")
    (export,) = client.search_runs(
        [experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}' and tags.stage = 'export'"
    )
    return Exported(tmp / "out", root, client, parent, export)


def metadata(path: Path) -> dict:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return read_metadata(sess.get_modelmeta().custom_metadata_map, str(path))


def test_onnx_file_carries_the_checkpoint_preprocessing_and_classes(exported):
    classifier = load_classifier(exported.out / "checkpoints" / "best.ckpt")
    preprocess = Preprocess.from_dict(classifier.hparams.preprocess)
    names = ["checker", "stripes_h", "stripes_v"]
    fitted = fitted_metadata(classifier.trust)
    assert fitted["conformal"] is not None and fitted["unknown"]["output"] == "unknown_score"
    found = metadata(exported.out / "model.onnx")
    expected = describe(
        preprocess.to_dict(),
        names,
        "input",
        "logits",
        RUN_MAX_PIXELS,
        **fitted,
        provenance=found["provenance"],
    )  # the provenance: the next test
    assert found == expected
    graph = onnx.load(str(exported.out / "model.onnx")).graph
    assert [o.name for o in graph.output] == ["logits", "unknown_score"]
    (batch, *rest) = graph.input[0].type.tensor_type.shape.dim
    assert batch.dim_param and [d.dim_value for d in rest] == [3, 16, 16]  # dynamic batch, fixed image


def test_parity_accuracy_and_timings_are_logged(exported):
    metrics = {k.removeprefix("export/"): v for k, v in exported.export.data.metrics.items()}
    assert metrics["parity_max_abs_diff"] <= 1e-4 and metrics["parity_top1_agreement"] == 1.0
    val = build_index(exported.root, 0.2, 0.0, 42).split("val")  # the split the stage rebuilt
    assert metrics["parity_images"] == len(val) > 0
    correct = metrics["onnx_acc"] * len(val)  # a share of these very images, not of some other set
    assert correct == pytest.approx(round(correct))
    assert abs(metrics["int8_acc"] - metrics["onnx_acc"]) <= 1 - metrics["int8_top1_agreement"] + 1e-9
    assert metrics["int8_acc_change"] == pytest.approx(metrics["int8_acc"] - metrics["onnx_acc"])
    for name in TIMED:
        assert metrics[name] > 0, name
    assert metrics["throughput_onnx_b32"] == pytest.approx(32_000 / metrics["latency_ms_onnx_b32"])
    assert metrics["int8_speedup_b1"] == pytest.approx(
        metrics["latency_ms_onnx_b1"] / metrics["latency_ms_int8_b1"]
    )
    assert metrics["onnx_size_mb"] == pytest.approx((exported.out / "model.onnx").stat().st_size / 2**20)
    headline = exported.parent.data.metrics
    assert {"export/parity_max_abs_diff", "export/latency_ms_onnx_b1", "export/int8_acc_change"} <= set(
        headline
    )
    assert "export/latency_ms_torch_b32" not in headline  # details stay on the export run


def test_int8_model_keeps_the_metadata_and_is_quantized_statically(exported):
    int8 = exported.out / "model.int8.onnx"
    assert metadata(int8) == metadata(exported.out / "model.onnx")
    graph = onnx.load(str(int8)).graph
    ops = [node.op_type for node in graph.node]
    assert {"QuantizeLinear", "DequantizeLinear"} <= set(ops)  # QDQ: onnxruntime runs QLinearConv
    int8_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) > 1]
    fp32 = onnx.load(str(exported.out / "model.onnx")).graph
    logits_path = set(nodes_feeding(fp32, fp32.output[0].name))
    weighted = [n for n in fp32.node if n.op_type in ("Conv", "Gemm", "MatMul") and n.name in logits_path]
    assert len(int8_weights) == len(weighted)  # the logits' layers, not the unknown score's distances
    artifacts = {a.path for a in exported.client.list_artifacts(exported.export.info.run_id)}
    assert {"model.onnx", "model.int8.onnx"} <= artifacts


def test_the_int8_model_s_unknown_score_follows_the_fp32_one(exported):
    """Quantized, the distances behind the unknown score collapsed (every image scored alike); they stay in
    fp32, fed by the quantized network's features."""
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, size=(24, 3, 16, 16)).astype(np.float32)
    images[12:] = images[12:, :, :1, :1]  # half of them flat colours
    scores = {
        name: ort.InferenceSession(str(exported.out / name)).run(None, {"input": images})[1]
        for name in ("model.onnx", "model.int8.onnx")
    }
    assert np.corrcoef(scores["model.onnx"], scores["model.int8.onnx"])[0, 1] > 0.99  # quantized: 0.94


def input_scale(path: Path) -> float:
    """The scale with which a statically quantized model quantizes its input: set by calibration."""
    graph = onnx.load(str(path)).graph
    (node,) = [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input"]
    (scale,) = [t for t in graph.initializer if t.name == node.input[1]]
    return float(onnx.numpy_helper.to_array(scale))


def test_static_ranges_come_from_the_calibration_images(exported, tmp_path):
    fp32 = exported.out / "model.onnx"
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(4, 3, 16, 16)).astype(np.float32) for _ in range(2)]
    narrow = quantize_int8(fp32, tmp_path / "narrow.onnx", "static", batches)
    wide = quantize_int8(fp32, tmp_path / "wide.onnx", "static", [b * 10 for b in batches])
    assert input_scale(wide) == pytest.approx(10 * input_scale(narrow), rel=1e-3)
    with pytest.raises(ValueError, match="calibration"):
        quantize_int8(fp32, tmp_path / "none.onnx", "static")


def test_dynamic_int8_uses_integer_kernels_and_keeps_the_metadata(exported, tmp_path):
    dynamic = quantize_int8(exported.out / "model.onnx", tmp_path / "dynamic.onnx", "dynamic")
    assert metadata(dynamic) == metadata(exported.out / "model.onnx")
    ops = {node.op_type for node in onnx.load(str(dynamic)).graph.node}
    assert "ConvInteger" in ops and "Conv" not in ops
    assert "MatMulInteger" not in ops  # the unknown score's distances, the only MatMuls, stay in fp32


def test_the_image_classifier_is_logged_registered_and_linked_to_the_parent_run(exported):
    (version,) = exported.client.search_model_versions("name = 'tiny-cnn'")
    assert version.run_id == exported.export.info.run_id
    info = mlflow.models.get_model_info(version.source)
    assert info.signature.inputs.input_names() == ["image", "path"]
    assert info.signature.outputs.input_names() == [
        "label",
        "probability",
        "top_labels",
        "top_probabilities",
        "prediction_set",
        "unknown",
        "unknown_score",
        "labels",
        "probabilities",
        "note",
        "error",
    ]
    assert "python_function" in info.flavors and info.saved_input_example_info is not None
    (linked,) = exported.parent.outputs.model_outputs
    assert linked.model_id == info.model_id


def test_the_model_names_the_run_that_made_it_and_serve_passes_over_smoke_runs(exported):
    made = metadata(exported.out / "model.onnx")["provenance"]
    assert (made["run_id"], made["run_name"], made["smoke"]) == (
        exported.parent.info.run_id,
        "exported",
        False,
    )
    assert made["scores"]["test/acc"] == pytest.approx(exported.parent.data.metrics["test/acc"], abs=1e-4)
    uri = exported.client.tracking_uri
    model_id = exported.parent.outputs.model_outputs[0].model_id
    assert newest_model_uri(uri) == f"models:/{model_id}"
    exported.client.set_logged_model_tags(model_id, {"smoke": "true"})  # as a debug=smoke run tags its model
    try:
        with pytest.raises(PipelineError, match="only models of smoke runs"):
            newest_model_uri(uri)
    finally:
        exported.client.set_logged_model_tags(model_id, {"smoke": "false"})


def served_model(exported):
    return mlflow.pyfunc.load_model(f"models:/{exported.parent.outputs.model_outputs[0].model_id}")


def predict_py(image: Path, model: Path) -> dict:
    """scripts/predict.py on one file, as a user runs it: its JSON line."""
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "predict.py"), str(image), "--model", str(model), "--top-k", "3"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(done.stdout)


def test_the_served_model_reads_bytes_and_paths_and_refuses_what_is_not_an_image(
    exported, tmp_path, monkeypatch
):
    monkeypatch.setenv("PIPELINE_SERVE_ROOT", str(exported.root))
    model = served_model(exported)
    image = next(exported.root.rglob("*.png"))
    by_bytes = model.predict(pd.DataFrame({"image": [image.read_bytes()]}), params={"top_k": 2})
    by_path = model.predict(pd.DataFrame({"path": [str(image.relative_to(exported.root))]}))
    assert by_bytes["label"][0] == by_path["label"][0] and len(by_bytes["top_labels"][0]) == 2
    assert by_bytes["probability"][0] == pytest.approx(by_path["probability"][0], abs=1e-9)
    # an image that cannot be read is that row's answer; the other rows are answered
    rows = model.predict(
        pd.DataFrame({"image": [b"hello", image.read_bytes(), None], "path": [None, None, "gone.png\0"]})
    )
    assert list(rows["error"]) == [
        "row 0: not an image this model can read (UnidentifiedImageError)",
        None,
        "row 2: 'path' is not a usable file name (ValueError)",
    ]
    assert (
        rows["label"][1] == by_bytes["label"][0] and rows["label"][0] is None and rows["top_labels"][0] == []
    )
    missing = model.predict(pd.DataFrame({"path": ["gone.png"]}))
    assert missing["error"][0] == "row 0: no such file in the served folder"
    for bad, reason in [
        ({"path": [""]}, "give the image"),
        ({"picture": ["x"]}, "no 'image' or 'path' column"),
    ]:
        with pytest.raises(mlflow.exceptions.MlflowException, match=re.escape(reason)):
            model.predict(pd.DataFrame(bad))
    for top_k in (0, -1):
        with pytest.raises(mlflow.exceptions.MlflowException, match="top_k must be a whole number >= 1"):
            model.predict(pd.DataFrame({"image": [image.read_bytes()]}), params={"top_k": top_k})


def refusal(model, frame: pd.DataFrame) -> tuple[int, str]:
    with pytest.raises(mlflow.exceptions.MlflowException) as refused:
        model.predict(frame)
    return refused.value.get_http_status_code(), refused.value.message


def test_the_served_model_reads_no_server_file_unless_a_folder_is_allowed(exported, tmp_path, monkeypatch):
    outside, allowed = tmp_path / "secret.png", tmp_path / "allowed"
    shutil.copy(next(exported.root.rglob("*.png")), outside)
    allowed.mkdir()
    (allowed / "link.png").symlink_to(outside)
    monkeypatch.delenv("PIPELINE_SERVE_ROOT", raising=False)
    status, message = refusal(served_model(exported), pd.DataFrame({"path": [str(outside)]}))
    assert status == 403 and "reads no files" in message
    monkeypatch.setenv("PIPELINE_SERVE_ROOT", str(allowed))
    model = served_model(exported)
    answers = {
        refusal(model, pd.DataFrame({"path": [path]}))
        for path in (
            str(outside),
            str(tmp_path / "missing.png"),
            "../secret.png",
            "../missing.png",
            "link.png",
        )
    }
    assert answers == {(403, "row 0: 'path' must name a file inside the served folder")}


def test_the_served_model_refuses_big_images_from_their_header_and_long_requests(exported, monkeypatch):
    monkeypatch.setenv("PIPELINE_SERVE_MAX_PIXELS", "10000")
    monkeypatch.setenv("PIPELINE_SERVE_MAX_ROWS", "2")
    model = served_model(exported)
    big = io.BytesIO()
    Image.new("1", (101, 100)).save(big, "PNG")
    answered = model.predict(pd.DataFrame({"image": [big.getvalue()]}))
    assert answered["error"][0] == "row 0: image too large: 101x100 = 10,100 pixels, above the cap of 10,000"
    small = next(exported.root.rglob("*.png")).read_bytes()
    assert len(model.predict(pd.DataFrame({"image": [small] * 2}))) == 2
    status, message = refusal(model, pd.DataFrame({"image": [small] * 3}))
    assert status == 400 and message == "3 images in one request; at most 2"


def test_error_replies_say_what_was_wrong_without_quoting_the_request(exported, monkeypatch):
    """MLflow's scoring app answered these by quoting the body whole, the image's first bytes, or the
    Content-Type header; through serving_app each is one line of its own (the app in-process: no port)."""
    from starlette.testclient import TestClient

    from pipeline.export.serving_app import MODEL_URI, create_app

    monkeypatch.setenv("MLFLOW_TRACKING_URI", exported.client.tracking_uri)
    monkeypatch.setenv(MODEL_URI, newest_model_uri(exported.client.tracking_uri))
    client = TestClient(create_app())
    image = base64.b64encode(next(exported.root.rglob("*.png")).read_bytes()).decode()
    secret = "SECRET-" * 40_000  # 240 KB
    json_type = {"Content-Type": "application/json"}
    with_image = {"dataframe_records": [{"image": image}]}
    cases = {  # body, headers -> status, what the reply must say
        "not JSON": (secret, json_type, 400, "valid JSON"),
        "top_k text": (
            json.dumps({**with_image, "params": {"top_k": secret[:5000]}}),
            json_type,
            400,
            "top_k",
        ),
        "top_k 0": (json.dumps({**with_image, "params": {"top_k": 0}}), json_type, 400, "top_k must be"),
        "no input field": (json.dumps({secret[:300]: 1}), json_type, 400, "exactly one of the input fields"),
        "content type": ("x", {"Content-Type": f"application/{secret[:200]}"}, 415, "content types"),
    }
    for name, (body, headers, status, says) in cases.items():
        reply = client.post("/invocations", content=body, headers=headers)
        assert reply.status_code == status, name
        document = reply.json()
        assert set(document) == {"error_code", "message"}, name  # no stack_trace
        assert says in document["message"] and len(document["message"]) <= 300, (name, document)
        assert "SECRET" not in reply.text and "PNG" not in reply.text and image[:20] not in reply.text, name
        assert (
            reply.headers["x-model-run"] == f"exported {exported.parent.info.run_id}"
        )  # which model answers


def post(url: str, records: list[dict]) -> tuple[int, dict]:
    body = json.dumps({"dataframe_records": records}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def blank_png(width: int, height: int) -> bytes:
    """A one-bit PNG of a few kilobytes that declares width x height pixels."""
    out = io.BytesIO()
    Image.new("1", (width, height)).save(out, "PNG")
    return out.getvalue()


@contextmanager
def make_serve(exported):
    """`make serve` (scripts/serve.py) on a free port: its URL, its process and pipeline.process_group."""
    server, port = process_group, free_port()
    uri = exported.client.tracking_uri
    proc = start_server(newest_model_uri(uri), port, uri)
    try:
        server.wait_ready(f"http://127.0.0.1:{port}", proc)
        yield f"http://127.0.0.1:{port}/invocations", proc, server
    finally:
        server.stop(proc)
    assert not server.group_alive(proc.pid)  # the whole group is gone


@pytest.mark.slow
def test_make_serve_reads_no_server_file_by_default(exported, tmp_path, monkeypatch):
    monkeypatch.delenv("PIPELINE_SERVE_ROOT", raising=False)
    image = next(exported.root.rglob("*.png"))
    with make_serve(exported) as (url, _, _):
        answers = [post(url, [{"path": str(path)}]) for path in (image, tmp_path / "missing.png")]
    assert answers[0] == answers[1] and answers[0][0] == 403, answers


@pytest.mark.slow
def test_make_serve_answers_like_predict_py_and_refuses_bad_requests_cheaply(exported, monkeypatch):
    monkeypatch.setenv("PIPELINE_SERVE_ROOT", str(exported.root))
    image = next(exported.root.rglob("*.png"))
    text = base64.b64encode(b"just some text").decode()
    bombs = [base64.b64encode(blank_png(side, side)).decode() for side in (16_000, 12_000)]
    with make_serve(exported) as (url, proc, server):
        status, answer = post(url, [{"image": base64.b64encode(image.read_bytes()).decode()}])
        predicted = predict_py(image, exported.out / "model.onnx")
        (row,) = answer["predictions"]
        assert status == 200 and set(row) == set(predicted) - {"path"}  # the same fields
        numbers = {"probability", "top_probabilities", "unknown_score"}
        for field, value in row.items():  # and the same values
            expected = pytest.approx(predicted[field], abs=1e-5) if field in numbers else predicted[field]
            assert value == expected, field
        status, answer = post(url, [{"image": text}])
        assert status == 200
        assert (
            answer["predictions"][0]["error"]
            == "row 0: not an image this model can read (UnidentifiedImageError)"
        )
        good = base64.b64encode(image.read_bytes()).decode()
        status, answer = post(url, [{"image": text}, {"image": good}])
        refused_row, answered_row = answer["predictions"]  # JSON null, not NaN, where a field is empty
        assert refused_row["label"] is None and answered_row["error"] is None and answered_row["note"] is None
        assert post(url, [{"path": str(image.relative_to(exported.root))}])[0] == 200
        assert post(url, [{"path": f"../{exported.root.name}/../x.png"}])[0] == 403
        memory = server.group_rss_mb(proc.pid)
        for bomb in bombs:
            start = time.perf_counter()
            status, answer = post(url, [{"image": bomb}])
            assert status == 200 and answer["predictions"][0]["error"].startswith("row 0: image too large")
            assert time.perf_counter() - start < 0.5
        assert server.group_rss_mb(proc.pid) - memory < 100
        assert post(url, [{"image": base64.b64encode(image.read_bytes()).decode()}])[0] == 200


def raw_post(url: str, headers: dict, chunks: list[bytes]) -> tuple[int, dict]:
    """A POST whose headers and body chunks are sent exactly as given; the status and JSON answer."""
    parsed = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    try:
        connection.putrequest("POST", parsed.path)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        for chunk in chunks:
            connection.send(chunk)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.mark.slow
def test_make_serve_refuses_a_body_over_the_cap_before_reading_it(exported, monkeypatch):
    monkeypatch.setenv("PIPELINE_SERVE_MAX_BYTES", "100000")
    image = base64.b64encode(next(exported.root.rglob("*.png")).read_bytes()).decode()
    json_type = {"Content-Type": "application/json"}
    with make_serve(exported) as (url, _, _):
        # declared far over the cap, and not one byte of body sent: answered from the header
        status, answer = raw_post(url, {**json_type, "Content-Length": str(10**9)}, [])
        assert status == 413 and answer["message"].startswith("request body of 1,000,000,000+ bytes")
        # chunked, no length declared: refused once the chunks pass the cap
        chunk = b"%x\r\n%s\r\n" % (50_000, b" " * 50_000)
        status, answer = raw_post(url, {**json_type, "Transfer-Encoding": "chunked"}, [chunk] * 3)
        assert status == 413 and "at most 100,000" in answer["message"]
        assert post(url, [{"image": image}])[0] == 200  # a body under the cap, after both


def test_compare_measures_difference_agreement_and_accuracy():
    batches = [(np.ones((2, 3, 4, 4), np.float32), np.array([0, 1])), (np.zeros((1, 3, 4, 4)), np.array([1]))]
    runners = {
        "a": lambda x: np.stack([x.mean((1, 2, 3)), 1 - x.mean((1, 2, 3))], axis=1),
        "b": lambda x: np.stack([x.mean((1, 2, 3)), 0.25 + 0 * x.mean((1, 2, 3))], axis=1),
    }
    logits, labels = collect_logits(runners, batches)
    assert logits["a"].shape == (3, 2) and labels.tolist() == [0, 1, 1]
    assert agreement(logits["a"], logits["b"]) == {"max_abs_diff": 0.75, "top1_agreement": 1.0}
    assert accuracy(logits["a"], labels) == pytest.approx(2 / 3)


def test_latency_times_each_runner_after_a_warm_up():
    calls: dict[str, list[int]] = {"fast": [], "slow": []}

    def runner(name, seconds):
        def run(x):
            calls[name].append(len(x))
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                pass

        return run

    result = latency({"fast": runner("fast", 0.0), "slow": runner("slow", 0.002)}, 8, (1, 4), runs=3)
    assert calls["fast"] == [1] * (WARMUP_RUNS + 3) + [4] * (WARMUP_RUNS + 3)
    assert result["latency_ms_slow_b4"] >= 2 > result["latency_ms_fast_b4"]
    assert result["throughput_slow_b4"] == pytest.approx(4000 / result["latency_ms_slow_b4"])


def test_a_runner_slower_than_the_budget_is_timed_fewer_times_but_never_under_the_minimum(monkeypatch):
    """A large model at batch 32 takes most of a second a run: the export's figures must not take minutes."""
    clock = [0.0]
    monkeypatch.setattr(benchmark.time, "perf_counter", lambda: clock[0])
    calls = []

    def run(x):
        calls.append(len(x))
        clock[0] += 0.6  # seconds a run

    result = latency({"big": run}, 8, (32,), runs=20)
    warm_ups = min(WARMUP_RUNS, math.floor(benchmark.BUDGET_S / 2 / 0.6) + 1)  # until past half the budget
    timed = max(benchmark.MIN_RUNS, math.ceil(benchmark.BUDGET_S / 0.6))  # the minimum, or the budget filled
    assert len(calls) == warm_ups + timed < WARMUP_RUNS + 20
    assert result["latency_ms_big_b32"] == pytest.approx(600)
