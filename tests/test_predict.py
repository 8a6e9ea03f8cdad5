"""Prediction from the ONNX file alone: the eval transform reproduced from its metadata, corrupt files
skipped, one error line for a model that is not ours, and no torch in the process."""

import csv
import io
import json
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from pipeline.data.transforms import Preprocess, eval_transform
from pipeline.export.inference import Prediction, Skipped, decode_rgb, expand_inputs, load_classifier, predict
from pipeline.export.inference import preprocess as numpy_preprocess
from pipeline.export.metadata import FORMAT_VERSION, describe, write_metadata

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "predict.py"
PRE = Preprocess(24, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
MODEL_MAX_PIXELS = 20_000  # the data.max_pixels the model was exported with
COLOURS = {"red": (220, 30, 40), "green": (20, 200, 30), "blue": (30, 40, 210)}


def colour_model(path: Path) -> Path:
    """A hand-made classifier: logits = per-channel mean of the normalized image, classes red, green, blue,
    and an unknown score output = the largest of the three. Its answers are known without training, and it is
    written in milliseconds."""
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input", "axes"], ["means"], keepdims=0),
            helper.make_node("MatMul", ["means", "eye"], ["logits"]),
            helper.make_node("ReduceMax", ["means", "channel"], ["unknown_score"], keepdims=0),
        ],
        "colour",
        [
            helper.make_tensor_value_info(
                "input", TensorProto.FLOAT, ["batch", 3, PRE.image_size, PRE.image_size]
            )
        ],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("unknown_score", TensorProto.FLOAT, ["batch"]),
        ],
        [
            helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3]),
            helper.make_tensor("channel", TensorProto.INT64, [1], [1]),
            helper.make_tensor("eye", TensorProto.FLOAT, [3, 3], np.eye(3).ravel().tolist()),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.save(model, str(path))
    write_metadata(path, describe(PRE.to_dict(), list(COLOURS), "input", "logits", MODEL_MAX_PIXELS))
    return path


