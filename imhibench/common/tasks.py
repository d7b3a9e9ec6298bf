"""The IMHI tasks (DR, SAD, ...) as data: labels, gold templates, rule keywords, classifier maps."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml

from imhibench.common.errors import ImhiBenchError

REASONING_MARKER = "Reasoning:"
# The expert-written set uses the instruction split's templates.
TEMPLATE_SPLIT = {"instruction": "instruction", "completion": "completion", "expert": "instruction"}


@dataclass(frozen=True)
class Task:
    """One IMHI task; label names are listed in upstream's gold-id order."""

    name: str
    question: str
    labels: tuple[str, ...]
    gold_templates: dict[str, dict[str, str]]
    rule_keywords: tuple[tuple[str, str], ...]
    rule_default: str
    classifier_labels: tuple[str, ...]
    classifier_names: tuple[str, ...]  # upstream label_inference.py's names, index order
    # keyword -> replacement for the opt-in `rule_corrected` labeler (upstream quirks fixed)
    rule_corrections: tuple[tuple[str, str], ...] = ()

    def parse_gold(self, answer: str, split: str) -> tuple[str, str]:
        """Split a gold answer "<answer>. Reasoning: <explanation>" into (label, explanation)."""
        head, _, explanation = answer.partition(REASONING_MARKER)
        sentence = " ".join(head.split())
        templates = self.gold_templates[TEMPLATE_SPLIT[split]]
        if sentence not in templates:
            raise ImhiBenchError(
                f"{self.name} ({split}): unknown gold answer template {sentence!r}; "
                f"known templates: {sorted(templates)}"
            )
        return templates[sentence], explanation.strip()

    def rule_label(self, response: str, corrected: bool = False) -> tuple[str, bool]:
        """Upstream IMHI.py's keyword labeler: (label, out_of_domain); ``corrected`` applies
        the task's ``rule_corrections`` to the keywords first (same order, same default)."""
        head = response.split(REASONING_MARKER, 1)[0].lower()
        keywords = self.rule_keywords
        if corrected:
            fixes = dict(self.rule_corrections)
            keywords = tuple((fixes.get(keyword, keyword), label) for keyword, label in keywords)
        for keyword, label in keywords:
            if keyword in head:
                return label, False
        return self.rule_default, True


def _check(task: Task) -> Task:
    known = set(task.labels)
    used = {task.rule_default, *(label for _, label in task.rule_keywords), *task.classifier_labels}
    for templates in task.gold_templates.values():
        used.update(templates.values())
    if unknown := used - known:
        raise ImhiBenchError(
            f"tasks.yaml: task {task.name} uses undeclared labels {sorted(unknown)}"
        )
    if set(task.classifier_labels) != known:
        raise ImhiBenchError(
            f"tasks.yaml: task {task.name} classifier_labels must cover all labels"
        )
    return task


@cache
def all_tasks() -> dict[str, Task]:
    """Every task of the registry, by upstream name."""
    text = (
        resources.files("imhibench.common").joinpath("data/tasks.yaml").read_text(encoding="utf-8")
    )
    raw = yaml.safe_load(text)["tasks"]
    return {
        name: _check(
            Task(
                name=name,
                question=spec["question"],
                labels=tuple(spec["labels"]),
                gold_templates={split: dict(t) for split, t in spec["gold_templates"].items()},
                rule_keywords=tuple((k, v) for k, v in spec["rule_keywords"]),
                rule_default=spec["rule_default"],
                classifier_labels=tuple(spec["classifier_labels"]),
                classifier_names=tuple(spec["classifier_names"]),
                rule_corrections=tuple(spec.get("rule_corrections", {}).items()),
            )
        )
        for name, spec in raw.items()
    }


def get_task(name: str) -> Task:
    """The task called `name`, or an error listing the known ones."""
    tasks = all_tasks()
    if name not in tasks:
        raise ImhiBenchError(f"unknown IMHI task {name!r}; known tasks: {sorted(tasks)}")
    return tasks[name]
