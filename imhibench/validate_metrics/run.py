"""The metric-validation stage's entry: score, correlate, write tables and the heat map."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from imhibench.common.errors import ImhiBenchError
from imhibench.common.tables import Table
from imhibench.score.metrics.correctness import BOOTSTRAP_RESAMPLES
from imhibench.validate_metrics.ratings import ASPECTS, rated_explanations, read_rating_files
from imhibench.validate_metrics.scoring import (
    bart_variant_names,
    merge_model_metrics,
    metric_runs,
    score_explanations,
)
from imhibench.validate_metrics.statistics import STATISTICS, annotator_agreement, correlations
from imhibench.validate_metrics.tables import ALPHA_LABEL, DATA_TABLES, validation_table


@dataclass
class Validation:
    """Everything the stage computed."""

    ratings: pd.DataFrame
    scored: pd.DataFrame
    metrics: list[str]
    correlations: pd.DataFrame
    agreement: pd.DataFrame
    tables: list[Table]
    model_metrics: dict[str, dict]


def validate_metrics(
    rating_paths: Mapping[str, str | Path],
    settings: Mapping[str, dict],
    device: str = "cpu",
    seed: int = 0,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    notes: Sequence[str] = (),
    parabank2_sha256: str | None = None,
    model_metric_paths: Mapping[str, str | Path] | None = None,
) -> Validation:
    """Read, score, correlate and tabulate (nothing is written). `device`: auto, cuda or cpu.
    `model_metric_paths`: metric -> the per-row file of that model metric's job over the rated
    explanations (`write_rated_explanations`, then `imhibench.score.stage.run_model_metric`); every
    column of it is correlated like a metric scored here."""
    from imhibench.common.devices import resolve_device

    device = resolve_device(device)
    ratings = read_rating_files(rating_paths)
    explained = rated_explanations(ratings)
    runs = metric_runs(settings, bart_variant_names(settings, parabank2_sha256))
    if not runs and not model_metric_paths:
        raise ImhiBenchError("metric validation: no explanation metric is configured (scorers)")
    scored, metrics = score_explanations(explained, runs, device)
    scored, added, records = merge_model_metrics(scored, model_metric_paths or {})
    metrics += added
    found = correlations(scored, metrics, seed=seed, n_resamples=n_resamples)
    agreement = annotator_agreement(ratings)
    systems = dict(zip(explained["file"], explained["system"], strict=False))
    tables = [
        validation_table(s, found, agreement, metrics, systems, n_resamples, seed, notes)
        for s in STATISTICS
    ]
    return Validation(ratings, scored, metrics, found, agreement, tables, records)


def write_validation(
    result: Validation, tables_dir: str | Path, plot_base: str | Path, provenance: dict
) -> list[Path]:
    """The tables (.parquet/.md/.html/.tex), the per-row scores and the tidy ratings
    (Parquet), and the Spearman heat map (PNG + SVG), all with `provenance`."""
    from imhibench.aggregate.plots import correlation_heatmap
    from imhibench.common.io import write_table
    from imhibench.common.tables import write_table_files

    tables_dir = Path(tables_dir)
    written = []
    for table in result.tables:
        written += write_table_files(table, tables_dir, provenance)
    for name, frame in zip(DATA_TABLES, (result.scored, result.ratings), strict=True):
        path = tables_dir / f"{name}.parquet"
        write_table(frame, path, provenance)
        written.append(path)
    spearman = result.correlations[result.correlations["statistic"] == "spearman"]
    written += correlation_heatmap(
        spearman, result.agreement, result.metrics, ASPECTS, ALPHA_LABEL,
        "Spearman ρ with the mean human rating (reference = the post)", plot_base,
    )  # fmt: skip
    return written


def run_validate_metrics(
    rating_paths: Mapping[str, str | Path],
    settings: Mapping[str, dict],
    tables_dir: str | Path,
    plot_base: str | Path,
    device: str = "cpu",
    seed: int = 0,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    sources: Mapping[str, str] | None = None,
    parabank2_sha256: str | None = None,
    model_metric_paths: Mapping[str, str | Path] | None = None,
    **provenance_fields: object,
) -> Validation:
    """The stage: validate, then write everything with provenance (the rating files' sha256
    and sources, the scorers' settings and checkpoints as the score stage records them, and
    each model metric's job as the score stage records it: settings, judge and rubric)."""
    from imhibench.common.provenance import build_provenance, sha256_file
    from imhibench.score.stage import scorer_provenance

    result = validate_metrics(
        rating_paths, settings, device, seed, n_resamples, parabank2_sha256=parabank2_sha256,
        model_metric_paths=model_metric_paths,
    )  # fmt: skip
    provenance = build_provenance(
        "validate_metrics",
        ratings={
            name: {
                "path": str(path),
                "sha256": sha256_file(path),
                "source": (sources or {}).get(name),
            }
            for name, path in rating_paths.items()
        },
        reference="post",
        metrics=result.metrics,
        seed=seed,
        bootstrap_resamples=n_resamples,
        device=device,
        scorers=dict(settings),
        parabank2_sha256=parabank2_sha256,
        **scorer_provenance(settings),
        model_metrics=result.model_metrics,
        **provenance_fields,
    )
    write_validation(result, tables_dir, plot_base, provenance)
    return result
