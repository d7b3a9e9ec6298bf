"""Aggregate stage: the paper's tables (rows = models, columns = test sets), Parquet + Markdown."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from imhibench.errors import ImhiBenchError
from imhibench.io import atomic_path, read_provenance, read_table, write_json, write_table
from imhibench.score import SUMMARY_COLUMNS


@dataclass(frozen=True)
class TableSpec:
    """One results table: a metric (by one labeler, or none) over one group of test sets."""

    name: str
    title: str
    metric: str
    labeler: str | None
    group: str  # main | expert


def table_specs(
    primary_labeler: str, scorers: Sequence[str], groups: Sequence[str]
) -> list[TableSpec]:
    """The tables a configuration produces."""
    specs = []
    for group in groups:
        prefix = "" if group == "main" else f"{group}_"
        where = "IMHI test sets" if group == "main" else "expert-written explanation sets"
        specs.append(
            TableSpec(
                f"{prefix}weighted_f1",
                f"Correctness: weighted F1 (x100, {primary_labeler} labels), {where}",
                "weighted_f1",
                primary_labeler,
                group,
            )
        )
        if "bart_score" in scorers:
            specs.append(
                TableSpec(
                    f"{prefix}bart_score",
                    f"Explanation quality: BART-score (mean log-likelihood, higher is better), "
                    f"{where}",
                    "bart_score",
                    None,
                    group,
                )
            )
    return specs


def load_summaries(paths: Sequence[str | Path]) -> pd.DataFrame:
    """All per-(model, dataset) summaries in one long table."""
    if not paths:
        raise ImhiBenchError("nothing to aggregate: no (model, dataset) job is configured")
    return pd.concat([read_table(p, SUMMARY_COLUMNS) for p in paths], ignore_index=True)


def pivot(
    summaries: pd.DataFrame, spec: TableSpec, models: Sequence[str], datasets: Sequence[str]
) -> pd.DataFrame:
    """Rows = models, columns = datasets (NaN where a model has no such job)."""
    selected = summaries[summaries["metric"] == spec.metric]
    if spec.labeler is None:
        selected = selected[selected["labeler"].isna()]
    else:
        selected = selected[selected["labeler"] == spec.labeler]
    wide = selected.pivot_table(index="model", columns="dataset", values="value", aggfunc="first")
    wide = wide.reindex(index=list(models), columns=list(datasets))
    wide.columns.name = None
    return wide.rename_axis("model").reset_index()


def to_markdown(table: pd.DataFrame, title: str, notes: Sequence[str] = ()) -> str:
    """A GitHub Markdown table, 2 decimals, '-' for a missing cell."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return "-" if math.isnan(value) else f"{value:.2f}"
        return str(value)

    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join(["---"] + ["---:"] * (len(table.columns) - 1)) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    lines = [f"## {title}", "", header, rule, *body, ""]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines).rstrip() + "\n"


def published_rows(path: str | Path, datasets: Sequence[str]) -> pd.DataFrame:
    """Published weighted F1 rows (CSV: model,<dataset>...) restricted to `datasets`."""
    try:
        published = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ImhiBenchError(f"{path}: cannot read published results: {err}") from err
    if "model" not in published.columns:
        raise ImhiBenchError(f"{path}: published results need a 'model' column")
    published = published.reindex(columns=["model", *datasets])
    published["model"] = published["model"].astype(str) + " (published)"
    return published


def write_tables(
    summary_paths: Sequence[str | Path],
    out_dir: str | Path,
    specs: Sequence[TableSpec],
    models: Sequence[str],
    datasets_by_group: dict[str, list[str]],
    notes: Sequence[str] = (),
    published: str | Path | None = None,
    provenance: dict | None = None,
) -> list[Path]:
    """Write every table as .parquet and .md, the long table, and the provenance sidecar."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summaries = load_summaries(summary_paths)
    written = []
    for spec in specs:
        table = pivot(summaries, spec, models, datasets_by_group[spec.group])
        write_table(table, out_dir / f"{spec.name}.parquet", provenance)
        shown, table_notes = table, list(notes)
        if published is not None and spec.metric == "weighted_f1" and spec.group == "main":
            shown = pd.concat(
                [table, published_rows(published, table.columns[1:])], ignore_index=True
            )
            table_notes.append(f"Rows marked (published) come from {published}, not from this run.")
        markdown = out_dir / f"{spec.name}.md"
        tmp = atomic_path(markdown)
        tmp.write_text(to_markdown(shown, spec.title, table_notes), encoding="utf-8")
        tmp.replace(markdown)
        written += [out_dir / f"{spec.name}.parquet", markdown]
    write_table(summaries, out_dir / "all_metrics.parquet", provenance)
    sidecar = {
        "aggregate": provenance or {},
        "inputs": {str(p): read_provenance(p) for p in summary_paths},
    }
    write_json(sidecar, out_dir / "provenance.json")
    return written
