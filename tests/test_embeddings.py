"""Image embeddings for the data audit (pipeline.data.embeddings): ImageNet features from the offline
EfficientNet-Lite0 weights, in PyTorch or onnxruntime, cached by file content; and the label issues found with
them (pipeline.data.label_issues), the outliers and near duplicates (pipeline.data.neighbours)."""

import hashlib
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import CONF_DIR, make_image_folder
from omegaconf import OmegaConf
from PIL import Image

from pipeline import cpu_share
from pipeline.data import embeddings, label_issues
from pipeline.data.label_issues import find_label_issues
from pipeline.data.neighbours import find_outliers, nearest, similar_pairs
from pipeline.errors import PipelineError

LITE0 = {
    "pretrained": False,
    "drop_rate": 0.0,
    "drop_path_rate": 0.0,
    "kwargs": {},
    **OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / "model" / "efficientnet_lite0.yaml")),
}


def content(paths: list[Path]) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in paths]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, audit_cache):
    """18 pattern images (3 kinds) embedded once at 64 px: (paths, kinds, vectors, cache folder)."""
    root = make_image_folder(tmp_path_factory.mktemp("embed") / "images", per_class=6, size=48)
    paths = sorted(root.rglob("*.png"))
    vectors = embeddings.embed([str(p) for p in paths], content(paths), LITE0, 64, audit_cache).vectors
    return paths, [p.parent.name for p in paths], vectors, audit_cache


def test_each_image_gets_one_unit_vector_of_the_backbone_features(embedded):
    paths, _, vectors, _ = embedded
    assert vectors.shape == (len(paths), 1280)  # EfficientNet-Lite0's pooled features
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_the_last_stage_s_statistics_come_beside_each_embedding_for_the_label_fits(embedded):
    paths, _, vectors, cache = embedded
    found = embeddings.embed([str(p) for p in paths], content(paths), LITE0, 64, cache)  # from the cache
    assert np.array_equal(found.vectors, vectors)
    assert found.last_stage.shape == (len(paths), 640)  # the means and spreads of Lite0's 320 channels
    assert np.allclose(np.linalg.norm(found.last_stage, axis=1), 1.0, atol=1e-5)
    assert found.label_features.shape == (len(paths), 1280 + 640)


def test_images_of_one_kind_are_each_others_nearest_neighbours(embedded):
    _, kinds, vectors, _ = embedded
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -1)
    nearest = similarity.argmax(1)
    agreement = np.mean([kinds[i] == kinds[j] for i, j in enumerate(nearest)])
    assert agreement >= 0.9, agreement  # chance is 5/17


def test_a_second_run_and_a_copied_file_reuse_the_cache_without_the_model(embedded, tmp_path, monkeypatch):
    paths, _, vectors, cache = embedded
    copy = tmp_path / "renamed.png"
    shutil.copy(paths[0], copy)
    monkeypatch.setattr(embeddings, "session", lambda *_: pytest.fail("the backbone ran for cached content"))
    monkeypatch.setattr(embeddings, "feature_extractor", lambda *_: pytest.fail("the backbone was built"))
    again = embeddings.embed([str(copy), str(paths[1])], content([copy, paths[1]]), LITE0, 64, cache)
    assert np.array_equal(again.vectors, vectors[:2])


def test_a_small_job_stays_in_pytorch_and_a_large_one_exports_the_backbone_once(tmp_path, monkeypatch):
    root = make_image_folder(tmp_path / "images", per_class=3, size=32)
    paths = sorted(root.rglob("*.png"))
    eager = embeddings.embed([str(p) for p in paths], content(paths), LITE0, 32, tmp_path / "small")
    assert not list((tmp_path / "small").glob("backbone-*.onnx"))  # 9 images: cheaper than an export
    monkeypatch.setattr(embeddings, "EAGER_BUDGET_S", 0.0)  # any rest is worth exporting for
    exported = embeddings.embed([str(p) for p in paths], content(paths), LITE0, 32, tmp_path / "large", 4)
    assert [p.name for p in (tmp_path / "large").glob("*.onnx")] == [
        embeddings.EmbeddingCache(tmp_path / "large", LITE0, 32).backbone.name
    ]
    for part in ("vectors", "last_stage"):  # the first batch eager, the rest in onnxruntime
        assert np.allclose(getattr(exported, part), getattr(eager, part), atol=1e-4), part
    monkeypatch.setattr(embeddings, "feature_extractor", lambda *_: pytest.fail("PyTorch ran, not ONNX"))
    for vectors in (tmp_path / "large").glob("embeddings-*.npz"):
        vectors.unlink()  # embed the same images again: with the exported backbone this time
    again = embeddings.embed([str(p) for p in paths], content(paths), LITE0, 32, tmp_path / "large")
    assert np.allclose(again.vectors, eager.vectors, atol=1e-4)
    assert np.allclose(again.last_stage, eager.last_stage, atol=1e-4)


def test_images_go_through_the_backbone_in_batches_that_shrink_as_images_grow(tmp_path, monkeypatch):
    root = make_image_folder(tmp_path / "images", per_class=3, size=32)
    paths = sorted(root.rglob("*.png"))
    build, batches = embeddings.feature_extractor, []

    def counted(spec):
        model = build(spec)
        real_forward = model.forward
        model.forward = lambda x: batches.append(len(x)) or real_forward(x)
        return model

    monkeypatch.setattr(embeddings, "feature_extractor", counted)
    assert [embeddings.eager_batch_size(size) for size in (64, 128, 224, 448)] == [64, 49, 16, 4]
    embeddings.embed([str(p) for p in paths], content(paths), LITE0, 448, tmp_path / "cache")
    assert batches == [2, 4, 4, 1]  # the warm-up call, then 9 images at 4 a batch


