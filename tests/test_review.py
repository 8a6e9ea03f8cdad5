"""Review decisions (pipeline.data.decisions, pipeline.review): a run's audit suspects decided in the page,
saved as a versioned file that merges, applied by the next run (relabel, drop, keep) with MLflow recording
which, and refused in one line when the file is bad."""

import csv
import logging
import shutil
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import compose_cfg, free_port, make_image_folder, run_cli
from mlflow.tracking import MlflowClient
from starlette.testclient import TestClient

from pipeline.data import decisions
from pipeline.data.decisions import Decision, Decisions
from pipeline.errors import PipelineError
from pipeline.review.app import Review, create_app
from pipeline.review.suspects import open_run
from pipeline.runner import run

AUDIT = ["data.audit=true", "audit.image_size=64"]  # as tests/test_audit.py: the backbone exported once


def parent_runs(store: Path) -> list:
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("image-classification").experiment_id
    runs = client.search_runs([experiment], "tags.pid != ''", order_by=["attributes.start_time DESC"])
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags]


@pytest.fixture(scope="module")
def audited(tmp_path_factory, audit_cache) -> dict:
    """A folder with two images moved to a wrong class and a dark one, and its run (audit on, a model trained
    for an epoch)."""
    tmp = tmp_path_factory.mktemp("reviewed")
    root = make_image_folder(tmp / "images", per_class=16, size=48)
    moved_h = shutil.move(root / "stripes_h" / "000.png", root / "checker" / "moved_h.png")
    moved_v = shutil.move(root / "stripes_v" / "000.png", root / "stripes_h" / "moved_v.png")
    from PIL import Image

    dark = root / "checker" / "dark.png"
    Image.eval(Image.open(root / "checker" / "001.png"), lambda v: v // 8).save(dark)
    trained = ["stages=[data,train]", "data.image_size=32", "data.batch_size=8", "trainer.max_epochs=1"]
    run(compose_cfg(tmp, *AUDIT, *trained, f"data.cache_dir={audit_cache}", root=root))
    (parent,) = parent_runs(tmp / "mlruns")
    return {"tmp": tmp, "root": root, "run_id": parent.info.run_id, "moved": (str(moved_h), str(moved_v)),
            "dark": str(dark)}  # fmt: skip


def reviewed(audited: dict, out: Path, on_save=None, store: Path | None = None) -> Review:
    store = store or audited["tmp"] / "mlruns"
    return Review(open_run(f"sqlite:///{store / 'mlflow.db'}", str(store), audited["run_id"], out), on_save)


def test_a_second_review_adds_to_the_first_and_the_newer_decision_on_an_image_wins(tmp_path):
    path = tmp_path / "decisions.yaml"
    first = {"a.png": Decision("drop", "outliers"), "b.png": Decision("keep", "label_issues")}
    decisions.save(path, Decisions("run1", "/data", first))
    decisions.save(path, Decisions("run1", "/data", {"b.png": Decision("relabel", "label_issues", "cat")}))
    merged = decisions.load(path)
    assert merged.by_path == {
        "a.png": Decision("drop", "outliers"),
        "b.png": Decision("relabel", "label_issues", "cat"),
    }
    assert yaml.safe_load(path.read_text())["version"] == decisions.VERSION


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("decisions: [unclosed", "cannot read"),
        ("version: 7\ndecisions: {}", "not a decisions file"),
        ("version: 1\ndecisions: {a.png: {action: burn}}", "action must be one of"),
        ("version: 1\ndecisions: {a.png: {action: relabel}}", "a label goes with action relabel"),
        ("version: 1\ndecisions: {a.png: {action: keep, kind: vibes}}", "kind must be one of"),
    ],
    ids=["not_yaml", "wrong_version", "unknown_action", "relabel_without_label", "unknown_kind"],
)
def test_a_bad_decisions_file_is_refused_in_one_line_naming_what_is_wrong(tmp_path, text, says):
    path = tmp_path / "decisions.yaml"
    path.write_text(text)
    with pytest.raises(PipelineError, match=says) as err:
        decisions.load(path)
    assert "\n" not in str(err.value)


