"""The metric-validation tables (one per statistic) and their notes."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

from imhibench.common.tables import MISSING, DisplayRow, Table, number
from imhibench.validate_metrics.ratings import ASPECTS
from imhibench.validate_metrics.statistics import STATISTICS

TABLE_PREFIX = "metric_validation"
# Parquet files beside the tables: per-row metric scores with mean ratings; the tidy ratings.
DATA_TABLES = (f"{TABLE_PREFIX}_scores", f"{TABLE_PREFIX}_ratings")
PLOT_NAME = TABLE_PREFIX  # results/plots/<PLOT_NAME>.png/.svg: the Spearman heat map
ALPHA_LABEL = "annotators: Krippendorff α (ceiling)"
REFERENCE_NOTE = (
    "Every metric scores the rated explanation against the Reddit post as its reference text: "
    "the rating files hold no gold explanation to compare with, so these numbers say how well "
    "post-explanation overlap or likelihood tracks the ratings, not how the metrics behave "
    "against IMHI's gold answers."
)


PUBLISHED_NOTE = (
    "Published correlations are not shown: the correlation table of Yang et al. (2023) / "
    "MentaLLaMA was not found in a citable source (docs/metrics.md)."
)


def table_names() -> list[str]:
    """The stage's display tables, one per correlation statistic."""
    return [f"{TABLE_PREFIX}_{statistic}" for statistic in STATISTICS]


def _stars(p_value: float) -> str:
    if not math.isfinite(p_value):
        return ""
    return "**" if p_value < 0.01 else "*" if p_value < 0.05 else ""


def _cell(row: pd.Series) -> str:
    text = number(row["value"])
    if text == MISSING:
        return text
    interval = f" [{number(row['ci_low'])}, {number(row['ci_high'])}]"
    scored = f" (n={row['scored_rows']})" if row["scored_rows"] < row["rows"] else ""
    text += (interval if math.isfinite(row["ci_low"]) else "") + _stars(row["p_value"])
    return text + scored


def validation_table(
    statistic: str,
    found: pd.DataFrame,
    agreement: pd.DataFrame,
    metrics: Sequence[str],
    systems: Mapping[str, str],
    n_resamples: int,
    seed: int,
    notes: Sequence[str] = (),
) -> Table:
    """One statistic's table: per scope an agreement row (Krippendorff's alpha) and one row per
    metric; columns are the aspects; the best metric per scope and aspect is bold."""
    label = STATISTICS[statistic]
    chosen = found[found["statistic"] == statistic]
    frame = chosen.merge(agreement, on=["scope", "aspect"], how="left", validate="many_to_one")
    frame = frame.rename(columns={"alpha": "annotator_alpha"})
    rows = []
    for scope in dict.fromkeys(chosen["scope"]):
        in_scope = chosen[chosen["scope"] == scope]
        size = int(in_scope["rows"].iloc[0])
        heading = f"{scope} ({size} rows" + (f", {systems[scope]})" if scope in systems else ")")
        alphas = agreement[agreement["scope"] == scope].set_index("aspect")["alpha"]
        rows.append(
            DisplayRow(
                f"{heading}: {ALPHA_LABEL}", tuple(number(alphas[a]) for a in ASPECTS), "agreement"
            )
        )
        for metric in metrics:
            by_aspect = in_scope[in_scope["metric"] == metric].set_index("aspect")
            cells = tuple(_cell(by_aspect.loc[a]) for a in ASPECTS)
            ranks = [by_aspect.loc[a, "rank"] for a in ASPECTS]
            bold = tuple(i for i, rank in enumerate(ranks) if pd.notna(rank) and rank == 1)
            rows.append(DisplayRow(f"{heading}: {metric}", cells, bold=bold))
    notes = [
        f"{label} of each metric with the annotators' mean rating (3 annotators, 0-3) per "
        f"aspect; [95% percentile bootstrap interval, {n_resamples} resamples of the rows, seed "
        f"{seed}]; * p < 0.05, ** p < 0.01 (scipy.stats, two-sided, not corrected for the "
        "number of comparisons). Bold: the highest value per scope and aspect.",
        "Krippendorff's α (ordinal, krippendorff package): agreement of the annotators with "
        "each other, the ceiling a metric can be expected to reach.",
        REFERENCE_NOTE,
        *notes,
        PUBLISHED_NOTE,
    ]
    return Table(
        name=f"{TABLE_PREFIX}_{statistic}",
        title=f"Explanation metrics vs human ratings ({label}; reference = the post)",
        columns=list(ASPECTS),
        rows=rows,
        frame=frame,
        notes=notes,
        metadata={
            "statistic": statistic,
            "reference": "post",
            "resamples": n_resamples,
            "seed": seed,
        },
        corner="scope: metric",
    )