def colour_image(rgb: tuple[int, int, int], size=(31, 17)) -> Image.Image:
    noise = np.random.default_rng(sum(rgb)).integers(-20, 20, (size[1], size[0], 3))
    return Image.fromarray(np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8))


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    return colour_model(tmp_path / "colour.onnx")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Three readable colour images (PNG, JPEG, RGBA PNG), a corrupt one, a truncated one, a text file."""
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    colour_image(COLOURS["red"]).save(root / "a_red.png")
    colour_image(COLOURS["green"]).save(root / "sub" / "b_green.jpg", quality=95)
    colour_image(COLOURS["blue"]).convert("RGBA").save(root / "c_blue.png")
    (root / "d_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    whole = io.BytesIO()
    colour_image(COLOURS["red"], size=(64, 64)).save(whole, "PNG")
    (root / "e_truncated.png").write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    (root / "notes.txt").write_text("not an image suffix: a folder search leaves it out")
    return root


@pytest.mark.parametrize(
    "image",
    [
        colour_image((200, 120, 40), size=(37, 23)),  # non-square RGB, resized
        Image.fromarray(np.random.default_rng(1).integers(0, 256, (19, 45), dtype=np.uint8)),  # grayscale
        colour_image((10, 250, 90), size=(29, 29)).convert("RGBA"),  # RGBA
        colour_image((90, 90, 180), size=(24, 24)),  # already the model's size: no resize
    ],
    ids=["rgb_non_square", "grayscale", "rgba", "model_size"],
)
@pytest.mark.parametrize(
    "pre", [PRE, Preprocess(24, (0.5,) * 3, (0.5,) * 3, "bicubic", 0.875)], ids=["squeeze", "crop"]
)
def test_metadata_preprocessing_is_the_eval_transform_bit_for_bit(tmp_path, image, pre):
    path = tmp_path / "image.png"
    image.save(path)
    spec = describe(pre.to_dict(), ["x"], "input", "logits", MODEL_MAX_PIXELS)["preprocess"]
    expected = eval_transform(pre)(image=decode_rgb(str(path)))["image"].numpy()
    got = numpy_preprocess(decode_rgb(path), spec)
    assert got.dtype == np.float32 and got.shape == (3, pre.image_size, pre.image_size)
    assert np.array_equal(got, expected)


def test_corrupt_files_are_skipped_and_the_rest_predicted(model_path, folder):
    paths = expand_inputs([str(folder)])
    assert [p.name for p in paths] == [
        "a_red.png",
        "c_blue.png",
        "d_corrupt.png",
        "e_truncated.png",
        "b_green.jpg",
    ]
    results = list(predict(load_classifier(model_path), paths, batch_size=2, k=2))
    skipped = [r.path.name for r in results if isinstance(r, Skipped)]
    predicted = [r for r in results if isinstance(r, Prediction)]
    assert skipped == ["d_corrupt.png", "e_truncated.png"]
    assert [p.path.name for p in predicted] == ["a_red.png", "c_blue.png", "b_green.jpg"]
    assert [p.answer["label"] for p in predicted] == ["red", "blue", "green"]
    for p in predicted:
        probabilities = p.answer["top_probabilities"]
        assert len(p.answer["top_labels"]) == 2 and probabilities == sorted(probabilities, reverse=True)
        assert 1 / 3 < probabilities[0] == p.answer["probability"] < 1


def cli(argv: list[str]) -> int:
    return runpy.run_path(str(SCRIPT))["main"](argv)


def test_cli_writes_csv_reports_skips_and_exits_1(model_path, folder, tmp_path, capfd):
    out = tmp_path / "predictions.csv"
    code = cli(
        [str(folder / "*.png"), "--model", str(model_path), "--format", "csv", "--top-k", "9", "-o", str(out)]
    )
    stderr = capfd.readouterr().err.strip().splitlines()
    assert code == 1
    assert [line.split(":")[0] for line in stderr] == [
        f"model {model_path}",  # which file answers, first
        f"skipped {folder / 'd_corrupt.png'}",
        f"skipped {folder / 'e_truncated.png'}",
    ]
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert [(Path(r["path"]).name, r["label"], r["top_label_1"]) for r in rows] == [
        ("a_red.png", "red", "red"),
        ("c_blue.png", "blue", "blue"),
        ("d_corrupt.png", "", ""),
        ("e_truncated.png", "", ""),
    ]
    assert [r["error"].split(" (")[0] for r in rows] == ["", "", *["not an image this model can read"] * 2]
    assert "top_label_3" in rows[0] and "top_label_4" not in rows[0]  # top-k capped at the three classes


def test_cli_skips_an_image_above_the_models_pixel_cap_from_its_header(model_path, tmp_path, capfd):
    big = tmp_path / "big.png"
    Image.new("1", (200, 101)).save(big)
    assert cli([str(big), "--model", str(model_path)]) == 1
    assert (
        capfd.readouterr().err.strip().splitlines()[-1]
        == f"skipped {big}: image too large: 200x101 = 20,200 pixels, above the cap of 20,000"
    )
    assert cli([str(big), "--model", str(model_path), "--max-pixels", "20200"]) == 0  # raised by the caller


def test_cli_json_lines_exit_0_when_all_predicted(model_path, folder, capfd):
    assert cli([str(folder / "sub"), "--model", str(model_path), "--top-k", "1"]) == 0
    lines = capfd.readouterr().out.splitlines()
    assert [json.loads(line)["label"] for line in lines] == ["green"]


def with_metadata(model_path: Path, bad: Path, value: str) -> None:
    model = onnx.load(str(model_path))
    del model.metadata_props[:]
    if value:
        entry = model.metadata_props.add()
        entry.key, entry.value = "pipeline", value
    onnx.save(model, str(bad))


NOT_OURS = {  # kind -> what the one line says
    "text": "is not an ONNX model onnxruntime can load",
    "checkpoint_bytes": "is not an ONNX model onnxruntime can load",
    "onnx_without_metadata": "has no 'pipeline' metadata",
    "foreign_metadata": "has 'pipeline' metadata that this pipeline did not write",
    "newer_version": "was exported by a newer version of this pipeline (metadata format 99",
    "version_only": "metadata lacks input, output, class_names, preprocess: export it again",
    "no_mean": "metadata lacks preprocess.mean: export it again",
    "folder": "is a folder: give the .onnx file itself, e.g. MODEL=",
    "missing": "model file not found",
}


@pytest.mark.parametrize("kind", list(NOT_OURS))
def test_a_model_that_is_not_ours_is_one_error_line_and_exit_2(model_path, folder, tmp_path, capfd, kind):
    bad = tmp_path / "bad.onnx"
    if kind == "text":
        bad.write_text("hello")
    elif kind == "checkpoint_bytes":
        bad.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    elif kind == "onnx_without_metadata":
        with_metadata(model_path, bad, "")
    elif kind == "foreign_metadata":
        with_metadata(model_path, bad, json.dumps({"labels": ["cat", "dog"], "mean": [0.5]}))
    elif kind == "newer_version":
        with_metadata(model_path, bad, json.dumps({"format_version": 99}))
    elif kind == "version_only":
        with_metadata(model_path, bad, json.dumps({"format_version": FORMAT_VERSION}))
    elif kind == "no_mean":
        document = load_classifier(model_path).document
        del document["preprocess"]["mean"]
        with_metadata(model_path, bad, json.dumps(document))
    elif kind == "folder":
        bad.mkdir()
        shutil.copy(model_path, bad / "model.onnx")
    assert cli([str(folder), "--model", str(bad)]) == 2
    captured = capfd.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1 and captured.err.startswith("error: ")
    assert NOT_OURS[kind] in captured.err, captured.err


@pytest.mark.parametrize("item", ["missing.png", "empty_folder", "*.jpeg"])
def test_an_input_that_names_no_image_is_one_error_line_and_exit_2(model_path, tmp_path, capfd, item):
    (tmp_path / "empty_folder").mkdir()
    colour_image(COLOURS["red"]).save(tmp_path / "red.png")
    assert cli([str(tmp_path / "red.png"), str(tmp_path / item), "--model", str(model_path)]) == 2
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == f"error: no image files found at {tmp_path / item}\n"


def test_predict_script_never_imports_torch(model_path, folder):
    """The script run as a user runs it; the process's modules are listed after it ends."""
    runner = (
        "import runpy, sys\n"
        f"sys.argv = ['predict.py', {str(folder)!r}, '--model', {str(model_path)!r}]\n"
        "try:\n"
        f"    runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
        "except SystemExit as end:\n"
        "    code = end.code\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'lightning', 'albumentations'})\n"
        "print('exit', code, 'heavy', heavy, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", runner], capture_output=True, text=True, timeout=120)
    assert done.stderr.strip().splitlines()[-1] == "exit 1 heavy []", done.stderr
    assert len(done.stdout.splitlines()) == 5  # a line per image, the two unreadable ones saying why


