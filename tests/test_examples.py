"""The released MentaLLaMA example outputs, scored end to end through `imhibench evaluate`.

The expected labels come from an independent re-implementation of upstream's rules (the
keyword table of docs/upstream-behaviour.md) and of the gold templates, read with `csv`.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from support import require_mirror

from imhibench.cli import main

DATASETS = ["DR", "Irf", "MultiWD", "SAD", "dreaddit"]

# Upstream IMHI.py keyword rules: first keyword found (in this order) in the lower-cased
# text before "Reasoning:" wins; none found -> default label, counted as out-of-domain.
YES_NO_RULES = ([("yes", "yes"), ("no", "no")], "no")
SAD_NAMES = [
    "school",
    "financial problem",
    "family issues",
    "social relationships",
    "work",
    "health issues",
    "emotional turmoil",
    "everyday decision making",
    "other causes",
]
SAD_KEYWORDS = [
    "school",
    "financial",
    "family",
    "social",
    "work",
    "health",
    "emotional",
    "decision",
    "other",
]
SAD_RULES = (list(zip(SAD_KEYWORDS, SAD_NAMES, strict=True)), "other causes")
RULES = {name: YES_NO_RULES for name in ("DR", "Irf", "MultiWD", "dreaddit")} | {"SAD": SAD_RULES}
# Upstream label_inference.py names -> label names.
SAD_CLASSIFIER = [
    "school",
    "financial",
    "family",
    "social",
    "work",
    "health",
    "emotional",
    "everyday",
    "other",
]
CLASSIFIER_NAMES = {
    "DR": {"no": "no", "yes": "yes"},
    "SAD": dict(zip(SAD_CLASSIFIER, SAD_NAMES, strict=True)),
}


def upstream_rule(dataset: str, text: str) -> tuple[str, bool]:
    keywords, default = RULES[dataset]
    head = text.split("Reasoning:")[0].lower()
    return next(((label, False) for key, label in keywords if key in head), (default, True))


def gold_label(dataset: str, golden: str) -> str:
    sentence = golden.split("Reasoning:")[0].strip()
    if dataset != "SAD":
        return {"Yes": "yes", "No": "no"}[sentence.split(",")[0]]
    if sentence == "This post shows other stress causes.":
        return "other causes"
    cause = re.fullmatch(r"This post shows the stress cause related to (.+)\.", sentence)[1]
    return "emotional turmoil" if cause == "emotion turmoil" else cause


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def evaluate_json(capsys, *args: str) -> dict:
    code = main(["evaluate", *args, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("dataset", DATASETS)
def test_response_examples_with_rule_labeler(dataset, capsys):
    path = require_mirror() / "examples" / "response_generation_examples" / f"{dataset}.csv"
    result = evaluate_json(capsys, dataset, str(path), "--labeler", "rule")
    assert result["n"] == result["n_correctness"] == 35
    assert result["unparsed_gold"] == 0
    for key in ("accuracy", "weighted_f1", "micro_f1", "macro_f1", *result["weighted_f1_ci95"]):
        value = result[key] if isinstance(key, str) else key
        assert 0 <= value <= 100
    low, high = result["weighted_f1_ci95"]
    assert low <= result["weighted_f1"] <= high
    for key in ("bleu", "rouge1", "rouge2", "rougeL"):
        assert 0 < result[key] < 1
    assert sum(map(sum, result["confusion_matrix"]["matrix"])) == 35
    assert sum(m["support"] for m in result["per_class"].values()) == 35

    rows = read_rows(path)
    gold = [gold_label(dataset, row["goldens"]) for row in rows]
    rules = [upstream_rule(dataset, row["generated_text"]) for row in rows]
    hits = sum(g == label for g, (label, _) in zip(gold, rules, strict=True))
    assert result["accuracy"] == pytest.approx(100 * hits / 35)
    assert result["ood"] == sum(ood for _, ood in rules)
    per_class_support = {label: gold.count(label) for label in set(gold)}
    assert {k: v["support"] for k, v in result["per_class"].items() if v["support"]} == (
        per_class_support
    )


@pytest.mark.parametrize("dataset", ["DR", "SAD"])
def test_label_examples_score_the_files_classifier_labels(dataset, capsys):
    path = require_mirror() / "examples" / "label_data_examples" / f"{dataset}.csv"
    result = evaluate_json(capsys, dataset, str(path), "--labels-column", "labels")
    rows = read_rows(path)
    mapped = [CLASSIFIER_NAMES[dataset][row["labels"]] for row in rows]
    gold = [gold_label(dataset, row["goldens"]) for row in rows]
    hits = sum(m == g for m, g in zip(mapped, gold, strict=True))
    assert result["labeler"] == "column:labels"
    assert result["n"] == 35 and result["unparsed_gold"] == 0
    assert result["accuracy"] == pytest.approx(100 * hits / 35)
    # the labels differ from the rule labeler's: proof the column, not the rules, was scored
    assert result["rule_agreement"] < 100
