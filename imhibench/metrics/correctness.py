"""Correctness metrics of predicted vs gold labels, as small registered scikit-learn functions.

Values are x100 as the paper reports them (rounding happens only in the Markdown tables).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sklearn.metrics import accuracy_score, f1_score

from imhibench.errors import ImhiBenchError

CorrectnessMetric = Callable[[Sequence[str], Sequence[str]], float]
CORRECTNESS_METRICS: dict[str, CorrectnessMetric] = {}


def register_correctness_metric(name: str) -> Callable[[CorrectnessMetric], CorrectnessMetric]:
    def register(fn: CorrectnessMetric) -> CorrectnessMetric:
        CORRECTNESS_METRICS[name] = fn
        return fn

    return register


@register_correctness_metric("accuracy")
def accuracy(gold: Sequence[str], predicted: Sequence[str]) -> float:
    return 100.0 * accuracy_score(gold, predicted)


def _f1(average: str) -> CorrectnessMetric:
    # As upstream: the label set is the union of gold and predicted labels (no `labels=`).
    def f1(gold: Sequence[str], predicted: Sequence[str]) -> float:
        return 100.0 * f1_score(gold, predicted, average=average, zero_division=0)

    f1.__name__ = f"{average}_f1"
    return f1


for _average in ("weighted", "micro", "macro"):
    register_correctness_metric(f"{_average}_f1")(_f1(_average))


def correctness_metrics(gold: Sequence[str], predicted: Sequence[str]) -> dict[str, float]:
    """Every registered correctness metric of `predicted` against `gold`."""
    if len(gold) != len(predicted):
        raise ImhiBenchError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    if not gold:
        raise ImhiBenchError("no labelled rows to score")
    return {name: fn(gold, predicted) for name, fn in CORRECTNESS_METRICS.items()}


def agreement(first: Sequence[str], second: Sequence[str]) -> float:
    """Share (x100) of rows where two labelers give the same label."""
    return 100.0 * accuracy_score(first, second)
