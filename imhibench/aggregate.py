"""Aggregate stage: the paper's tables (rows = models in the paper's order, columns = test sets
in the paper's order) beside the published numbers, with bootstrap intervals and paired tests.

Every table is built once as an `imhibench.tables.Table` and written as Parquet, Markdown,
HTML and LaTeX.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from imhibench.errors import ImhiBenchError
from imhibench.io import read_provenance, read_table, write_json, write_table
from imhibench.metrics.paired import paired_weighted_f1_difference
from imhibench.score import SUMMARY_COLUMNS
from imhibench.tables import (
    MISSING,
    DisplayRow,
    Table,
    difference_as_shown,
    number,
    with_interval,
    write_table_files,
)

log = logging.getLogger(__name__)

# The transcription of the paper's weighted F1 that ships with imhi-bench (the default of the
# config key `published_weighted_f1`), and its caveat, shown under every table that uses it.
SHIPPED_PUBLISHED = Path(__file__).parent / "data" / "published_weighted_f1.csv"
SHIPPED_PUBLISHED_CAVEAT = (
    "Published values: imhi-bench's transcription of the MentaLLaMA paper (Yang et al., WWW 2024) "
    "from two third-party summaries that agree with each other; not yet checked against the "
    "paper's PDF. Point the config key published_weighted_f1 at your own file to replace it."
)
PROVENANCE_SIDECAR = "provenance.json"
LABEL_COLUMNS = ["row_id", "gold_label"]

# Under every table with difference rows.
DIFFERENCE_NOTE = (
    "Difference: ours minus published, of the values as shown (each rounded to 2 decimals); "
    "the Parquet file's <dataset>_difference columns hold the unrounded difference."
)
STATUS_REPRODUCED = "reproduced"
STATUS_PUBLISHED_ONLY = "published only"
UNITS = {
    "weighted_f1": "weighted F1 x100 (scikit-learn, average='weighted')",
    "bart_score": "BARTScore: mean token log-likelihood of the gold answer given the response",
    "gpt_score": "GPTScore: mean token log-probability of the response given the gold answer",
    "llm_judge_overall": "LLM judge: overall rating 0-3, mean over the rows whose answer parsed",
}
# Tables of the model metrics (imhibench.config.MODEL_METRICS): metric name -> (table name,
# reported summary metric, title).
MODEL_METRIC_TABLES = {
    "gpt_score": (
        "gpt_score",
        "gpt_score",
        "Explanation quality: GPTScore (mean log-probability of the response given the gold "
        "answer, higher is better)",
    ),
    "llm_judge": (
        "llm_judge",
        "llm_judge_overall",
        "Explanation quality: LLM judge, overall rating (0-3, higher is better)",
    ),
}
# The labeller behind the published weighted F1 (the paper's MentalBERT classifiers).
PUBLISHED_LABELER = "mentalbert"
# Beside the name of a model whose entry says `random_weights: true` (the demo's tiny models).
RANDOM_WEIGHTS_MARK = "(random weights)"
RANDOM_WEIGHTS_NOTE = (
    "(random weights): a tiny model with untrained weights (the demo's stand-ins); its numbers "
    "only show that the pipeline runs and say nothing about any real model."
)
# The one line under a table with cells of skipped jobs; the list is in provenance.json.
NOT_RUN_NOTE = "-: not run; details in provenance.json"


def mark_not_run(table: Table, not_run: Sequence[str]) -> None:
    """Give `table` the list of its group's jobs that were not run (shown in full in its HTML)
    and, when one of its result rows has a missing cell, the one-line note that says why."""
    table.not_run = list(not_run)
    if not_run and any(MISSING in row.cells for row in table.rows if row.kind == "result"):
        table.notes.append(NOT_RUN_NOTE)


def labelling_differs_note(labeler: str) -> str:
    """The note under a table whose reproduced rows use another labeller than the paper's."""
    return (
        f"Labelling differs: the reproduced rows are scored on {labeler} labels, the published "
        "rows on the paper's MentalBERT classifier labels; a difference mixes the model with "
        "the labeller."
    )


def seed_text(seeds: Sequence[int]) -> str:
    """`seed 42`, or `seeds 0, 42` where summaries were made with different seeds."""
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    return "seeds " + ", ".join(map(str, seeds))