def test_a_model_with_a_conformal_threshold_answers_with_its_prediction_set(model_path, folder, capfd):
    """On a green image the set holds, most likely first, every colour at or above the threshold: all three
    at 0, green alone between the top two probabilities, none above the top one (no colour sure enough)."""
    assert cli([str(folder / "sub"), "--model", str(model_path), "--top-k", "3"]) == 0
    probs = json.loads(capfd.readouterr().out)["top_probabilities"]
    assert probs[0] > probs[1]
    document = load_classifier(model_path).document
    cases = ((0.0, ["green", "blue", "red"]), ((probs[0] + probs[1]) / 2, ["green"]), (probs[0] + 1e-5, []))
    for threshold, expected in cases:
        write_metadata(model_path, {**document, "conformal": {"alpha": 0.1, "threshold": threshold}})
        assert cli([str(folder / "sub"), "--model", str(model_path), "--top-k", "1"]) == 0
        (line,) = capfd.readouterr().out.splitlines()
        found = json.loads(line)["prediction_set"]
        assert found[:1] == expected[:1] and sorted(found) == sorted(expected)


def test_an_unknown_image_gets_no_label_no_set_and_a_note_saying_why(model_path, folder, capfd):
    """The colour model's unknown score is its largest channel mean, a few units at most, so it lies between
    the two thresholds: below it the image is unknown, above it known; the score comes with the answer either
    way, and an unknown answer never carries a label, a probability or a set."""
    document = load_classifier(model_path).document
    conformal = {"alpha": 0.1, "threshold": 0.0}  # every class would join the set of a known image
    for threshold, unknown in ((-10.0, True), (10.0, False)):
        fitted = {"method": "test", "accepted": 0.95, "threshold": threshold, "output": "unknown_score"}
        write_metadata(model_path, {**document, "unknown": fitted, "conformal": conformal})
        assert cli([str(folder / "sub"), "--model", str(model_path)]) == 0
        (line,) = capfd.readouterr().out.splitlines()
        answer = json.loads(line)
        assert answer["unknown"] is unknown and -10 < answer["unknown_score"] < 10
        assert answer["top_labels"][0] == "green"  # the ranking stays, for those who want it
        if unknown:
            assert answer["label"] is None and answer["probability"] is None
            assert answer["prediction_set"] == []
            assert answer["note"].startswith("unlike the training images")
        else:
            assert answer["label"] == "green" and len(answer["prediction_set"]) == 3
            assert answer["note"] is None


def test_an_empty_set_says_no_class_is_likely_enough(model_path, folder, capfd):
    document = load_classifier(model_path).document
    write_metadata(model_path, {**document, "conformal": {"alpha": 0.1, "threshold": 0.999}})
    assert cli([str(folder / "sub"), "--model", str(model_path)]) == 0
    answer = json.loads(capfd.readouterr().out)
    assert answer["label"] == "green" and answer["prediction_set"] == []
    assert answer["note"].startswith("no class reaches probability 0.999")


