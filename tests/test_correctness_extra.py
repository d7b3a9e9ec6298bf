"""Per-class scores, confusion matrix and the bootstrap interval of the weighted F1."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from imhibench.common.errors import ImhiBenchError
from imhibench.score.metrics.correctness import (
    _weighted_f1_of_resamples,
    bootstrap_indices,
    confusion,
    correctness_metrics,
    per_class_metrics,
    weighted_f1_ci,
)
from imhibench.score.stage import score

GOLD = ["a", "a", "b", "c", "c", "c"]
PREDICTED = ["a", "b", "b", "c", "c", "a"]


def _realistic(n: int = 300, seed: int = 1) -> tuple[list[str], list[str]]:
    """Three unbalanced classes, about 75% of predictions right, the rest random."""
    rng = np.random.default_rng(seed)
    classes = np.array(["x", "y", "z"])
    gold = rng.choice(classes, size=n, p=[0.5, 0.3, 0.2])
    wrong = rng.choice(classes, size=n)
    predicted = np.where(rng.random(n) < 0.75, gold, wrong)
    return gold.tolist(), predicted.tolist()


def test_per_class_hand_computed_in_task_order():
    # a: P=1/2 R=1/2; b: P=1/2 R=1; c: P=1 R=2/3; d: never seen
    result = per_class_metrics(GOLD, PREDICTED, ["c", "b", "a", "d"])
    assert list(result) == ["c", "b", "a", "d"]
    assert result["c"] == pytest.approx(
        {"precision": 100.0, "recall": 100 * 2 / 3, "f1": 80.0, "support": 3}
    )
    assert result["b"] == pytest.approx(
        {"precision": 50.0, "recall": 100.0, "f1": 100 * 2 / 3, "support": 1}
    )
    assert result["a"] == pytest.approx(
        {"precision": 50.0, "recall": 50.0, "f1": 50.0, "support": 2}
    )
    assert result["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert isinstance(result["a"]["support"], int)


def test_confusion_rows_gold_columns_predicted_unknown_prediction_appended():
    result = confusion([*GOLD, "a"], [*PREDICTED, "zz"], ["c", "b", "a"])
    assert result["labels"] == ["c", "b", "a", "zz"]
    assert result["matrix"] == [
        [2, 0, 1, 0],  # gold c
        [0, 1, 0, 0],  # gold b
        [0, 1, 1, 1],  # gold a
        [0, 0, 0, 0],  # gold zz
    ]


def test_batched_resample_f1_equals_scikit_learn():
    gold, predicted = _realistic(n=40)
    codes = {label: i for i, label in enumerate(["x", "y", "z"])}
    rows = bootstrap_indices(len(gold), 25, seed=3)
    g = np.array([codes[x] for x in gold])[rows]
    p = np.array([codes[x] for x in predicted])[rows]
    ours = _weighted_f1_of_resamples(g, p, 3)
    for i in range(len(rows)):
        expected = f1_score(g[i], p[i], average="weighted", zero_division=0)
        assert ours[i] == pytest.approx(expected)


def test_bootstrap_is_seeded():
    gold, predicted = _realistic()
    first = weighted_f1_ci(gold, predicted, seed=0)
    assert weighted_f1_ci(gold, predicted, seed=0) == first
    assert weighted_f1_ci(gold, predicted, seed=1) != first


def test_bootstrap_interval_brackets_the_point_estimate():
    gold, predicted = _realistic()
    point = correctness_metrics(gold, predicted)["weighted_f1"]
    low, high = weighted_f1_ci(gold, predicted, seed=0)
    assert 0 <= low < point < high <= 100
    assert 3 < high - low < 25  # a sensible width for 300 rows
    narrower = weighted_f1_ci(gold, predicted, seed=0, level=50)
    assert low < narrower[0] < narrower[1] < high


def test_bootstrap_of_perfect_predictions_is_degenerate():
    assert weighted_f1_ci(["a", "b", "a"], ["a", "b", "a"], seed=5) == (100.0, 100.0)


def test_extras_reject_bad_input():
    with pytest.raises(ImhiBenchError, match="2 gold labels but 1 predictions"):
        per_class_metrics(["a", "b"], ["a"], ["a", "b"])
    with pytest.raises(ImhiBenchError, match="no labelled rows"):
        confusion([], [], ["a"])
    with pytest.raises(ImhiBenchError, match="n_resamples"):
        weighted_f1_ci(["a"], ["a"], n_resamples=0)


def _score_inputs() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    gold, predicted = _realistic(n=60)
    ids = [f"T-{i}" for i in range(len(gold))]
    responses = pd.DataFrame({"row_id": ids, "response": [f"answer {p}" for p in predicted]})
    labels = pd.DataFrame(
        {
            "row_id": ids,
            "gold_label": gold,
            "label_rule": predicted,
            "rule_ood": False,
            "empty_response": False,
        }
    )
    test_set = pd.DataFrame({"row_id": ids, "gold_answer": [f"gold {g}" for g in gold]})
    return responses, labels, test_set


def test_score_summary_has_seeded_interval_rows():
    _, table = score(*_score_inputs(), labelers=["rule"], scorers={}, seed=0)
    values = table.set_index(["metric", "labeler"])["value"]
    low, high = values[("weighted_f1_ci_low", "rule")], values[("weighted_f1_ci_high", "rule")]
    assert low < values[("weighted_f1", "rule")] < high
    _, again = score(*_score_inputs(), labelers=["rule"], scorers={}, seed=0)
    _, other = score(*_score_inputs(), labelers=["rule"], scorers={}, seed=7)
    assert again.equals(table)
    assert not other.equals(table)
