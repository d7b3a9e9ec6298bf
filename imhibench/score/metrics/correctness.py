"""Correctness metrics of predicted vs gold labels, as small registered scikit-learn functions.

scikit-learn (seconds to import) is imported by the functions that call it, not with this
module, whose importers (the aggregate stage's paired test, the plots) use only helpers
that do not need it.

Values are x100 as the paper reports them (rounding happens only in the Markdown tables).
Beyond the paper: per-class scores, the confusion matrix and a seeded bootstrap interval of
the weighted F1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from imhibench.common.errors import ImhiBenchError

CorrectnessMetric = Callable[[Sequence[str], Sequence[str]], float]
CORRECTNESS_METRICS: dict[str, CorrectnessMetric] = {}


def _check_rows(gold: Sequence[str], predicted: Sequence[str]) -> None:
    if len(gold) != len(predicted):
        raise ImhiBenchError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    if not gold:
        raise ImhiBenchError("no labelled rows to score")


def register_correctness_metric(name: str) -> Callable[[CorrectnessMetric], CorrectnessMetric]:
    def register(fn: CorrectnessMetric) -> CorrectnessMetric:
        CORRECTNESS_METRICS[name] = fn
        return fn

    return register


@register_correctness_metric("accuracy")
def accuracy(gold: Sequence[str], predicted: Sequence[str]) -> float:
    from sklearn.metrics import accuracy_score

    return 100.0 * accuracy_score(gold, predicted)


def _f1(average: str) -> CorrectnessMetric:
    # As upstream: the label set is the union of gold and predicted labels (no `labels=`).
    def f1(gold: Sequence[str], predicted: Sequence[str]) -> float:
        from sklearn.metrics import f1_score

        return 100.0 * f1_score(gold, predicted, average=average, zero_division=0)

    f1.__name__ = f"{average}_f1"
    return f1


for _average in ("weighted", "micro", "macro"):
    register_correctness_metric(f"{_average}_f1")(_f1(_average))


def correctness_metrics(gold: Sequence[str], predicted: Sequence[str]) -> dict[str, float]:
    """Every registered correctness metric of `predicted` against `gold`."""
    _check_rows(gold, predicted)
    return {name: fn(gold, predicted) for name, fn in CORRECTNESS_METRICS.items()}


def agreement(first: Sequence[str], second: Sequence[str]) -> float:
    """Share (x100) of rows where two labelers give the same label."""
    from sklearn.metrics import accuracy_score

    return 100.0 * accuracy_score(first, second)


# --- Details beyond the paper's numbers: per class, confusion matrix, bootstrap interval. ---

BOOTSTRAP_RESAMPLES = 1000
# The one default seed of every bootstrap: `imhibench evaluate`'s --seed and the workflow
# config's `seed` (workflow_config/config.yaml; tests/test_cli_evaluate.py keeps them equal),
# so that the same answers get the same interval from the command line and from the pipeline.
DEFAULT_SEED = 42


def label_order(labels: Sequence[str], gold: Sequence[str], predicted: Sequence[str]) -> list[str]:
    """`labels` (the task's order), then any other gold or predicted label, sorted."""
    extra = sorted({*gold, *predicted} - set(labels))
    return [*labels, *extra]


def per_class_metrics(
    gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]
) -> dict[str, dict[str, float | int]]:
    """Precision, recall, F1 (x100) and support of every label, in `label_order` order."""
    from sklearn.metrics import precision_recall_fscore_support

    _check_rows(gold, predicted)
    order = label_order(labels, gold, predicted)
    precision, recall, f1, support = precision_recall_fscore_support(
        gold, predicted, labels=order, average=None, zero_division=0
    )
    return {
        label: {
            "precision": 100.0 * float(p),
            "recall": 100.0 * float(r),
            "f1": 100.0 * float(f),
            "support": int(s),
        }
        for label, p, r, f, s in zip(order, precision, recall, f1, support, strict=True)
    }


def confusion(
    gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]
) -> dict[str, list]:
    """{"labels", "matrix"}: matrix[i][j] counts rows with gold labels[i] predicted labels[j]."""
    from sklearn.metrics import confusion_matrix

    _check_rows(gold, predicted)
    order = label_order(labels, gold, predicted)
    matrix = confusion_matrix(gold, predicted, labels=order)
    return {"labels": order, "matrix": matrix.tolist()}


def bootstrap_indices(n_rows: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n_rows) row indices drawn with replacement by `default_rng(seed)`."""
    return np.random.default_rng(seed).integers(0, n_rows, size=(n_resamples, n_rows))


def _weighted_f1_of_resamples(gold: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    """Weighted F1 (0..1) of each row of the (resamples, rows) label-code arrays.

    Equal to scikit-learn's `f1_score(average="weighted", zero_division=0)`: classes absent
    from a resample's gold labels have weight 0, so the label set does not matter.
    """
    n_resamples, n_rows = gold.shape
    cell = np.arange(n_resamples)[:, None] * k * k + gold * k + predicted
    counts = np.bincount(cell.ravel(), minlength=n_resamples * k * k).reshape(-1, k, k)
    true_positive = np.diagonal(counts, axis1=1, axis2=2)
    support, n_predicted = counts.sum(axis=2), counts.sum(axis=1)
    denominator = support + n_predicted
    f1 = np.divide(
        2 * true_positive, denominator, out=np.zeros(support.shape), where=denominator > 0
    )
    return (support * f1).sum(axis=1) / n_rows


def weighted_f1_ci(
    gold: Sequence[str],
    predicted: Sequence[str],
    seed: int = DEFAULT_SEED,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = 95.0,
) -> tuple[float, float]:
    """Percentile bootstrap interval (x100) of the weighted F1, resampling rows; seeded."""
    _check_rows(gold, predicted)
    if n_resamples < 1 or not 0 < level < 100:
        raise ImhiBenchError(
            f"bootstrap needs n_resamples >= 1 and 0 < level < 100, got {n_resamples}, {level}"
        )
    order = label_order([], gold, predicted)
    code = {label: i for i, label in enumerate(order)}
    gold_codes = np.array([code[x] for x in gold])
    predicted_codes = np.array([code[x] for x in predicted])
    rows = bootstrap_indices(len(gold), n_resamples, seed)
    values = _weighted_f1_of_resamples(gold_codes[rows], predicted_codes[rows], len(order))
    tail = (100.0 - level) / 2
    low, high = np.percentile(100.0 * values, [tail, 100.0 - tail])
    return float(low), float(high)