@pytest.mark.parametrize("target", ["model", "input"])
def test_output_naming_the_model_or_an_input_is_refused_and_both_stay_whole(
    model_path, folder, capfd, target
):
    image = folder / "a_red.png"
    victim = model_path if target == "model" else image
    before = victim.read_bytes()
    assert cli([str(image), "--model", str(model_path), "-o", str(victim)]) == 2
    err = capfd.readouterr().err
    assert err.startswith(f"error: --output {victim} is ") and "nothing was written" in err
    assert victim.read_bytes() == before


def test_an_earlier_output_file_survives_a_run_that_fails(model_path, folder, tmp_path, capfd):
    out = tmp_path / "predictions.jsonl"
    out.write_text("an earlier run's answers\n")
    assert cli([str(tmp_path / "nothing-here.png"), "--model", str(model_path), "-o", str(out)]) == 2
    assert out.read_text() == "an earlier run's answers\n"
    assert cli([str(folder / "sub"), "--model", str(model_path), "-o", str(out)]) == 0
    assert json.loads(out.read_text())["label"] == "green"  # replaced once the run is done
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no partial file left


@pytest.mark.parametrize("size", [(2, 1_000_000), (50_000_000, 1)], ids=["2x1M", "50Mx1"])
def test_a_strip_whose_resize_would_exceed_the_cap_is_refused_from_its_header(tmp_path, capfd, size):
    """Under the cap as stored, far above it once the short side is scaled to the crop's (the eval recipe
    keeps the aspect ratio): refused before a pixel is decoded, the row saying so."""
    crop = Preprocess(24, (0.5,) * 3, (0.5,) * 3, "bilinear", 0.875)
    model = colour_model(tmp_path / "crop.onnx")
    write_metadata(model, describe(crop.to_dict(), list(COLOURS), "input", "logits", 64_000_000))
    strip = tmp_path / "strip.png"
    Image.new("1", size).save(strip)
    colour_image(COLOURS["blue"]).save(tmp_path / "blue.png")
    assert cli([str(strip), str(tmp_path / "blue.png"), "--model", str(model)]) == 1
    captured = capfd.readouterr()
    refused_row, blue = (json.loads(line) for line in captured.out.splitlines())
    assert refused_row["label"] is None and refused_row["error"].startswith(
        f"image too large: {size[0]}x{size[1]} resizes to "
    )
    assert "above the cap of 64,000,000" in refused_row["error"]
    assert blue["label"] == "blue" and blue["error"] is None


# an EXIF block whose tag 0x0124 holds text where Pillow expects a number: rewriting it (exif_transpose)
# raises struct.error, which once stopped predict at that file
BAD_EXIF = bytes.fromhex(
    "4578696600004d4d002a0000000870030124000200000006000000320112000300000001000600008769000400cb00010000003800"
    "00000043616e6f6e000001900300020000000500f3004a00000000323032300000"
)


def test_a_photo_with_a_corrupt_exif_block_is_predicted_as_stored(model_path, tmp_path, capfd):
    photo = tmp_path / "photo.jpg"
    colour_image(COLOURS["red"]).save(photo, quality=95, exif=BAD_EXIF)
    assert decode_rgb(photo).shape == (17, 31, 3)  # orientation 6 not applied: the block cannot be trusted
    colour_image(COLOURS["green"]).save(tmp_path / "next.png")
    assert cli([str(photo), str(tmp_path / "next.png"), "--model", str(model_path)]) == 0
    assert [json.loads(line)["label"] for line in capfd.readouterr().out.splitlines()] == ["red", "green"]


def test_predict_names_the_file_and_the_run_that_made_the_model(model_path, folder, capfd):
    document = load_classifier(model_path).document
    made = {"run_id": "abc123", "run_name": "resnet18-flowers-1206-2101", "model": "resnet18",
            "data": "flowers", "smoke": False, "scores": {"test/acc": 0.9812}}  # fmt: skip
    for provenance, said in [
        (None, "made by a run this file does not name"),
        (made, "run resnet18-flowers-1206-2101 (abc123), resnet18 on flowers, test acc 0.9812"),
        (
            {**made, "smoke": True},
            "test acc 0.9812: a smoke run, which checks the plumbing; its answers mean",
        ),
    ]:
        write_metadata(model_path, {**document, "provenance": provenance})
        assert cli([str(folder / "sub"), "--model", str(model_path)]) == 0
        first = capfd.readouterr().err.splitlines()[0]
        assert first.startswith(f"model {model_path}: ") and said in first, first