def test_a_run_given_a_bad_decisions_file_exits_2_with_one_line_before_any_run_starts(tmp_path, image_folder):
    bad = tmp_path / "decisions.yaml"
    bad.write_text("version: 1\ndecisions: {a.png: {action: burn}}")
    done = run_cli(
        f"data.root={image_folder}", f"data.decisions={bad}", "stages=[data]", "data.audit=false",
        f"tracking.dir={tmp_path / 'mlruns'}", f"output_dir={tmp_path / 'out'}", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2
    assert [line for line in done.stderr.splitlines() if "action must be one of" in line]
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()


def test_the_page_lists_the_suspects_and_serves_only_the_images_the_run_indexed(audited, tmp_path):
    client = TestClient(create_app(reviewed(audited, tmp_path)))
    page = client.get("/").text
    assert all(Path(path).name in page for path in audited["moved"])
    indexed = client.get("/image", params={"path": audited["moved"][0]})
    assert indexed.status_code == 200 and indexed.headers["content-type"] == "image/png"
    beside = audited["root"].parent / "secret.png"
    shutil.copy(audited["moved"][0], beside)
    for path in (str(beside), str(audited["root"] / ".." / "secret.png"), "/etc/passwd"):
        assert client.get("/image", params={"path": path}).status_code == 404, path


def test_grad_cam_of_the_runs_model_is_drawn_for_a_suspect_and_for_nothing_else(audited, tmp_path):
    client = TestClient(create_app(reviewed(audited, tmp_path)))
    answer = client.get("/gradcam", params={"path": audited["moved"][0]})
    assert answer.status_code == 200 and answer.content.startswith(b"\x89PNG")
    assert answer.headers["x-predicted"].split()[0] in {"checker", "stripes_h", "stripes_v"}
    unflagged = str(audited["root"] / "checker" / "001.png")
    assert client.get("/gradcam", params={"path": unflagged}).status_code == 404


def test_decisions_from_the_page_are_saved_at_once_and_a_bad_request_changes_nothing(audited, tmp_path):
    review = reviewed(audited, tmp_path)
    client = TestClient(create_app(review))
    moved_h, moved_v = audited["moved"]
    answer = client.post("/decide", json={"path": moved_h, "action": "accept"})
    assert answer.status_code == 200 and answer.json()["decided"] == 1
    for bad in (
        {"path": moved_v, "action": "relabel", "label": "no-such-class"},
        {"path": str(audited["root"] / "checker" / "001.png"), "action": "drop"},  # not a suspect
        {"path": moved_v},
    ):
        assert client.post("/decide", json=bad).status_code == 400, bad
    saved = decisions.load(tmp_path / "decisions.yaml")
    assert saved.by_path == {"checker/moved_h.png": Decision("relabel", "label_issues", "stripes_h")}
    assert saved.run == audited["run_id"]


@pytest.fixture(scope="module")
def applied(audited, tmp_path_factory, audit_cache) -> dict:
    """A second run of the audited folder with a review's decisions: relabel one moved image, drop the
    other, keep the dark one."""
    tmp = tmp_path_factory.mktemp("applied")
    file = tmp / "decisions.yaml"
    decided = {
        "checker/moved_h.png": Decision("relabel", "label_issues", "stripes_h"),
        "stripes_h/moved_v.png": Decision("drop", "label_issues"),
        "checker/dark.png": Decision("keep", "quality"),
    }
    decisions.save(file, Decisions(audited["run_id"], str(audited["root"]), decided))
    overrides = [*AUDIT, "stages=[data]", f"data.cache_dir={audit_cache}", f"data.decisions={file}"]
    run(compose_cfg(tmp, *overrides, root=audited["root"]))
    (parent,) = parent_runs(tmp / "mlruns")
    return {"tmp": tmp, "run": parent, "file": file}


def test_the_next_run_trains_on_the_relabels_and_without_the_drops(applied):
    with (applied["tmp"] / "out" / "index.csv").open() as f:
        labels = {Path(row["path"]).name: row["class_name"] for row in csv.DictReader(f)}
    assert labels["moved_h.png"] == "stripes_h"
    assert "moved_v.png" not in labels


def test_a_kept_image_is_not_flagged_again_by_the_audit(audited, applied):
    before = (audited["tmp"] / "out" / "audit" / "quality.csv").read_text()
    after = (applied["tmp"] / "out" / "audit" / "quality.csv").read_text()
    assert "dark.png" in before and "dark.png" not in after


def test_mlflow_shows_which_decisions_a_run_applied(audited, applied):
    client = MlflowClient(f"sqlite:///{applied['tmp'] / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([applied["run"].info.experiment_id])
    data_run = next(r for r in runs if r.info.run_name == "data")
    version = decisions.load(applied["file"]).digest()
    assert data_run.data.params["data.decisions_version"] == version
    logged = Path(client.download_artifacts(data_run.info.run_id, "decisions/decisions.yaml"))
    assert decisions.load(logged).by_path == decisions.load(applied["file"]).by_path
    before = MlflowClient(f"sqlite:///{audited['tmp'] / 'mlruns' / 'mlflow.db'}")
    digests = {
        tuple(sorted(i.dataset.digest for i in store.get_run(r.info.run_id).inputs.dataset_inputs))
        for store, r in ((before, parent_runs(audited["tmp"] / "mlruns")[0]), (client, applied["run"]))
    }
    assert len(digests) == 2  # the decisions make a new version of the dataset


def test_a_run_id_names_the_decisions_its_review_logged(audited, tmp_path, audit_cache, caplog):
    store = shutil.copytree(audited["tmp"] / "mlruns", tmp_path / "mlruns")
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    logged = lambda path: client.log_artifact(audited["run_id"], str(path), "review")  # noqa: E731
    reviewed(audited, tmp_path / "review", logged, store).decide(audited["moved"][1], "drop", None)
    cfg = compose_cfg(
        tmp_path, "stages=[data]", f"data.cache_dir={audit_cache}", f"data.decisions={audited['run_id']}",
        root=audited["root"],
    )  # fmt: skip
    with caplog.at_level(logging.INFO, logger="pipeline"):
        run(cfg)
    assert "moved_v.png" not in (tmp_path / "out" / "index.csv").read_text()
    assert any("0 relabelled, 1 dropped, 0 kept" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(
    not (shutil.which("chromium") and shutil.which("chromedriver")),
    reason="no chromium and chromedriver here (apt-get install chromium chromium-driver)",
)
def test_in_a_real_browser_decisions_by_click_and_key_survive_a_reload_and_filters_apply(audited, tmp_path):
    import uvicorn
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    port = free_port()
    app = create_app(reviewed(audited, tmp_path))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(browser, 10)
        cards = browser.find_elements(By.CSS_SELECTOR, ".card")
        first, second = cards[0].get_attribute("data-path"), cards[1].get_attribute("data-path")
        cards[0].find_element(By.CSS_SELECTOR, "button[data-action=accept]").click()
        wait.until(lambda b: "relabelled as" in b.find_elements(By.CSS_SELECTOR, ".verdict")[0].text)
        browser.find_element(By.TAG_NAME, "body").send_keys("d")  # the next undecided card is current
        wait.until(lambda b: "dropped" in b.find_elements(By.CSS_SELECTOR, ".verdict")[1].text)
        assert browser.find_element(By.ID, "progress").text.startswith("2 of ")
        browser.refresh()
        verdicts = [v.text for v in browser.find_elements(By.CSS_SELECTOR, ".verdict")]
        assert verdicts[0].startswith("relabelled as") and verdicts[1] == "dropped from training"
        Select(browser.find_element(By.ID, "filter-kind")).select_by_value("quality")
        shown = [c for c in browser.find_elements(By.CSS_SELECTOR, ".card") if c.is_displayed()]
        assert shown and {c.get_attribute("data-kind") for c in shown} == {"quality"}
        Select(browser.find_element(By.ID, "filter-kind")).select_by_value("")
        cards = browser.find_elements(By.CSS_SELECTOR, ".card")
        label = cards[-1].get_attribute("data-class")
        Select(browser.find_element(By.ID, "filter-class")).select_by_value(label)
        shown = [c for c in cards if c.is_displayed()]
        assert len(shown) == sum(c.get_attribute("data-class") == label for c in cards) < len(cards)
        assert {c.get_attribute("data-class") for c in shown} == {label}
    finally:
        browser.quit()
        server.should_exit = True
        thread.join(60)
    assert not thread.is_alive(), "the page's server did not stop"
    saved = decisions.load(tmp_path / "decisions.yaml").by_path
    actions = [saved[decisions.relative(path, str(audited["root"]))].action for path in (first, second)]
    assert actions == ["relabel", "drop"]
