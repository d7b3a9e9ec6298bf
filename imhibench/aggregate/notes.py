"""What a table says under itself and about its cells: not-run cells, seeds, rows per cell,
the BART-score weights and model-metric notes, each cell's provenance."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from imhibench.aggregate.specs import MODEL_METRIC_TABLES
from imhibench.common.errors import ImhiBenchError
from imhibench.common.tables import (
    MISSING,
    Table,
)

# Under every table with difference rows.
DIFFERENCE_NOTE = (
    "Difference: ours minus published, of the values as shown (each rounded to 2 decimals); "
    "the Parquet file's <dataset>_difference columns hold the unrounded difference."
)


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
    from imhibench.score.metrics.bart_variant import variant_name

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
    from imhibench.score.metrics.judge import judge_identity

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
