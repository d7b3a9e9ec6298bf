"""The aggregate stage's entry: every table of the config, in four formats, with provenance."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from imhibench.aggregate.build import (
    TableRow,
    load_summaries,
    metric_table,
    paired_table,
    paper_dataset_order,
    paper_row_order,
)
from imhibench.aggregate.notes import (
    bart_score_note,
    bart_score_variant,
    bart_score_weights_sha256,
    cell_provenance,
    mark_not_run,
    model_metric_notes,
)
from imhibench.aggregate.specs import (
    MODEL_METRIC_TABLES,
    UNITS,
    TableSpec,
    group_description,
    paired_table_names,
)
from imhibench.common.io import read_provenance, write_json, write_table
from imhibench.common.published import SHIPPED_PUBLISHED, SHIPPED_PUBLISHED_CAVEAT, load_published
from imhibench.common.tables import (
    write_table_files,
)

PROVENANCE_SIDECAR = "provenance.json"

log = logging.getLogger(__name__)


def write_tables(
    summary_paths: Sequence[str | Path],
    out_dir: str | Path,
    specs: Sequence[TableSpec],
    models: Sequence[str],
    datasets_by_group: dict[str, list[str]],
    task_of: Mapping[str, str] | None = None,
    notes: Mapping[str, Sequence[str]] | Sequence[str] = (),
    published: str | Path | None = None,
    published_as: Mapping[str, str | None] | None = None,
    label_paths: Mapping[tuple[str, str], str | Path] | None = None,
    seed: int = 0,
    provenance: dict | None = None,
    skipped: Mapping[str, Sequence[str]] | None = None,
    random_weights: Collection[str] = (),
    parabank2_sha256: str | None = None,
) -> list[Path]:
    """Write every table (and, given `label_paths`, a paired-test table per group) as .parquet,
    .md, .html and .tex, the long table of all metrics, and the provenance sidecar: the
    aggregate's own record, every input summary's full record (`inputs`), per
    (model, dataset) cell what made it (`cells`, see `cell_provenance`) and the jobs not run
    (`skipped`). `notes` go under every table, or, as a mapping group -> notes, under that
    group's tables. `skipped` (group -> one message per skipped job group) puts one line under
    that group's tables, the list in the HTML table (the report), the log and the sidecar.
    Models in `random_weights` are marked; `parabank2_sha256` is the digest a BARTScore
    weights file must have to be called ParaBank2's."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summaries = load_summaries(summary_paths)
    inputs = {str(p): read_provenance(p) for p in summary_paths}
    skipped = {group: list(messages) for group, messages in (skipped or {}).items() if messages}
    for group, messages in skipped.items():
        for message in messages:
            log.info("not run (%s tables): %s", group, message)
    seeds = sorted({r["seed"] for r in inputs.values() if r.get("seed") is not None})
    task_of = dict(task_of or {d: d for g in datasets_by_group.values() for d in g})
    published_values = load_published(published) if published is not None else None
    paper_tasks = list(published_values.columns) if published_values is not None else []
    rows = paper_row_order(
        models,
        published_as or {},
        list(published_values.index) if published_values is not None else [],
    )
    published_note = []
    if published is not None:
        shipped = Path(published).resolve() == SHIPPED_PUBLISHED.resolve()
        published_note = [
            SHIPPED_PUBLISHED_CAVEAT if shipped else f"Published values: {published}."
        ]
    variant = None
    if any(spec.metric == "bart_score" for spec in specs):
        variant = bart_score_variant(inputs, parabank2_sha256)
        weights_sha256 = bart_score_weights_sha256(next(iter(inputs.values())))
    scored_by = {
        spec.metric: model_metric_notes(spec.metric, inputs)
        for spec in specs
        if spec.metric in {m for _, m, _ in MODEL_METRIC_TABLES.values()}
    }
    written = []

    def answered(group_datasets: Sequence[str], metric: str | None = None) -> list[TableRow]:
        """Rows of a group's tables: models with a summary there (of `metric`, for a model
        metric's table: one that scores some models only has no row for the others), and
        published-only rows."""
        found = summaries["dataset"].isin(group_datasets)
        if metric in scored_by:
            found &= summaries["metric"] == metric
        models = set(summaries.loc[found, "model"])
        return [r for r in rows if r.model is None or r.model in models]

    for spec in specs:
        datasets = paper_dataset_order(datasets_by_group[spec.group], task_of, paper_tasks)
        group_rows = answered(datasets, spec.metric)
        with_published = spec.metric == "weighted_f1" and spec.group == "main"
        metadata = {
            "units": UNITS.get(spec.metric, spec.metric),
            "labeler": spec.labeler,
            "scorer_variant": variant if spec.metric == "bart_score" else None,
            "published_source": str(published) if with_published and published else None,
            "provenance": PROVENANCE_SIDECAR,
        }
        if spec.metric == "weighted_f1":
            metadata["bootstrap_seeds"] = seeds
        table = metric_table(
            summaries,
            spec,
            group_rows if with_published else [r for r in group_rows if r.model],
            datasets,
            task_of,
            published_values if with_published else None,
            [
                *(notes.get(spec.group, ()) if isinstance(notes, Mapping) else notes),
                *(published_note if with_published else []),
                *(
                    [bart_score_note(variant, weights_sha256, parabank2_sha256)]
                    if spec.metric == "bart_score"
                    else []
                ),
                *(scored_by[spec.metric][1] if spec.metric in scored_by else []),
            ],
            metadata,
            random_weights,
            seeds,
        )
        mark_not_run(table, skipped.get(spec.group, []))
        if spec.metric in scored_by:
            table.title += scored_by[spec.metric][0]
        table_provenance = provenance
        if spec.metric == "bart_score":
            table.title += f" [{variant}]"
            table_provenance = {**(provenance or {}), "bart_score_variant": variant}
        written += write_table_files(table, out_dir, table_provenance)
    if label_paths is not None:
        primary = next(s.labeler for s in specs if s.metric == "weighted_f1")
        groups = [group for group, datasets in datasets_by_group.items() if datasets]
        for group, name in zip(groups, paired_table_names(groups), strict=True):
            datasets = paper_dataset_order(datasets_by_group[group], task_of, paper_tasks)
            order = [r.model for r in answered(datasets) if r.model]
            metadata = {
                "units": "difference of weighted F1 x100",
                "labeler": primary,
                "provenance": PROVENANCE_SIDECAR,
            }
            where = group_description(group)
            table = paired_table(name, label_paths, order, datasets, primary, seed, metadata, where)
            mark_not_run(table, skipped.get(group, []))
            written += write_table_files(table, out_dir, provenance)
    write_table(summaries, out_dir / "all_metrics.parquet", provenance)
    cells: dict[str, dict] = {}
    for path, record in inputs.items():
        cells.setdefault(record.get("model", path), {})[record.get("dataset", path)] = {
            "summary": path,
            **cell_provenance(record),
        }
    sidecar = {
        "aggregate": provenance or {},
        "cells": cells,
        "skipped": skipped,
        "inputs": inputs,
    }
    if variant is not None:
        sidecar["bart_score_variant"] = variant
    write_json(sidecar, out_dir / PROVENANCE_SIDECAR)
    return written
