"""Scoring the rated explanations with every explanation metric of the config."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from imhibench.common.errors import ImhiBenchError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetricRun:
    """One way of running a registered metric: its registry name, options and a suffix that
    tells variants of one metric apart in the column names (e.g. the BARTScore variants)."""

    metric: str
    options: dict[str, Any]
    variant: str | None = None


def metric_runs(
    settings: Mapping[str, dict], bart_variant_names: Mapping[bool, str]
) -> list[MetricRun]:
    """The metrics to correlate: every configured metric as configured, and BARTScore also
    without the ParaBank2 weights when the config loads them (the variants a user compares).
    `bart_variant_names` maps "weights loaded" to the variant's name."""
    runs = []
    for name, options in settings.items():
        if name != "bart_score":
            runs.append(MetricRun(name, dict(options or {})))
            continue
        if options.get("weights_file"):
            runs.append(MetricRun(name, dict(options), bart_variant_names[True]))
        runs.append(MetricRun(name, {**options, "weights_file": None}, bart_variant_names[False]))
    return runs


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """No per-call progress lines while a metric scores one row at a time."""
    progress = logging.getLogger("imhibench.common.progress")
    level = progress.level
    progress.setLevel(logging.WARNING)
    try:
        yield
    finally:
        progress.setLevel(level)


def score_rows(
    explanations: Sequence[str], posts: Sequence[str], run: MetricRun, device: str
) -> dict[str, list[float]]:
    """Per-row scores of one metric run through the score stage's code, the post as the
    reference. A metric without per-row columns (BLEU is a corpus metric) is scored one row at
    a time: its corpus value on a one-row corpus (for BLEU: unsmoothed sentence BLEU)."""
    from imhibench.score.metrics import compute_explanation_metrics

    predictions, references = list(explanations), list(posts)
    columns, summary = compute_explanation_metrics(
        predictions, references, {run.metric: run.options}, device=device
    )
    if not columns:
        columns = {key: [] for key in summary}
        with _quiet_progress():
            for prediction, reference in zip(predictions, references, strict=True):
                _, one = compute_explanation_metrics(
                    [prediction], [reference], {run.metric: run.options}, device=device
                )
                for key in columns:
                    columns[key].append(float(one[key]))
    if run.variant is None:
        return columns
    return {f"{key} [{run.variant}]": values for key, values in columns.items()}


def score_explanations(
    explained: pd.DataFrame, runs: Sequence[MetricRun], device: str
) -> tuple[pd.DataFrame, list[str]]:
    """`explained` with one column per metric score; and the metric column names."""
    scored = explained.copy()
    metrics: list[str] = []
    for run in runs:
        log.info("scoring %d explanations with %s", len(scored), run.variant or run.metric)
        for column, values in score_rows(
            scored["explanation"], scored["post"], run, device
        ).items():
            if column in scored.columns:
                raise ImhiBenchError(f"metric validation: two metric runs write column {column!r}")
            scored[column] = values
            metrics.append(column)
    return scored, metrics


def merge_model_metrics(
    scored: pd.DataFrame, paths: Mapping[str, str | Path]
) -> tuple[pd.DataFrame, list[str], dict[str, dict]]:
    """`scored` with the per-row columns of each model metric's job over the rated
    explanations (metric -> file written by `run_model_metric`), the added column names and
    each job's provenance record (`imhibench.score.stage.model_metric_record`)."""
    from imhibench.score.stage import model_metric_record, read_model_metric

    metrics: list[str] = []
    records = {}
    for metric, path in paths.items():
        columns, _, provenance = read_model_metric(str(path), scored["row_id"].tolist())
        added = [c for c in columns.columns if c != "row_id"]
        clash = [c for c in added if c in scored.columns]
        if clash:
            raise ImhiBenchError(f"metric validation: {path} writes existing column(s) {clash}")
        scored = scored.merge(columns, on="row_id", how="left", validate="one_to_one")
        metrics += added
        records[metric] = model_metric_record(str(path), provenance)
    return scored, metrics, records


def bart_variant_names(
    settings: Mapping[str, dict], parabank2_sha256: str | None = None
) -> dict[bool, str]:
    """The names of the BARTScore variants (with / without the configured weights file), made
    from what is loaded as the aggregate names the BART-score table's variant
    (`imhibench.aggregate.notes.bart_score_variant`: checkpoint + the weights file's sha256, called
    ParaBank2 only when it is `parabank2_sha256`)."""
    from imhibench.aggregate.notes import bart_score_variant
    from imhibench.score.stage import scorer_provenance

    options = settings.get("bart_score")
    if options is None:
        return {}
    return {
        loaded: bart_score_variant(
            {"validation": scorer_provenance({"bart_score": {**options, "weights_file": weights}})},
            parabank2_sha256,
        )
        for loaded, weights in ((True, options.get("weights_file")), (False, None))
    }
