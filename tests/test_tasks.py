from collections import Counter

import pandas as pd
import pytest
from support import require_mirror

from imhibench.common.errors import ImhiBenchError
from imhibench.common.tasks import all_tasks, get_task

SPLIT_DIRS = {
    "instruction": "test_data/test_instruction",
    "completion": "test_data/test_complete",
    "expert": "human_evaluation/test_instruction_expert",
}


@pytest.mark.parametrize("split", sorted(SPLIT_DIRS))
def test_every_released_gold_answer_parses(split):
    mirror = require_mirror()
    files = sorted((mirror / SPLIT_DIRS[split]).glob("*.csv"))
    assert len(files) >= 8
    for path in files:
        task = get_task(path.stem)
        answers = pd.read_csv(path)["gpt-3.5-turbo"]
        labels = [task.parse_gold(a, split)[0] for a in answers]
        assert set(labels) <= set(task.labels)


def test_gold_label_counts_match_between_splits():
    mirror = require_mirror()

    def counts(split: str, name: str) -> Counter:
        task = get_task(name)
        answers = pd.read_csv(mirror / SPLIT_DIRS[split] / f"{name}.csv")["gpt-3.5-turbo"]
        return Counter(task.parse_gold(a, split)[0] for a in answers)

    sad = counts("instruction", "SAD")
    assert sad["emotional turmoil"] == 66 and sad["other causes"] == 76
    assert counts("instruction", "CAMS")["none"] == 107
    for name in ("DR", "SAD", "CAMS", "t-sid", "Irf", "MultiWD", "dreaddit", "loneliness"):
        assert counts("instruction", name) == counts("completion", name)


def test_parse_gold_splits_explanation():
    label, explanation = get_task("DR").parse_gold(
        "Yes, the poster suffers from depression. Reasoning: The post  says so.", "instruction"
    )
    assert (label, explanation) == ("yes", "The post  says so.")


def test_unknown_template_is_quoted():
    with pytest.raises(ImhiBenchError, match="Maybe, the poster"):
        get_task("DR").parse_gold("Maybe, the poster is sad. Reasoning: x", "instruction")


def test_unknown_task():
    with pytest.raises(ImhiBenchError, match="unknown IMHI task 'XYZ'"):
        get_task("XYZ")


@pytest.mark.parametrize(
    ("task", "response", "expected"),
    [
        ("DR", "Yes, the poster suffers from depression. Reasoning: no doubt", ("yes", False)),
        ("DR", "No. Reasoning: yes yes", ("no", False)),  # text after Reasoning: is ignored
        ("DR", "Hard to say.", ("no", True)),
        ("SAD", "The stress is emotion turmoil at work.", ("work", False)),  # order: work first
        ("SAD", "Emotional turmoil.", ("emotional turmoil", False)),
        ("SAD", "unclear", ("other causes", True)),
        ("t-sid", "This post shows no mental disorders but depression.", ("depression", False)),
        ("t-sid", "This post shows no mental disorders.", ("no mental disorders", False)),
        ("t-sid", "PTSD", ("ptsd", False)),
        ("CAMS", "Causes related to Jobs and career", ("jobs and career", False)),
        ("CAMS", "none", ("none", False)),
        ("CAMS", "", ("none", True)),
        ("swmh", "Bipolar disorder symptoms", ("bipolar disorder", False)),
    ],
)
def test_rule_labels_follow_upstream_keyword_order(task, response, expected):
    assert get_task(task).rule_label(response) == expected


def test_cannot_is_in_domain_for_yes_no_tasks():
    # upstream matches substrings, so "cannot" contains "no" and is not out-of-domain
    assert get_task("DR").rule_label("I cannot tell.") == ("no", False)


def test_registry_is_consistent():
    for task in all_tasks().values():
        assert set(task.classifier_labels) == set(task.labels)
        assert task.rule_default in task.labels
    assert get_task("t-sid").classifier_labels[3] == "no mental disorders"  # upstream "control"
