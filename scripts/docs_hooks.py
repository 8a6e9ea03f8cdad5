"""Documentation pages made from what they describe, so that they cannot drift from it.

- docs/reference/configuration.md, from pipeline/schema.py: every setting with its type, default, allowed
  values or bounds and the comment beside it; docs/layout.md, from each module's docstring. Written by
  `python scripts/docs_hooks.py` (`make docs` runs it); a test fails when a committed page differs.
- The measured-reports page, from docs/reports/ (written there by `make bench-* ARGS="--out docs/reports"`,
  each report with its machine and date): made when MkDocs builds the site (mkdocs.yml's `hooks`).
"""

import ast
import io
import re
import tokenize
from dataclasses import MISSING, fields, is_dataclass
from enum import Enum
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "pipeline" / "schema.py"
REPORTS = ROOT / "docs" / "reports"
REFERENCE = ROOT / "docs" / "reference" / "configuration.md"
REPORTS_PAGE = "reference/reports.md"


def field_comments(source: str) -> dict[tuple[str, str], str]:
    """(class, field) -> the comment lines right above the field and the comment after it, as one text."""
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type == tokenize.COMMENT]
    text = {t.start[0]: t.string.lstrip("# ").strip() for t in tokens}
    whole_line = {line: text[line] for line in text if source.splitlines()[line - 1].lstrip().startswith("#")}
    trailing = {line: words for line, words in text.items() if line not in whole_line}
    found = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                above, line = [], item.lineno - 1
                while line in whole_line:
                    above.insert(0, whole_line[line])
                    line -= 1
                parts = [*above, trailing.get(item.lineno, "")]
                found[(node.name, item.target.id)] = " ".join(p for p in parts if p)
    return found


def annotations(source: str) -> dict[tuple[str, str], str]:
    return {
        (node.name, item.target.id): ast.get_source_segment(source, item.annotation)
        for node in ast.parse(source).body
        if isinstance(node, ast.ClassDef)
        for item in node.body
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
    }


def default_of(field, dotted: str, composed) -> str:
    """The schema's default; for a setting a conf/ group fills, the value `make train` composes, and which
    group option gives it."""
    from omegaconf import MISSING as REQUIRED
    from omegaconf import OmegaConf

    if field.default_factory is not MISSING:
        value = field.default_factory()
        return "(see below)" if is_dataclass(value) else f"`{value}`"
    if field.default is REQUIRED or field.default is MISSING:
        if dotted == "output_dir":
            return "Hydra's run folder, `outputs/runs/<time>/`"
        value = OmegaConf.select(composed, dotted, throw_on_missing=False)
        shown = "null" if value is None else "(a dict)" if OmegaConf.is_config(value) else value
        group = dotted.split(".")[0]
        choice = composed.hydra.runtime.choices.get(group, group)
        return f"`{shown}` (conf/{group}/{choice}.yaml)"
    value = field.default.value if isinstance(field.default, Enum) else field.default
    return f"`{'null' if value is None else value}`"


def allowed_of(field) -> str:
    from pipeline.schema import rules_of

    kind = field.type
    choices = [kind] if isinstance(kind, type) and issubclass(kind, Enum) else []
    choices += [a for a in getattr(kind, "__args__", ()) if isinstance(a, type) and issubclass(a, Enum)]
    allowed = [" \\| ".join(f"`{m.value}`" for m in choices[0])] if choices else []
    allowed += [rule.text for rule in rules_of(field)]
    return ", ".join(allowed) if allowed else ""


def section_table(cls, prefix: str, comments: dict, types: dict, composed) -> list[str]:
    rows = ["| setting | type | default | allowed | what it does |", "|---|---|---|---|---|"]
    for f in fields(cls):
        if isinstance(f.type, type) and is_dataclass(f.type):
            continue
        # a pipe inside a code span would show its escape: "str or None"
        kind = types.get((cls.__name__, f.name), str(f.type)).replace(" | ", " or ")
        help_text = comments.get((cls.__name__, f.name), "").replace("|", "\\|")
        default = default_of(f, f"{prefix}{f.name}", composed)
        rows.append(f"| `{prefix}{f.name}` | `{kind}` | {default} | {allowed_of(f)} | {help_text} |")
    return rows


def default_config():
    """conf/config.yaml as `make train` composes it, no override; with Hydra's node (its group choices)."""
    from hydra import compose, initialize_config_dir

    from pipeline.schema import register

    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", return_hydra_config=True)


