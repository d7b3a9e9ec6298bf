"""The table model: rows = models in the paper's order, columns = test sets in the paper's
order, beside the published numbers, with bootstrap intervals and paired tests.

Every table is built once as an `imhibench.common.tables.Table`; `imhibench.aggregate.write`
writes it as Parquet, Markdown, HTML and LaTeX."""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from imhibench.aggregate.notes import (
    DIFFERENCE_NOTE,
    RANDOM_WEIGHTS_MARK,
    RANDOM_WEIGHTS_NOTE,
    labelling_differs_note,
    rows_per_cell_note,
    seed_text,
)
from imhibench.aggregate.specs import (
    PUBLISHED_LABELER,
    STATUS_PUBLISHED_ONLY,
    STATUS_REPRODUCED,
    TableSpec,
)
from imhibench.common.errors import ImhiBenchError
from imhibench.common.io import read_table
from imhibench.common.tables import (
    DisplayRow,
    Table,
    difference_as_shown,
    number,
    with_interval,
)
from imhibench.score.metrics.paired import paired_weighted_f1_difference
from imhibench.score.stage import SUMMARY_COLUMNS

LABEL_COLUMNS = ["row_id", "gold_label"]


def load_summaries(paths: Sequence[str | Path]) -> pd.DataFrame:
    """All per-(model, dataset) summaries in one long table."""
    if not paths:
        raise ImhiBenchError("nothing to aggregate: no (model, dataset) job is configured")
    return pd.concat([read_table(p, SUMMARY_COLUMNS) for p in paths], ignore_index=True)


def pivot(
    summaries: pd.DataFrame,
    metric: str,
    labeler: str | None,
    models: Sequence[str],
    datasets: Sequence[str],
) -> pd.DataFrame:
    """Rows = models, columns = datasets (NaN where a model has no such job)."""
    selected = summaries[summaries["metric"] == metric]
    if labeler is None:
        selected = selected[selected["labeler"].isna()]
    else:
        selected = selected[selected["labeler"] == labeler]
    wide = selected.pivot_table(index="model", columns="dataset", values="value", aggfunc="first")
    wide = wide.reindex(index=list(models), columns=list(datasets))
    wide.columns.name = None
    return wide


def paper_dataset_order(
    datasets: Sequence[str], task_of: Mapping[str, str], paper_tasks: Sequence[str]
) -> list[str]:
    """`datasets` sorted by their task's position in the paper (the published file's column
    order); datasets of other tasks keep their order, after those."""
    position = {task: i for i, task in enumerate(paper_tasks)}
    return sorted(datasets, key=lambda d: position.get(task_of[d], len(position)))


@dataclass(frozen=True)
class TableRow:
    """A row: our `model` (None for a published-only row) and its `published` name, if any."""

    label: str
    model: str | None
    published: str | None


def paper_row_order(
    models: Sequence[str], published_as: Mapping[str, str | None], published_models: Sequence[str]
) -> list[TableRow]:
    """The paper's rows in its order, each one ours where a model is `published_as` it (every
    such model, in config order, when several are, e.g. a float32 and a bfloat16 run), else
    published only; then our models that have no published row, in config order."""
    if repeated := sorted({m for m in models if list(models).count(m) > 1}):
        raise ImhiBenchError(f"models listed more than once: {repeated}")
    ours: dict[str, list[str]] = {}
    for model in models:
        if name := published_as.get(model):
            ours.setdefault(name, []).append(model)
    unknown = sorted(n for n in ours if n not in published_models)
    if unknown:
        raise ImhiBenchError(
            f"published_as names {unknown} are not rows of the published file "
            f"({list(published_models)})"
        )
    rows = []
    for name in published_models:
        rows += [TableRow(m, m, name) for m in ours.get(name, [])] or [TableRow(name, None, name)]
    rows += [TableRow(m, m, None) for m in models if not published_as.get(m)]
    return rows


