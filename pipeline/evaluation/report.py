"""The per-class report as CSV (for tools) and Markdown (for people): one row per class, then the macro and
weighted averages, like scikit-learn's classification_report (several labels an image: a row a label)."""

import csv
import io

COLUMNS = ("precision", "recall", "f1", "support", "auc", "ap")


def report_rows(class_names: list[str], per_class: dict[str, list], metrics: dict[str, float]) -> list[list]:
    """`per_class` from per_class_metrics, `metrics` from classification_metrics (same split)."""
    rows = [[name, *(per_class[c][i] for c in COLUMNS)] for i, name in enumerate(class_names)]
    total = sum(per_class["support"])
    for average in ("macro", "weighted"):
        scores = [metrics[f"{c}_{average}"] for c in ("precision", "recall", "f1")]
        ap = metrics["ap_macro"] if average == "macro" else ""  # weighted AP is not computed
        rows.append([f"{average} avg", *scores, total, metrics[f"auc_{average}"], ap])
    return rows


def to_csv(rows: list[list], columns: tuple[str, ...] = ("class", *COLUMNS)) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return out.getvalue()


def to_markdown(rows: list[list], title: str, columns: tuple[str, ...] = ("class", *COLUMNS)) -> str:
    def cell(value) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = [f"# {title}", "", "| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