def test_a_slow_first_call_does_not_make_a_small_job_export(tmp_path, monkeypatch):
    root = make_image_folder(tmp_path / "images", per_class=3, size=32)
    paths = sorted(root.rglob("*.png"))
    build = embeddings.feature_extractor

    clock = [0.0]  # the embedding's clock: only the first call's one-time cost moves it, so load does not

    def slow_to_start(spec):  # the first forward pays a one-time cost, as a cold process does
        model, calls = build(spec), []
        real_forward = model.forward

        def forward(x):
            calls.append(len(x))
            if len(calls) == 1:
                clock[0] += 1.0
            return real_forward(x)

        model.forward = forward
        return model

    monkeypatch.setattr(embeddings, "feature_extractor", slow_to_start)
    monkeypatch.setattr(embeddings, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    monkeypatch.setattr(embeddings, "EAGER_BUDGET_S", 0.5)  # a timed first call would project 1.25 s
    embeddings.embed([str(p) for p in paths], content(paths), LITE0, 32, tmp_path / "cache", 4)
    assert not list((tmp_path / "cache").glob("backbone-*.onnx"))


def test_the_label_fits_run_on_one_blas_thread_and_leave_the_setting_as_it_was(monkeypatch):
    from threadpoolctl import threadpool_info

    seen = []
    fit = label_issues.cross_val_predict

    def watched(*args, **kwargs):
        seen.extend(pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas")
        return fit(*args, **kwargs)

    monkeypatch.setattr(label_issues, "cross_val_predict", watched)
    before = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    labels = np.arange(40) % 4
    vectors = np.random.default_rng(0).normal(size=(40, 8)) + labels[:, None]
    label_issues.out_of_sample_probabilities(vectors, labels, seed=0)
    assert seen and set(seen) == {cpu_share.BLAS_THREADS}
    assert [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"] == before


def test_the_backbone_runs_in_channels_last_with_the_default_layouts_features():
    """channels_last is only the memory layout (1.5-1.9x faster on CPU): same features as the default."""
    backbone = embeddings.feature_extractor(LITE0)
    first_conv = next(m for m in backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(3, 3, 64, 64)
    with torch.inference_mode():
        fast, plain = backbone(x), backbone.to(memory_format=torch.contiguous_format)(x)
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(fast, plain, strict=True))


def test_a_backbone_that_cannot_drop_its_classifier_is_one_clear_error(tmp_path):
    spec = {"name": "alexnet", "pretrained": False, "weights": None, "drop_rate": 0.0, "drop_path_rate": 0.0}
    with pytest.raises(PipelineError, match="alexnet cannot drop its classifier"):
        embeddings.feature_extractor({**spec, "kwargs": {}})


def test_planted_mislabels_are_flagged_with_their_true_class_suggested(embedded):
    _, kinds, vectors, _ = embedded
    names = sorted(set(kinds))
    true = np.array([names.index(k) for k in kinds])
    given = true.copy()
    planted = [0, 7, 13]  # one image of each kind put under the next kind's label
    given[planted] = (true[planted] + 1) % len(names)
    issues = find_label_issues(vectors, given, seed=0)
    assert {i.index for i in issues} == set(planted)
    assert all(i.suggested == true[i.index] and i.given == given[i.index] for i in issues)
    assert [i.score for i in issues] == sorted(i.score for i in issues)  # most suspect first


def test_classes_too_small_to_cross_validate_are_not_searched(embedded):
    _, _, vectors, _ = embedded
    assert find_label_issues(vectors[:3], np.array([0, 0, 1])) == []


def test_off_domain_images_stand_out_and_the_dataset_does_not(embedded, tmp_path):
    paths, _, vectors, cache = embedded
    planted = []
    for i, colour in enumerate([(255, 255, 255), (200, 30, 30)]):  # a blank and a flat red placeholder
        Image.new("RGB", (48, 48), colour).save(tmp_path / f"flat{i}.png")
        planted.append(tmp_path / f"flat{i}.png")
    extra = embeddings.embed([str(p) for p in planted], content(planted), LITE0, 64, cache).vectors
    found = find_outliers(nearest(np.concatenate([vectors, extra]), k=5))
    assert {o.index for o in found} == {len(paths), len(paths) + 1}
    assert found[0].score >= found[1].score


def test_too_few_images_have_no_outliers(embedded):
    assert find_outliers(nearest(embedded[2][:2], k=10)) == []


def photo_tiles(folder: Path) -> list[Path]:
    """Twelve distinct photos: non-overlapping 140 px tiles of scikit-learn's two bundled sample photos."""
    from sklearn.datasets import load_sample_images

    folder.mkdir()
    paths = []
    for n, photo in enumerate(load_sample_images().images):
        for row in range(2):
            for col in range(3):
                tile = photo[row * 200 : row * 200 + 140, col * 200 : col * 200 + 140]
                paths.append(folder / f"photo{n}_{row}{col}.png")
                Image.fromarray(tile).save(paths[-1])
    return paths


def test_a_resized_copy_is_a_near_duplicate_and_distinct_photos_are_not(tmp_path, audit_cache):
    paths = photo_tiles(tmp_path / "photos")
    copy = tmp_path / "copy.jpg"
    Image.open(paths[4]).resize((200, 200)).save(copy, quality=85)  # same picture, new size and format
    vectors = embeddings.embed(
        [str(p) for p in [*paths, copy]], content([*paths, copy]), LITE0, 64, audit_cache
    ).vectors
    pairs = similar_pairs(nearest(vectors, k=5), min_similarity=0.98)
    assert [(a, b) for a, b, _ in pairs] == [(4, len(paths))]
