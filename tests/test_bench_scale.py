"""The scale benchmark's own parts (scripts/bench_scale.py): the folder it writes and the growth exponent."""

from conftest import load_script

from pipeline.data.integrity import inspect_files


def test_the_synthetic_folder_holds_distinct_images_and_the_planted_copies(tmp_path):
    bench = load_script("bench_scale")
    bench.synthesize(tmp_path / "data", 300, seed=0)
    files = sorted((tmp_path / "data").rglob("*.*"))
    assert len(files) == 300 and len({f.parent.name for f in files}) == bench.CLASSES
    infos = inspect_files([str(f) for f in files], None, 1, 10**6)
    assert all(i.ok for i in infos)
    assert len({i.sha256 for i in infos}) == 300 - 3  # 3 exact copies; the 3 JPEG copies differ in bytes


def test_the_growth_exponent_is_the_log_log_slope():
    bench = load_script("bench_scale")
    rows = [{"images": 10, "t": 1.0}, {"images": 100, "t": 10.0}, {"images": 1000, "t": 1000.0}]
    assert bench.exponent(rows, "t") == [None, 1.0, 2.0]
