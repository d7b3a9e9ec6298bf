"""Which tables the aggregate stage writes (``TableSpec``), their titles and units."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

STATUS_REPRODUCED = "reproduced"
STATUS_PUBLISHED_ONLY = "published only"
UNITS = {
    "weighted_f1": "weighted F1 x100 (scikit-learn, average='weighted')",
    "bart_score": "BARTScore: mean token log-likelihood of the gold answer given the response",
    "gpt_score": "GPTScore: mean token log-probability of the response given the gold answer",
    "llm_judge_overall": "LLM judge: overall rating 0-3, mean over the rows whose answer parsed",
}


# Tables of the model metrics (imhibench.config.scorers.MODEL_METRICS): metric name -> (table name,
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
