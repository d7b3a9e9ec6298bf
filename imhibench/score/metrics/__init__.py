"""Scoring of model outputs: explanation quality (here) and label correctness (``correctness``).

Heavy libraries (torch, transformers, bert-score) are imported only when a metric runs.
"""

from imhibench.score.metrics.explanation import (
    MetricOutput,
    available_explanation_metrics,
    compute_explanation_metrics,
    register_explanation_metric,
)

__all__ = [
    "MetricOutput",
    "available_explanation_metrics",
    "compute_explanation_metrics",
    "register_explanation_metric",
]