def metric_table(
    summaries: pd.DataFrame,
    spec: TableSpec,
    rows: Sequence[TableRow],
    datasets: Sequence[str],
    task_of: Mapping[str, str],
    published: pd.DataFrame | None,
    notes: Sequence[str] = (),
    metadata: Mapping | None = None,
    random_weights: Collection[str] = (),
    bootstrap_seeds: Sequence[int] = (),
) -> Table:
    """One paper table: our value (with its 95% interval where the summaries have one) per
    cell; under each reproduced model with published values, the published row and the
    difference (ours - published); published-only rows in italics. Models in `random_weights`
    are marked as such; a note gives the rows behind each cell and, where the published
    values come from another labeller than `spec.labeler`, says so."""
    models = [r.model for r in rows if r.model]
    values = pivot(summaries, spec.metric, spec.labeler, models, datasets)
    lows = pivot(summaries, f"{spec.metric}_ci_low", spec.labeler, models, datasets)
    highs = pivot(summaries, f"{spec.metric}_ci_high", spec.labeler, models, datasets)
    counts = pivot(summaries, "n", None, models, datasets)
    has_ci = bool(lows.notna().to_numpy().any())
    other_labels = published is not None and spec.labeler != PUBLISHED_LABELER

    def published_value(name: str | None, dataset: str) -> float:
        if published is None or name is None or name not in published.index:
            return math.nan
        task = task_of[dataset]
        return float(published.at[name, task]) if task in published.columns else math.nan

    records, display = [], []
    for row in rows:
        if row.model is None and published is None:
            continue
        record = {
            "model": row.label,
            "status": STATUS_REPRODUCED if row.model else STATUS_PUBLISHED_ONLY,
            "published_as": row.published,
            "random_weights": row.model in random_weights,
        }
        ours, theirs, differences = [], [], []
        for dataset in datasets:
            value = values.at[row.model, dataset] if row.model else math.nan
            low = lows.at[row.model, dataset] if row.model else math.nan
            high = highs.at[row.model, dataset] if row.model else math.nan
            reference = published_value(row.published, dataset)
            difference = value - reference
            record[dataset] = value
            record[f"{dataset}_n"] = counts.at[row.model, dataset] if row.model else math.nan
            if has_ci:
                record[f"{dataset}_ci_low"], record[f"{dataset}_ci_high"] = low, high
            if published is not None:
                record[f"{dataset}_published"] = reference
                record[f"{dataset}_difference"] = difference
            ours.append(with_interval(value, low, high) if has_ci else number(value))
            theirs.append(number(reference))
            differences.append(number(difference_as_shown(value, reference), signed=True))
        records.append(record)
        if row.model is None:
            status = "published only, MentalBERT labels" if other_labels else "published only"
            display.append(DisplayRow(f"{row.label} ({status})", tuple(theirs), "published-only"))
            continue
        label = f"{row.label} {RANDOM_WEIGHTS_MARK}" if row.model in random_weights else row.label
        display.append(DisplayRow(label, tuple(ours)))
        if any(t != "-" for t in theirs):
            source = f"{row.published}, MentalBERT labels" if other_labels else row.published
            display.append(DisplayRow(f"published ({source})", tuple(theirs), "published"))
            display.append(DisplayRow("difference", tuple(differences), "difference"))
    frame = pd.DataFrame.from_records(records)
    table_notes = []
    if has_ci:
        seeds = f", {seed_text(bootstrap_seeds)}" if bootstrap_seeds else ""
        table_notes.append(
            "Brackets: seeded percentile bootstrap 95% interval (1000 resamples of the rows"
            f"{seeds})."
        )
    if rows_note := rows_per_cell_note(counts):
        table_notes.append(rows_note)
    if random_weights and any(r.model in random_weights for r in rows):
        table_notes.append(RANDOM_WEIGHTS_NOTE)
    if other_labels and any(d.kind in ("published", "published-only") for d in display):
        table_notes.append(labelling_differs_note(spec.labeler))
    if any(row.kind == "difference" for row in display):
        table_notes.append(DIFFERENCE_NOTE)
    table_notes += notes
    return Table(
        spec.name, spec.title, list(datasets), display, frame, table_notes, dict(metadata or {})
    )


