import pytest

from imhibench.common.errors import ImhiBenchError
from imhibench.score.metrics.correctness import CORRECTNESS_METRICS, agreement, correctness_metrics


def test_hand_computed_binary_case():
    gold = ["yes", "yes", "yes", "no"]
    predicted = ["yes", "no", "yes", "yes"]
    # yes: P=2/3 R=2/3 F=2/3 (support 3); no: P=0 R=0 F=0 (support 1)
    metrics = correctness_metrics(gold, predicted)
    assert metrics["accuracy"] == pytest.approx(50.0)
    assert metrics["weighted_f1"] == pytest.approx(100 * (3 * 2 / 3 + 0) / 4)
    assert metrics["macro_f1"] == pytest.approx(100 * (2 / 3) / 2)
    assert metrics["micro_f1"] == pytest.approx(50.0)


def test_hand_computed_multiclass_case():
    gold = ["a", "a", "b", "c", "c", "c"]
    predicted = ["a", "b", "b", "c", "c", "a"]
    # a: P=1/2 R=1/2 F=1/2 (2); b: P=1/2 R=1 F=2/3 (1); c: P=1 R=2/3 F=4/5 (3)
    metrics = correctness_metrics(gold, predicted)
    assert metrics["weighted_f1"] == pytest.approx(100 * (2 * 0.5 + 2 / 3 + 3 * 0.8) / 6)
    assert metrics["macro_f1"] == pytest.approx(100 * (0.5 + 2 / 3 + 0.8) / 3)
    assert metrics["accuracy"] == pytest.approx(100 * 4 / 6)


def test_predicted_labels_absent_from_gold_count_in_macro_as_upstream():
    # upstream passes no `labels=`: a predicted-only class enters the macro average with F1 0
    metrics = correctness_metrics(["a", "a"], ["a", "b"])
    assert metrics["macro_f1"] == pytest.approx(100 * (2 / 3 + 0) / 2)
    assert metrics["weighted_f1"] == pytest.approx(100 * 2 / 3)


def test_registry_and_errors():
    assert set(CORRECTNESS_METRICS) == {"accuracy", "weighted_f1", "micro_f1", "macro_f1"}
    with pytest.raises(ImhiBenchError, match="2 gold labels but 1 predictions"):
        correctness_metrics(["a", "b"], ["a"])
    with pytest.raises(ImhiBenchError, match="no labelled rows"):
        correctness_metrics([], [])
    assert agreement(["a", "b", "c", "d"], ["a", "b", "x", "y"]) == pytest.approx(50.0)
