"""Bad inputs, table-driven: each ends with one clear line (as the CLI prints it), leaves no MLflow run
RUNNING and loses nothing written before (a sentinel output file and an earlier finished run survive)."""

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import make_image_folder
from hydra.errors import HydraException
from mlflow.tracking import MlflowClient
from omegaconf.errors import OmegaConfBaseException

from pipeline.__main__ import error_line
from pipeline.errors import PipelineError
from pipeline.models.module import Classifier
from pipeline.runner import run

KNOWN_ERRORS = (PipelineError, HydraException, OmegaConfBaseException)
TINY = ["data.image_size=16", "data.batch_size=8"]


def images(tmp: Path) -> Path:
    return make_image_folder(tmp / "images", per_class=6, size=16)


def empty(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


def one_class(tmp: Path) -> Path:
    root = images(tmp)
    for folder in ("stripes_v", "checker"):
        for f in (root / folder).iterdir():
            f.unlink()
        (root / folder).rmdir()
    return root


def corrupt_files(tmp: Path, keep_good: bool) -> Path:
    root = images(tmp) if keep_good else tmp / "images"
    for kind in ("stripes_h", "stripes_v", "checker"):
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            (root / kind / f"zero{i}.png").write_bytes(b"")
            (root / kind / f"text{i}.jpg").write_text("not an image")
    if keep_good:
        good = root / "checker" / "000.png"
        (root / "checker" / "truncated.png").write_bytes(good.read_bytes()[:60])
    return root


def manifest(tmp: Path, text: str) -> Path:
    root = images(tmp)
    (root / "labels.csv").write_text(text)
    return root / "labels.csv"


def binary_manifest(tmp: Path) -> Path:
    path = manifest(tmp, "")
    path.write_bytes(b"\xff\xfe\x00\x01 not text")
    return path


def checkpoint(tmp: Path, classes: list[str], name: str = "simple_cnn") -> Path:
    classifier = Classifier(
        model={"name": name, "kwargs": {"channels": [8]} if name == "simple_cnn" else {}},
        num_classes=len(classes),
        class_names=classes,
        preprocess={"image_size": 16, "mean": [0.5] * 3, "std": [0.5] * 3},
        optimizer={"name": "adamw"},
        scheduler={"name": "none"},
    )
    path = tmp / f"{name}-{len(classes)}.ckpt"
    torch.save({"hyper_parameters": dict(classifier.hparams), "state_dict": classifier.state_dict()}, path)
    return path


def a_file(tmp: Path, content: bytes = b"\x00garbage") -> Path:
    (tmp / "blob").write_bytes(content)
    return tmp / "blob"


def hidden_only(tmp: Path) -> Path:
    root = tmp / "hidden"
    for name in (".git/objects/a.png", ".thumbnails/b.png", "cats/.DS_Store", "cats/._c.png"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"\x89PNG hidden")
    return root


def a_folder(tmp: Path) -> Path:
    (tmp / "a-folder").mkdir()
    return tmp / "a-folder"


def root_is(build: Callable[[Path], Path]) -> Callable[[Path], list[str]]:
    return lambda tmp: ["data=folder", f"data.root={build(tmp)}"]


# (id, overrides or a function of tmp_path giving them, what the one line must say)
CASES = [
    ("unknown key", ["trainer.max_epoch=3"], "Key 'max_epoch' is not in struct"),
    ("unknown schema key", ["data.val_fractoin=0.3"], "Key 'val_fractoin' not in 'DataConfig'"),
    (
        "not a Trainer argument",
        ["+trainer.max_epoc=3"],
        "trainer.max_epoc is not a lightning.Trainer argument",
    ),
    ("Trainer argument the stage sets", ["+trainer.logger=true"], "trainer.logger is set by the train stage"),
    ("wrong type", ["trainer.max_epochs=abc"], "max_epochs"),
    ("unknown group option", ["model=resnet999"], "Could not find 'model/resnet999'"),
    ("unknown model name", ["model=timm", "model.name=resnet_eighteen"], "unknown model 'resnet_eighteen'"),
    ("negative lr", ["optimizer.lr=-0.1"], "optimizer.lr must be > 0"),
    ("batch size 0", ["data.batch_size=0"], "data.batch_size must be > 0"),
    ("image size 1", ["data.image_size=1"], "data.image_size must be >= 4 px or auto, got 1"),
    ("image too small for the model", ["model=vgg11", "data.image_size=16"], "vgg11_bn cannot take 16 px"),
    ("zero epochs", ["trainer.max_epochs=0"], "trainer.max_epochs must be > 0 or auto"),
    ("val fraction above 1", ["data.val_fraction=1.5"], "data.val_fraction must be within [0, 1]"),
    ("no training images left", ["data.val_fraction=0.6", "data.test_fraction=0.4"], "leave images for"),
    ("unknown stage", ["stages=[trian]"], "unknown or no stages ['trian']"),
    ("unknown corrupt policy", ["data.on_corrupt=ignore"], "data.on_corrupt='ignore' is not one of"),
    ("unknown balance", ["data.balance=magic"], "data.balance='magic' is not one of"),
    ("unknown optimizer", ["optimizer.name=lamb2"], "optimizer.name='lamb2' is not an optimizer timm knows"),
    ("unknown scheduler", ["scheduler.name=triangle"], "scheduler.name='triangle' is not one of"),
    ("unknown finetune strategy", ["finetune.strategy=partial"], "finetune.strategy='partial' is not one of"),
    ("objective no stage logs", ["objective=val/nonsense"], "objective='val/nonsense' is not a metric"),
    ("unknown quantization", ["export.quantize=int4"], "export.quantize='int4' is not one of"),
    ("unknown augmentation", ["augment.train=[{_target_: os.system}]"], "unknown augmentation 'os.system'"),
    ("odd batch with mixup", ["train.mixup_alpha=0.2", "data.batch_size=7"], "even data.batch_size"),
    ("missing folder", lambda tmp: ["data=folder", f"data.root={tmp / 'nowhere'}"], "data folder not found"),
    ("root is a file", lambda tmp: ["data=folder", f"data.root={a_file(tmp)}"], "data.root is not a folder"),
    ("empty folder", root_is(empty), "no images found"),
    ("one class", root_is(one_class), "holds a single class (stripes_h)"),
    ("only corrupt files", root_is(lambda tmp: corrupt_files(tmp, keep_good=False)), "no readable images"),
    (
        "truncated image with on_corrupt=fail",
        lambda tmp: [*root_is(lambda t: corrupt_files(t, keep_good=True))(tmp), "data.on_corrupt=fail"],
        "unreadable",
    ),
    (
        "CSV naming missing files",
        root_is(lambda tmp: manifest(tmp, "path,label\nstripes_h/000.png,a\nnope.png,b\n")),
        "missing file",
    ),
    (
        "image above the pixel cap with on_corrupt=fail",
        lambda tmp: [*root_is(images)(tmp), "data.max_pixels=255", "data.on_corrupt=fail"],
        "above data.max_pixels=255",
    ),
    ("CSV without a label column", root_is(lambda tmp: manifest(tmp, "file,class\nx.png,a\n")), "path,label"),
    ("checkpoint missing", lambda tmp: ["stages=[validate]", f"ckpt_path={tmp / 'no.ckpt'}"], "not found"),
    (
        "checkpoint that is not one",
        lambda tmp: ["stages=[validate]", f"ckpt_path={a_file(tmp)}"],
        "cannot load checkpoint",
    ),
    (
        "checkpoint with other classes",
        lambda tmp: ["stages=[validate]", f"ckpt_path={checkpoint(tmp, ['x', 'y'])}"],
        "do not match the data",
    ),
    (
        "resume from another architecture",
        lambda tmp: [
            "stages=[train]",
            f"train.resume={checkpoint(tmp, ['a', 'b'])}",
        ],
        "was trained with another setup: model simple_cnn (now resnet18)",
    ),
    (
        "resume a missing checkpoint",
        lambda tmp: [f"train.resume={tmp / 'gone.ckpt'}"],
        "checkpoint not found",
    ),
    ("weights file missing", lambda tmp: [f"model.weights={tmp / 'w.pth'}"], "not found"),
    ("nothing to resume", ["resume=true"], "no interrupted or failed pipeline run"),
    (
        "output folder not writable",
        lambda tmp: [f"output_dir={a_file(tmp)}/out"],
        "output folder",
    ),
    # ranges and shapes the schema's types cannot state
    ("image size 0", ["data.image_size=0"], "data.image_size must be >= 4 px or auto, got 0"),
    ("negative loader workers", ["data.num_workers=-1"], "data.num_workers must be >= 0"),
    ("negative weight decay", ["optimizer.weight_decay=-1"], "optimizer.weight_decay must be >= 0"),
    ("negative test fraction", ["data.test_fraction=-0.1"], "data.test_fraction must be within [0, 1]"),
    (
        "hash distance above 63",
        ["data.near_duplicate_distance=65"],
        "near_duplicate_distance must be within [0, 63]",
    ),
    ("negative hash distance", ["data.near_duplicate_distance=-1"], "near_duplicate_distance must be within"),
    ("pixel cap 0", ["data.max_pixels=0"], "data.max_pixels must be > 0"),
    ("no outlier neighbours", ["audit.outlier_neighbours=0"], "audit.outlier_neighbours must be > 0"),
    ("similarity above 1", ["audit.duplicate_similarity=1.5"], "audit.duplicate_similarity must be within"),
    ("top-k 0", ["validate.top_k=0"], "validate.top_k must be > 0"),
    ("negative overfit steps", ["sanity.overfit_steps=-1"], "sanity.overfit_steps must be > 0"),
    ("negative Grad-CAM count", ["validate.gradcam=-1"], "validate.gradcam must be >= 0"),
    ("seed that is not a number", ["seed=abc"], "could not be converted to Integer"),
    ("no stages", ["stages=[]"], "unknown or no stages []"),
    ("mean of one channel", ["augment.mean=[0.5]"], "augment.mean needs one value per RGB channel"),
    ("drop rate above 1", ["model.drop_rate=1.5"], "model.drop_rate must be < 1"),
    ("label smoothing above 1", ["train.label_smoothing=2"], "train.label_smoothing must be < 1"),
    (
        "imbalance threshold below 1",
        ["data.imbalance_threshold=0.5"],
        "data.imbalance_threshold must be within",
    ),
    ("empty experiment name", ["tracking.experiment=''"], "tracking.experiment must name an experiment"),
    # the audit's backbone
    (
        "audit backbone without pretrained config",
        ["data.audit=true", "model@audit.backbone=simple_cnn"],
        "simple_cnn has no pretrained data config",
    ),
    (
        "audit backbone that keeps its classifier",
        ["data.audit=true", "model@audit.backbone=alexnet"],
        "alexnet cannot drop its classifier",
    ),
    # manifests
    ("CSV with a header only", root_is(lambda tmp: manifest(tmp, "path,label\n")), "lists no images"),
    (
        "CSV with an unknown split",
        root_is(lambda tmp: manifest(tmp, "path,label,split\nstripes_h/000.png,a,training\n")),
        "unknown split 'training'",
    ),
    (
        "CSV with splits on some rows",
        root_is(
            lambda tmp: manifest(tmp, "path,label,split\nstripes_h/000.png,a,train\nstripes_h/001.png,b,\n")
        ),
        "give a split on every row",
    ),
    ("empty CSV", root_is(lambda tmp: manifest(tmp, "")), "needs a header with columns path,label"),
    ("CSV that is not UTF-8", root_is(lambda tmp: binary_manifest(tmp)), "is not UTF-8 text"),
    # models and runs named that are not there
    (
        "ONNX file missing",
        lambda tmp: ["stages=[validate]", f"onnx_path={tmp / 'no.onnx'}"],
        "ONNX file not found",
    ),
    (
        "from_run unknown",
        ["stages=[validate]", f"from_run={'0' * 32}"],
        f"from_run: no MLflow run {'0' * 32}",
    ),
    ("resume an unknown run", [f"resume={'0' * 32}"], f"resume: no MLflow run {'0' * 32}"),
    (
        "resume a text file",
        lambda tmp: ["stages=[train]", f"train.resume={a_file(tmp, b'hello')}"],
        "is not a checkpoint this pipeline wrote",
    ),
    (
        "tracking URI of no known store",
        ["tracking.uri=garbage://nope"],
        "cannot use the MLflow store garbage://",
    ),
    (
        "tracking database MLflow cannot open",
        lambda tmp: [f"tracking.uri=sqlite:///{a_file(tmp, b'not a database' * 100)}"],
        "cannot use the MLflow store sqlite:///",
    ),
    (
        "tracking folder not writable",
        lambda tmp: [f"tracking.dir={a_file(tmp)}/mlruns"],
        "tracking.dir",
    ),
    # second round: odd values, odd files, odd places
    ("ONNX opset below the exporter's", ["export.opset=13"], "export.opset must be within [18, 26], got 13"),
    ("ONNX opset above onnxruntime's", ["export.opset=27"], "export.opset must be within [18, 26], got 27"),
    ("learning rate 0", ["optimizer.lr=0"], "optimizer.lr must be > 0, got 0"),
    ("validation fraction 0", ["data.val_fraction=0"], "data.val_fraction"),
    ("no nodes", ["trainer.num_nodes=0"], "trainer.num_nodes must be > 0"),
    ("negative inspection workers", ["data.inspect_workers=-1"], "data.inspect_workers must be >= 0"),
    ("overfit batch 0", ["sanity.overfit_batch_size=0"], "sanity.overfit_batch_size must be > 0"),
    ("audit image size 0", ["audit.image_size=0"], "audit.image_size must be > 0"),
    ("negative outlier fence", ["audit.outlier_fence=-1"], "audit.outlier_fence must be > 0"),
    ("dark threshold above 1", ["audit.dark=2"], "audit.dark must be within [0, 1]"),
    ("aspect ratio below 1", ["audit.odd_aspect_ratio=0.5"], "audit.odd_aspect_ratio must be within"),
    ("negative mixup alpha", ["train.mixup_alpha=-1"], "train.mixup_alpha must be >= 0"),
    (
        "std of four channels",
        ["augment.std=[0.1,0.2,0.3,0.4]"],
        "augment.std needs one value per RGB channel",
    ),
    (
        "unknown label-issue policy",
        ["data.on_label_issue=delete"],
        "data.on_label_issue='delete' is not one of",
    ),
    ("unknown outlier policy", ["data.on_outlier=hide"], "data.on_outlier='hide' is not one of"),
    ("accelerator this machine lacks", ["trainer.accelerator=mps"], "trainer.accelerator=mps"),
    ("folder of hidden files only", root_is(hidden_only), "no images found"),
    (
        "CSV row without a label",
        root_is(lambda tmp: manifest(tmp, "path,label\nstripes_h/000.png,a\nstripes_h/001.png, \n")),
        "line 3: no label",
    ),
    (
        "weights file that holds no weights",
        lambda tmp: [f"model.weights={a_file(tmp, b'hello')}"],
        "model.weights",
    ),
    (
        "ONNX file that is not ONNX",
        lambda tmp: ["stages=[validate]", f"onnx_path={a_file(tmp, b'hello')}"],
        "not an ONNX model",
    ),
    (
        "checkpoint path is a folder",
        lambda tmp: ["stages=[validate]", f"ckpt_path={a_folder(tmp)}"],
        "is a folder",
    ),
    ("from_run that is not a run id", ["stages=[validate]", "from_run=../../etc"], "from_run: no MLflow run"),
    # third round
    (
        "unknown-image folder missing",
        lambda tmp: [f"validate.ood_roots=[{tmp / 'no-such-folder'}]"],
        "validate.ood_roots: ",
    ),
    (
        "unknown-image folder that is a file",
        lambda tmp: [f"validate.ood_roots=[{a_file(tmp)}]"],
        "is not a folder of images",
    ),
]


@pytest.fixture(scope="module")
def store_with_a_finished_run(tmp_path_factory) -> tuple[Path, str]:
    """An MLflow store holding one earlier, finished run, which no bad input may touch."""
    store = tmp_path_factory.mktemp("store") / "mlruns"
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    earlier = client.create_run(client.create_experiment("image-classification"))
    client.set_terminated(earlier.info.run_id)
    return store, earlier.info.run_id


@pytest.mark.parametrize("overrides, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_line_and_loses_nothing(
    make_cfg, tmp_path, store_with_a_finished_run, overrides, expected
):
    out = tmp_path / "out"
    out.mkdir()
    sentinel = out / "earlier-result.txt"
    sentinel.write_text("kept")
    store, earlier_id = store_with_a_finished_run
    shutil.copytree(store, tmp_path / "mlruns", dirs_exist_ok=True)  # over make_cfg's empty store
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    earlier = client.get_run(earlier_id)

    args = overrides(tmp_path) if callable(overrides) else overrides
    with pytest.raises(KNOWN_ERRORS) as caught:
        run(make_cfg(*TINY, *args))

    message = error_line(caught.value)
    assert expected in message and "\n" not in message and len(message) < 400, message
    runs = client.search_runs([earlier.info.experiment_id])
    assert "RUNNING" not in {r.info.status for r in runs}
    assert client.get_run(earlier.info.run_id).info.status == "FINISHED"
    assert sentinel.read_text() == "kept"
