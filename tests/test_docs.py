"""The front page and the documentation site: the README stays a front page whose links and commands exist,
the site builds with --strict, and the configuration reference is the schema's."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

from conftest import load_script, make_image_folder

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FRONT_PAGE_BYTES = 12_000


def test_the_readme_is_a_front_page_whose_links_lead_somewhere():
    text = README.read_text()
    assert len(text.encode()) <= FRONT_PAGE_BYTES
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    assert targets, "the README links to the documentation"
    missing = [t for t in targets if not t.startswith("http") and not (ROOT / t).exists()]
    assert missing == []


def test_every_command_the_readme_shows_exists():
    text = README.read_text()
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, flags=re.M))
    shown = set(re.findall(r"\bmake ([a-z][\w-]*)", text))
    assert shown and shown <= targets, shown - targets
    scripts = set(re.findall(r"\b(scripts/[\w/]+\.py)\b", text))
    assert all((ROOT / s).is_file() for s in scripts), scripts


def readme_commands() -> list[str]:
    """Each command line of the README's code blocks, comments and continuation lines joined."""
    blocks = re.findall(r"^```bash\n(.*?)^```", README.read_text(), flags=re.M | re.S)
    text = "\n".join(blocks).replace("\\\n", " ")
    return [line.split("  #")[0].strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def test_every_readme_command_line_resolves_as_written(tmp_path):
    """`make -n` on each make line, its placeholders pointed at real files: make finds the target and every
    variable it needs; no line calls a bare `python`, whose packages a fresh clone's shell may lack."""
    image_folder = make_image_folder(tmp_path / "images", per_class=2, size=16)
    photo = next(image_folder.rglob("*.png"))
    commands = readme_commands()
    assert not [c for c in commands if c.startswith("python")], commands
    makes = [c for c in commands if c.startswith("make ")]
    assert len(makes) >= 8, makes
    for command in makes:
        args = [a.replace("/path/to/images", str(image_folder)).replace("photo.jpg", str(photo))
                for a in shlex.split(command)[1:]]  # fmt: skip
        done = subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (command, done.stderr)


def test_the_configuration_reference_is_what_the_schema_gives():
    hooks = load_script("docs_hooks")
    committed = (ROOT / "docs" / "reference" / "configuration.md").read_text()
    assert committed == hooks.configuration_reference(), "run `make docs` to regenerate it"


def test_the_layout_page_lists_every_module_with_its_own_words():
    hooks = load_script("docs_hooks")
    committed = (ROOT / "docs" / "layout.md").read_text()
    assert committed == hooks.layout_page(), "run `make docs` to regenerate it"
    for folder in ("pipeline", "scripts"):
        modules = [p for p in (ROOT / folder).rglob("*.py") if p != ROOT / folder / "__init__.py"]
        missing = [p for p in modules if f"| `{p.relative_to(ROOT / folder).as_posix()}` |" not in committed]
        assert missing == [] and all(hooks.first_sentence(p) for p in modules), missing


def test_every_setting_has_a_line_of_help_in_the_reference():
    rows = [
        r for r in load_script("docs_hooks").configuration_reference().splitlines() if r.startswith("| `")
    ]
    assert len(rows) > 100 and [r for r in rows if r.rstrip().endswith("|  |")] == []


def test_the_site_builds_with_strict_checks(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--quiet",
            "--site-dir",
            str(tmp_path / "site"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "site" / "reference" / "configuration" / "index.html").is_file()
    assert (tmp_path / "site" / "reference" / "reports" / "index.html").is_file()


def test_no_dated_measurement_is_left_in_the_code():
    dated = re.compile(r"20\d\d-[01]\d-[0-3]\d")
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in sorted((ROOT / "pipeline").rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if dated.search(line)
    ]
    assert found == [], "figures with dates belong in docs/design.md"
