"""Aggregate stage: the paper's tables (rows = models, columns = test sets), Parquet + Markdown."""

from __future__ import annotations

import html
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


def to_html(table: pd.DataFrame, title: str, notes: Sequence[str] = ()) -> str:
    """A standalone HTML page of the table (for `snakemake --report`), same cells as Markdown."""
    body = table.to_html(
        index=False, na_rep="-", float_format=lambda v: f"{v:.2f}", border=0, justify="right"
    )
    items = "".join(f"<li>{html.escape(note)}</li>" for note in notes)
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{padding:2px 8px;border-bottom:1px solid #ccc;text-align:right}</style>"
        f"</head><body><h2>{html.escape(title)}</h2>\n{body}\n"
        + (f"<ul>{items}</ul>" if items else "")
        + "</body></html>\n"
    )


def cell_provenance(record: dict) -> dict:
    """What made one (model, dataset) cell, from its summary's nested provenance: checkpoints
    (hub id, resolved revision or local path), test-set sha256, decoding settings, seed."""
    labels = record.get("labels", {})
    generation = labels.get("generation", {})
    test_set = generation.get("test_set", {})
    return {
        "model": {
            "name": generation.get("model"),
            "kind": generation.get("kind"),
            "hub_id": generation.get("hub_id"),
            "requested_revision": generation.get("requested_revision"),
            "checkpoints": generation.get("checkpoints"),
        },
        "test_set": {
            key: test_set.get(key) for key in ("dataset", "task", "split", "source", "sha256")
        },
        "rows": generation.get("rows"),
        "generation_settings": generation.get("generation_settings"),
        "seed": generation.get("seed"),
        "device": generation.get("device"),
        "labelers": labels.get("labelers"),
        "classifier": labels.get("classifier"),
        "scorers": record.get("scorers"),
        "scorer_checkpoints": record.get("scorer_checkpoints"),
        "git_sha": {
            stage: rec.get("git_sha")
            for stage, rec in (("generate", generation), ("label", labels), ("score", record))
        },
    }


def bart_score_variant(records: dict[str, dict]) -> str:
    """The one BARTScore variant (score provenance ``bart_score_variant``) of every summary;
    raises when summaries were scored with different variants or do not say which."""
    by_variant: dict[str | None, list[str]] = {}
    for path, record in records.items():
        by_variant.setdefault(record.get("bart_score_variant"), []).append(path)
    if None in by_variant:
        raise ImhiBenchError(
            f"{by_variant[None][0]}: its provenance names no BARTScore variant; rerun its score "
            "job with this version of imhi-bench"
        )
    if len(by_variant) != 1:
        mixed = "; ".join(f"{v}: {paths[0]}" for v, paths in sorted(by_variant.items()))
        raise ImhiBenchError(
            f"BART-scores of different variants would share a table ({mixed}); rescore them "
            "with one scorers.bart_score setting"
        )
    return next(iter(by_variant))


def bart_score_note(variant: str) -> str:
    """The BART-score table's note on the variant it reports."""
    if "no ParaBank2" in variant:
        return (
            f"BART-scores from {variant}: upstream loads the ParaBank2 weights file "
            "(bart_score.pth), so these are not comparable with the paper's BART-scores."
        )
    return (
        f"BART-scores from {variant}: the checkpoint with a ParaBank2 weights file loaded, as "
        "upstream does (the file's source and sha256 are in provenance.json)."
    )


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
    """Write every table as .parquet, .md and .html, the long table, and the provenance
    sidecar: the aggregate's own record, every input summary's full record (`inputs`), and per
    (model, dataset) cell what made it (`cells`, see `cell_provenance`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summaries = load_summaries(summary_paths)
    inputs = {str(p): read_provenance(p) for p in summary_paths}
    variant = None
    if any(spec.metric == "bart_score" for spec in specs):
        variant = bart_score_variant(inputs)
    written = []
    for spec in specs:
        table = pivot(summaries, spec, models, datasets_by_group[spec.group])
        shown, table_notes, title, table_provenance = table, list(notes), spec.title, provenance
        if spec.metric == "bart_score":
            title = f"{spec.title} [{variant}]"
            table_notes.append(bart_score_note(variant))
            table_provenance = {**(provenance or {}), "bart_score_variant": variant}
        write_table(table, out_dir / f"{spec.name}.parquet", table_provenance)
        if published is not None and spec.metric == "weighted_f1" and spec.group == "main":
            shown = pd.concat(
                [table, published_rows(published, table.columns[1:])], ignore_index=True
            )
            table_notes.append(f"Rows marked (published) come from {published}, not from this run.")
        written.append(out_dir / f"{spec.name}.parquet")
        for ext, render in (("md", to_markdown), ("html", to_html)):
            path = out_dir / f"{spec.name}.{ext}"
            tmp = atomic_path(path)
            tmp.write_text(render(shown, title, table_notes), encoding="utf-8")
            tmp.replace(path)
            written.append(path)
    write_table(summaries, out_dir / "all_metrics.parquet", provenance)
    cells: dict[str, dict] = {}
    for path, record in inputs.items():
        cells.setdefault(record.get("model", path), {})[record.get("dataset", path)] = {
            "summary": path,
            **cell_provenance(record),
        }
    sidecar = {"aggregate": provenance or {}, "cells": cells, "inputs": inputs}
    if variant is not None:
        sidecar["bart_score_variant"] = variant
    write_json(sidecar, out_dir / "provenance.json")
    return written