def rows_per_cell_note(counts: pd.DataFrame) -> str | None:
    """How many rows each cell scores, models with the same counts named together:
    `Rows per cell: 4 (m1, m2); 35 (m3).` or, where test sets differ, `DR 405, SAD 684 (m1)`."""
    groups: dict[str, list[str]] = {}
    for model, row in counts.iterrows():
        found = {dataset: int(n) for dataset, n in row.items() if not math.isnan(n)}
        if not found:
            continue
        if len(set(found.values())) == 1:
            text = str(next(iter(found.values())))
        else:
            text = ", ".join(f"{dataset} {n}" for dataset, n in found.items())
        groups.setdefault(text, []).append(str(model))
    parts = [f"{text} ({', '.join(models)})" for text, models in groups.items()]
    return "Rows per cell: " + "; ".join(parts) + "." if parts else None


@dataclass(frozen=True)
class TableSpec:
    """One results table: a metric (by one labeler, or none) over one group of test sets."""

    name: str
    title: str
    metric: str
    labeler: str | None
    group: str  # main | expert


def group_description(group: str) -> str:
    """The test sets of a table group, as its tables' titles name them."""
    return "IMHI test sets" if group == "main" else "expert-written explanation sets"


def table_specs(
    primary_labeler: str,
    scorers: Sequence[str] | Mapping[str, Sequence[str]],
    groups: Sequence[str],
) -> list[TableSpec]:
    """The tables a configuration produces; `scorers`: every group's, or group -> its own
    (`Plan.scorers_of_group`: a metric limited to some test sets has no table elsewhere)."""
    specs = []
    by_group = scorers if isinstance(scorers, Mapping) else dict.fromkeys(groups, scorers)
    for group in groups:
        scorers = by_group[group]
        prefix = "" if group == "main" else f"{group}_"
        where = group_description(group)
        specs.append(
            TableSpec(
                f"{prefix}weighted_f1",
                f"Correctness: weighted F1 (x100, {primary_labeler} labels, 95% bootstrap "
                f"interval), {where}",
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
        for scorer, (name, metric, title) in MODEL_METRIC_TABLES.items():
            if scorer in scorers:
                specs.append(TableSpec(f"{prefix}{name}", f"{title}, {where}", metric, None, group))
    return specs


def paired_table_names(groups: Sequence[str]) -> list[str]:
    """Names of the paired-test tables (one per table group)."""
    return [f"{'' if group == 'main' else group + '_'}weighted_f1_paired" for group in groups]


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


# ---- published numbers -------------------------------------------------------------------------


def load_published(path: str | Path) -> pd.DataFrame:
    """Published weighted F1: rows = the paper's models (file order = paper order), columns =
    task names (file order = paper order)."""
    try:
        published = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ImhiBenchError(f"{path}: cannot read published results: {err}") from err
    if "model" not in published.columns:
        raise ImhiBenchError(f"{path}: published results need a 'model' column")
    published["model"] = published["model"].astype(str)
    if dupes := sorted(set(published["model"][published["model"].duplicated()])):
        raise ImhiBenchError(f"{path}: model(s) listed twice: {dupes}")
    values = published.set_index("model")
    for column in values.columns:
        try:
            values[column] = pd.to_numeric(values[column]).astype(float)
        except (ValueError, TypeError) as err:
            raise ImhiBenchError(f"{path}: column {column!r} is not numeric: {err}") from err
    return values


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


# ---- the tables ---------------------------------------------------------------------------------


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


# ---- provenance ----------------------------------------------------------------------------------


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


def bart_score_weights_sha256(record: dict) -> str | None:
    """sha256 of the weights file a summary's BART-scores were computed with (None: none)."""
    return (record.get("bart_score_weights") or {}).get("sha256")


def bart_score_variant(records: dict[str, dict], parabank2_sha256: str | None = None) -> str:
    """The one BARTScore variant of every summary, named from what its score job loaded: the
    checkpoint (score provenance ``scorer_checkpoints``) and the weights file's sha256
    (``bart_score_weights``), "ParaBank2 weights" only when that digest is `parabank2_sha256`
    (the config's ``scorers.bart_score.parabank2_sha256``). Raises when summaries were scored
    with different variants or do not say what they loaded."""
    from imhibench.metrics.bartscore import variant_name

    by_variant: dict[str | None, list[str]] = {}
    for path, record in records.items():
        checkpoint = (record.get("scorer_checkpoints") or {}).get("bart_score") or {}
        name = checkpoint.get("hub_id") or checkpoint.get("local_path")
        variant = None
        if name and "bart_score_weights" in record:
            sha256 = bart_score_weights_sha256(record)
            variant = variant_name(name, sha256, parabank2_sha256)
        by_variant.setdefault(variant, []).append(path)
    if None in by_variant:
        raise ImhiBenchError(
            f"{by_variant[None][0]}: its provenance names no BARTScore checkpoint and weights "
            "file; rerun its score job with this version of imhi-bench"
        )
    if len(by_variant) != 1:
        mixed = "; ".join(f"{v}: {paths[0]}" for v, paths in sorted(by_variant.items()))
        raise ImhiBenchError(
            f"BART-scores of different variants would share a table ({mixed}); rescore them "
            "with one scorers.bart_score setting"
        )
    return next(iter(by_variant))


def bart_score_note(variant: str, sha256: str | None, parabank2_sha256: str | None) -> str:
    """The BART-score table's note on the variant it reports (`sha256`: of the weights file
    loaded; `parabank2_sha256`: the digest the config records as ParaBank2's)."""
    if sha256 is None:
        return (
            f"BART-scores from {variant}: upstream loads the ParaBank2 weights file "
            "(bart_score.pth), so these are not comparable with the paper's BART-scores."
        )
    if sha256 == parabank2_sha256:
        return (
            f"BART-scores from {variant}: the weights file loaded has sha256 {sha256}, the "
            "ParaBank2 digest recorded in scorers.bart_score.parabank2_sha256, as upstream "
            "loads (the file's source is in provenance.json)."
        )
    return (
        f"BART-scores from {variant}: the weights file loaded has sha256 {sha256}, not the "
        "ParaBank2 digest recorded in scorers.bart_score.parabank2_sha256 "
        f"({parabank2_sha256 or 'null: none recorded'}); these scores are not known to use "
        "upstream's ParaBank2 weights and are not comparable with the paper's BART-scores."
    )


def model_metric_notes(metric: str, records: dict[str, dict]) -> tuple[str, list[str]]:
    """(caption suffix, notes) of a model metric's table: which model or judge scored (and, for
    the judge, its rubric and the rows whose answer never parsed), from the score provenance."""
    from imhibench.metrics.judge import judge_identity

    scorer = next(k for k, (_, m, _) in MODEL_METRIC_TABLES.items() if m == metric)
    runs = [
        (path, r["model_metrics"][scorer])
        for path, r in records.items()
        if scorer in (r.get("model_metrics") or {})
    ]
    names = set()
    for _, run in runs:
        made = run.get("metric_provenance") or {}
        if scorer == "llm_judge":
            names.add(made.get("judge") or judge_identity(made))
        else:
            model = made.get("endpoint", {}).get("model") or (run.get("checkpoint") or {}).get(
                "hub_id"
            )
            model = model or Path((run.get("checkpoint") or {}).get("local_path", "?")).name
            names.add(f"{model} ({made.get('backend')}, {made.get('arithmetic')} arithmetic)")
    if len(names) > 1:
        raise ImhiBenchError(
            f"{scorer}: scores of different models would share a table ({sorted(names)}); "
            f"rescore them with one scorers.{scorer} setting"
        )
    name = next(iter(names), "?")
    notes = [f"Scored by {name}; settings and every run's provenance are in provenance.json."]
    if scorer == "llm_judge":
        made = runs[0][1].get("metric_provenance") or {} if runs else {}
        unparsed = sum((r.get("metric_provenance") or {}).get("unparsed_rows", 0) for _, r in runs)
        notes.append(
            f"Judge rubric (sha256 {str(made.get('rubric_sha256'))[:12]}): "
            + " ".join(str(made.get("rubric", "")).split())
        )
        notes.append(
            f"Rows whose judge answer never parsed (rated NaN, not 0, and left out of the means): "
            f"{unparsed}."
        )
    return f" [{name}]", notes


# ---- the stage -----------------------------------------------------------------------------------


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

    def answered(group_datasets: Sequence[str]) -> list[TableRow]:
        """Rows of a group's tables: models with a summary there, and published-only rows."""
        found = set(summaries.loc[summaries["dataset"].isin(group_datasets), "model"])
        return [r for r in rows if r.model is None or r.model in found]

    for spec in specs:
        datasets = paper_dataset_order(datasets_by_group[spec.group], task_of, paper_tasks)
        group_rows = answered(datasets)
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