def sweeper_table() -> list[str]:
    """hydra.sweeper's settings when hydra/sweeper=optuna (hparams_search presets choose it), from its YAML
    file: each top-level key, its value and the comment beside or above it."""
    rows = ["| setting | default | what it does |", "|---|---|---|"]
    above: list[str] = []
    for line in (ROOT / "conf" / "hydra" / "sweeper" / "optuna.yaml").read_text().splitlines():
        if line.startswith("#"):
            above.append(line.lstrip("# ").strip())
            continue
        key, sep, rest = line.partition(":")
        if not sep or line.startswith((" ", "_")):
            above = [] if not line.startswith(" ") else above
            continue
        value, _, comment = rest.partition("#")
        text = " ".join([*above[-2:], comment.strip()]).replace("|", "\\|")
        rows.append(f"| `hydra.sweeper.{key}` | `{value.strip() or '(below)'}` | {text.strip()} |")
        above = []
    return rows


def configuration_reference() -> str:
    """Every setting of pipeline.schema.Config, section by section."""
    from pipeline.schema import TRAINER_RULES, Config

    source = SCHEMA.read_text()
    comments, types, composed = field_comments(source), annotations(source), default_config()
    lines = [
        "# Configuration reference",
        "",
        "Generated from `pipeline/schema.py` when the site is built. Override any setting on the command",
        "line (`make train data.batch_size=32`); an unknown key, a wrong type, a choice outside the allowed",
        "values or a value outside its bounds fails at start with one line. A default naming a file comes",
        "from the option `conf/config.yaml` picks in its group (`data=folder` reads conf/data/folder.yaml).",
        "",
        "## Top level",
        "",
        *section_table(Config, "", comments, types, composed),
    ]
    for f in fields(Config):
        if isinstance(f.type, type) and is_dataclass(f.type):
            table = section_table(f.type, f"{f.name}.", comments, types, composed)
            lines += ["", f"## {f.name}", "", *table]
    bounds = ", ".join(f"`trainer.{n}` {' and '.join(r.text for r in rs)}" for n, rs in TRAINER_RULES.items())
    lines += [
        "",
        "## trainer",
        "",
        "Lightning's `Trainer` arguments, passed as written (`conf/trainer/`); a name the Trainer does not",
        f"take fails at start with a suggestion. Bounds checked here: {bounds}.",
        "",
        "## hydra.sweeper",
        "",
        "With `hydra/sweeper=optuna` (the `hparams_search` presets choose it; pipeline/sweeps/):",
        "",
        *sweeper_table(),
    ]
    return "\n".join(lines) + "\n"


LAYOUT = ROOT / "docs" / "layout.md"
LAYOUT_FOLDERS = ("pipeline", "scripts")


def first_sentence(path: Path) -> str:
    """A module's docstring, its first sentence (or its first paragraph, if that has no full stop)."""
    text = ast.get_docstring(ast.parse(path.read_text())) or ""
    paragraph = " ".join(text.split("\n\n")[0].split())
    ended = re.search(r"^(.+?\.)(\s|$)", paragraph)
    return (ended[1] if ended else paragraph).replace("|", "\\|")


def layout_page() -> str:
    """Every module of pipeline/ and scripts/ with its docstring's first sentence, and conf/'s groups."""
    from pipeline.cli_help import config_groups

    groups = ", ".join(f"`{group}`" for group in config_groups())
    lines = [
        "# Layout",
        "",
        "Generated by `make docs` from each module's own docstring (a test keeps it whole).",
        "",
        f"`conf/`: `config.yaml` (the defaults list) and a folder per config group: {groups}; Hydra's own",
        "groups under `conf/hydra/` (launcher, sweeper, job_logging). `tests/`: one file per subject, each",
        "test on data it makes. `docs/`: this site (`mkdocs.yml`).",
    ]
    for folder in LAYOUT_FOLDERS:
        lines += ["", f"## {folder}/", "", "| module | what it does |", "|---|---|"]
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name != "__init__.py" or path.parent != ROOT / folder:
                name = path.relative_to(ROOT / folder).as_posix()
                lines.append(f"| `{name}` | {first_sentence(path)} |")
    return "\n".join(lines) + "\n"


def reports_page() -> str:
    """The measured reports in docs/reports/, each as its script wrote it (its first line names the machine
    and the date)."""
    reports = sorted(REPORTS.glob("*.md"))
    lines = ["# Measured reports", ""]
    if not reports:
        lines.append(
            'No report in `docs/reports/` yet: `make bench-accuracy ARGS="--out docs/reports"` writes one.'
        )
    for report in reports:
        text = report.read_text().replace("\n# ", "\n## ")
        lines += [text.replace("# ", "## ", 1) if text.startswith("# ") else text, ""]
    return "\n".join(lines) + "\n"


def on_files(files, config):
    """MkDocs event: add the reports page (mkdocs.yml excludes the reports' own files)."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, REPORTS_PAGE, content=reports_page()))
    return files


if __name__ == "__main__":
    for page, text in ((REFERENCE, configuration_reference()), (LAYOUT, layout_page())):
        page.write_text(text)
        print(f"wrote {page.relative_to(ROOT)}")