def paired_table(
    name: str,
    label_paths: Mapping[tuple[str, str], str | Path],
    models: Sequence[str],
    datasets: Sequence[str],
    labeler: str,
    seed: int,
    metadata: Mapping | None = None,
    where: str = "",
) -> Table:
    """Paired bootstrap of the weighted-F1 difference of every pair of models per test set, on
    the rows both answered (matched by row_id); `*` marks a 95% interval that excludes 0, and
    each cell says how many rows the two models share. `where` (the group's test sets) ends
    the title."""
    records = []
    pairs = list(itertools.combinations(models, 2))
    for dataset in datasets:
        for model_a, model_b in pairs:
            if (model_a, dataset) not in label_paths or (model_b, dataset) not in label_paths:
                continue
            column = f"label_{labeler}"
            a = read_table(label_paths[model_a, dataset], [*LABEL_COLUMNS, column])
            b = read_table(label_paths[model_b, dataset], [*LABEL_COLUMNS, column])
            both = a.merge(b, on="row_id", suffixes=("_a", "_b"), validate="one_to_one")
            if not both["gold_label_a"].equals(both["gold_label_b"]):
                raise ImhiBenchError(
                    f"{label_paths[model_a, dataset]} and {label_paths[model_b, dataset]}: "
                    "different gold labels for the same row_id"
                )
            if both.empty:
                continue
            test = paired_weighted_f1_difference(
                both["gold_label_a"].tolist(),
                both[f"{column}_a"].tolist(),
                both[f"{column}_b"].tolist(),
                seed=seed,
            )
            records.append(
                {
                    "dataset": dataset,
                    "model_a": model_a,
                    "model_b": model_b,
                    "labeler": labeler,
                    "n_rows": test.n_rows,
                    "difference": test.difference,
                    "ci_low": test.ci_low,
                    "ci_high": test.ci_high,
                    "p_value": test.p_value,
                    "significant": test.significant,
                }
            )
    columns = [
        "dataset",
        "model_a",
        "model_b",
        "labeler",
        "n_rows",
        "difference",
        "ci_low",
        "ci_high",
        "p_value",
        "significant",
    ]
    frame = pd.DataFrame.from_records(records, columns=columns)
    display = []
    for model_a, model_b in pairs:
        found = frame[(frame["model_a"] == model_a) & (frame["model_b"] == model_b)]
        if found.empty:
            continue
        by_dataset = found.set_index("dataset")
        cells = []
        for dataset in datasets:
            if dataset not in by_dataset.index:
                cells.append("-")
                continue
            test = by_dataset.loc[dataset]
            text = with_interval(test["difference"], test["ci_low"], test["ci_high"], signed=True)
            cells.append(
                text + (" *" if test["significant"] else "") + f" (n={int(test['n_rows'])})"
            )
        display.append(DisplayRow(f"{model_a} - {model_b}", tuple(cells)))
    notes = [
        f"Weighted F1 ({labeler} labels) of the first model minus the second, on the rows both "
        "answered (by row_id), with a seeded paired percentile bootstrap 95% interval "
        f"(1000 resamples, seed {seed}). * = the interval excludes 0 (significant at 5%, "
        "no correction for multiple comparisons); p-values are in the Parquet file.",
        "(n=...): the rows both models answered, on which the difference is computed; the "
        "weighted-F1 table scores every row of each model, so its differences can disagree "
        "with these when the models answered different rows.",
    ]
    title = f"Paired test: weighted-F1 differences between models ({labeler} labels)"
    if where:
        title += f", {where}"
    return Table(
        name, title, list(datasets), display, frame, notes, dict(metadata or {}), corner="models"
    )
