"""Score one dataset's responses produced anywhere: correctness and explanation quality.

The function behind ``imhibench evaluate``. Inputs are upstream IMHI.py output CSVs
(``goldens,generated_text``, gold answers inside the file) or ``row_id,response`` tables with
the test-set Parquet beside them. The metrics are the pipeline's own (``imhibench.score.metrics``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imhibench.common.errors import ImhiBenchError
from imhibench.common.tasks import Task, get_task
from imhibench.generate.responses import (
    EMPTY_TREATMENT,
    UPSTREAM_COLUMNS,
    empty_rows,
    import_responses,
    read_answer_table,
)
from imhibench.score.metrics.correctness import DEFAULT_SEED

if TYPE_CHECKING:
    import pandas as pd

LABELERS = ("rule", "mentalbert")
SPLITS = ("instruction", "completion")
# Answers longer than this many whitespace-separated tokens are reported (the pipeline's
# default max_new_tokens); `imhibench evaluate --max-answer-tokens` changes it.
DEFAULT_MAX_ANSWER_TOKENS = 2048
LONG_TREATMENT = (
    "scored in full: ROUGE and BLEU read the whole text (corpus BLEU adds every answer's "
    "length, so one very long answer lowers BLEU for the whole file), BERTScore and BARTScore "
    "truncate it to their model's input limit, the rule labeler reads the text before the "
    "first 'Reasoning:', MentalBERT its first 512 tokens"
)


@dataclass(frozen=True)
class ResponseRows:
    """One dataset's rows, aligned: gold label None where the gold answer fits no template;
    `test_set_rows`: the rows of the whole test set (the file may answer only some)."""

    row_ids: list[str]
    responses: list[str]
    gold_answers: list[str]
    gold_labels: list[str | None]
    given_labels: list[str] | None
    test_set_rows: int
    queries: list[str] | None = None  # the posts and questions, where the input has them


def classifier_name_map(task: Task) -> dict[str, str]:
    """Upstream classifier names and the task's own label names -> task label names."""
    mapping = {label: label for label in task.labels}
    mapping.update(zip(task.classifier_names, task.classifier_labels, strict=True))
    return mapping


def map_given_labels(
    values: Sequence[Any], task: Task, path: str, row_ids: Sequence[str]
) -> list[str]:
    """The labels of a labels column as task label names; an unknown one names its row."""
    mapping = classifier_name_map(task)
    labels, unknown = [], []
    for n, (row_id, value) in enumerate(zip(row_ids, values, strict=True)):
        key = value.strip().lower() if isinstance(value, str) else None
        if key not in mapping:
            unknown.append(f"row {n + 1} (row_id {row_id}): label {value!r}")
        labels.append(mapping.get(key))
    if unknown:
        raise ImhiBenchError(
            f"{path}: {len(unknown)} label(s) that are not {task.name} labels (known: "
            f"{sorted(mapping)}):\n  " + "\n  ".join(unknown)
        )
    return labels


def _parse_gold(task: Task, answer: str, split: str) -> str | None:
    try:
        return task.parse_gold(answer, split)[0]
    except ImhiBenchError:
        return None


def _labels_column(
    table: pd.DataFrame, path: str, column: str | None, row_ids: list[str] | None
) -> list[Any] | None:
    """The raw values of `column`, in file order, or by `row_id` when `row_ids` is given."""
    if column is None:
        return None
    if column not in table.columns:
        raise ImhiBenchError(
            f"{path}: no labels column {column!r}; columns: {sorted(map(str, table.columns))}"
        )
    if row_ids is None:
        return list(table[column])
    by_id = dict(zip(map(str, table["row_id"]), table[column], strict=True))
    return [by_id[r] for r in row_ids]


def _rows_from_upstream(
    path: str, task: Task, split: str, labels_column: str | None
) -> ResponseRows:
    """Rows of an upstream CSV; the gold answers are its `goldens`, rows named in file order."""
    table = read_answer_table(Path(path))
    if not set(UPSTREAM_COLUMNS) <= set(table.columns):
        raise ImhiBenchError(
            f"{path}: columns {sorted(map(str, table.columns))}; without --test-set the file "
            f"needs upstream's {','.join(UPSTREAM_COLUMNS)} (or give the test set for "
            "a row_id,response file)"
        )
    if table.empty:
        raise ImhiBenchError(f"{path}: the file has no rows")
    row_ids = [f"{task.name}-{n}" for n in range(len(table))]
    golds = list(table["goldens"])
    if empty := empty_rows(row_ids, golds):
        raise ImhiBenchError(
            f"{path}: empty or missing 'goldens' in {len(empty)} row(s): " + ", ".join(empty)
        )
    responses = import_responses(path, row_ids, golds)
    gold_labels = [_parse_gold(task, gold, split) for gold in golds]
    given = _labels_column(table, path, labels_column, None)
    queries = [str(q) for q in table["query"]] if "query" in table.columns else None
    return ResponseRows(row_ids, responses, golds, gold_labels, given, len(row_ids), queries)


def _rows_from_test_set(path: str, test_set: str, labels_column: str | None) -> ResponseRows:
    """Rows of any responses layout, aligned to the test-set Parquet and its gold labels. A
    row_id,response file may answer part of the test set (the pipeline's own output with
    `rows_per_dataset`): its rows are scored, in test-set order."""
    from imhibench.common.io import read_table

    table = read_answer_table(Path(path))
    if table.empty:
        raise ImhiBenchError(f"{path}: the file has no rows")
    tests = read_table(test_set, ["row_id", "gold_answer", "gold_label"])
    by_row_id = not set(UPSTREAM_COLUMNS) <= set(table.columns)
    answered = tests
    if by_row_id and "row_id" in table.columns:
        answered = tests[tests["row_id"].astype(str).isin(set(map(str, table["row_id"])))]
        if answered.empty:
            raise ImhiBenchError(
                f"responses file {path}: none of its row_ids is a row of the test set {test_set}"
            )
    row_ids = [str(r) for r in answered["row_id"]]
    golds = [str(g) for g in answered["gold_answer"]]
    queries = [str(q) for q in answered["query"]] if "query" in answered.columns else None
    responses = import_responses(path, row_ids, golds)
    gold_labels = [g if isinstance(g, str) else None for g in answered["gold_label"]]
    given = None
    if labels_column is not None:
        given = _labels_column(table, path, labels_column, row_ids if by_row_id else None)
    return ResponseRows(row_ids, responses, golds, gold_labels, given, len(tests), queries)


def read_rows(
    path: str,
    task: Task,
    split: str = "instruction",
    test_set: str | None = None,
    labels_column: str | None = None,
) -> ResponseRows:
    """The responses of `path` with their gold answers and labels (and a labels column)."""
    if split not in SPLITS:
        raise ImhiBenchError(f"unknown split {split!r}; known: {list(SPLITS)}")
    if test_set is None:
        rows = _rows_from_upstream(path, task, split, labels_column)
    else:
        rows = _rows_from_test_set(path, test_set, labels_column)
    if rows.given_labels is not None:
        mapped = map_given_labels(rows.given_labels, task, path, rows.row_ids)
        rows = replace(rows, given_labels=mapped)
    return rows


def explanation_settings(
    bertscore_model: str | None = None,
    bertscore_layers: int | None = None,
    bartscore_model: str | None = None,
    bartscore_weights: str | None = None,
) -> dict[str, dict[str, Any]]:
    """ROUGE and BLEU always; BERTScore and BARTScore when a model is given."""
    if bertscore_layers is not None and bertscore_model is None:
        raise ImhiBenchError("--bertscore-layers needs --bertscore-model")
    if bartscore_weights is not None and bartscore_model is None:
        raise ImhiBenchError("--bartscore-weights needs --bartscore-model")
    settings: dict[str, dict[str, Any]] = {"rouge": {}, "bleu": {}}
    if bertscore_model is not None:
        settings["bert_score"] = {"model": bertscore_model, "num_layers": bertscore_layers}
    if bartscore_model is not None:
        settings["bart_score"] = {"checkpoint": bartscore_model, "weights_file": bartscore_weights}
    return settings


def predict_labels(
    rows: ResponseRows, task: Task, labeler: str, classifier: str | None, device: str
) -> list[str]:
    """Labels of the responses by `labeler`, or the file's labels column when it was read."""
    from imhibench.label import MentalBertLabeler, rule_labels

    if rows.given_labels is not None:
        return rows.given_labels
    if labeler == "rule":
        return rule_labels(task, rows.responses)[0]
    if labeler == "mentalbert":
        if classifier is None:
            raise ImhiBenchError("--labeler mentalbert needs --classifier PATH")
        return MentalBertLabeler(classifier, task, device).predict(rows.responses)
    raise ImhiBenchError(f"unknown labeler {labeler!r}; known: {list(LABELERS)}")


def correctness_report(
    gold: Sequence[str], predicted: Sequence[str], task: Task, seed: int, n_resamples: int
) -> dict[str, Any]:
    """Paper metrics (x100), the bootstrap interval, per-class scores and the confusion matrix."""
    from imhibench.score.metrics.correctness import (
        confusion,
        correctness_metrics,
        per_class_metrics,
        weighted_f1_ci,
    )

    report: dict[str, Any] = dict(correctness_metrics(gold, predicted))
    report["weighted_f1_ci95"] = list(weighted_f1_ci(gold, predicted, seed, n_resamples))
    report["per_class"] = per_class_metrics(gold, predicted, task.labels)
    report["confusion_matrix"] = confusion(gold, predicted, task.labels)
    return report


def _uses_classifier(labeler: str, classifier: str | None, labels_column: str | None) -> bool:
    """Whether the MentalBERT classifier runs; conflicting options raise."""
    if labels_column is not None and labeler != "rule":
        raise ImhiBenchError(f"--labels-column {labels_column} replaces --labeler {labeler}")
    if labeler not in LABELERS:
        raise ImhiBenchError(f"unknown labeler {labeler!r}; known: {list(LABELERS)}")
    uses_classifier = labeler == "mentalbert" and labels_column is None
    if uses_classifier and classifier is None:
        raise ImhiBenchError("--labeler mentalbert needs --classifier PATH")
    return uses_classifier


def _scored_subset(
    rows: ResponseRows, predicted: list[str], path: str
) -> tuple[list[str], list[str]]:
    """Gold and predicted labels of the rows whose gold answer was parsed."""
    keep = [n for n, gold in enumerate(rows.gold_labels) if gold is not None]
    if not keep:
        raise ImhiBenchError(
            f"{path}: none of the {len(rows.row_ids)} gold answers matches a gold template "
            "(wrong --split?)"
        )
    gold = [str(rows.gold_labels[n]) for n in keep]
    return gold, [predicted[n] for n in keep]


def answer_warnings(rows: ResponseRows, max_answer_tokens: int) -> dict[str, Any]:
    """Empty answers and answers over `max_answer_tokens` (whitespace-separated tokens), each
    with its rows and a warning that says how the metrics treat them."""
    if max_answer_tokens < 1:
        raise ImhiBenchError(f"--max-answer-tokens must be >= 1, got {max_answer_tokens}")
    empty = [r for r, t in zip(rows.row_ids, rows.responses, strict=True) if not t.strip()]
    lengths = [len(t.split()) for t in rows.responses]
    long = [
        f"{r} ({n} tokens)"
        for r, n in zip(rows.row_ids, lengths, strict=True)
        if n > max_answer_tokens
    ]
    warnings = []
    if empty:
        warnings.append(
            f"{len(empty)} empty or missing answer(s) ({', '.join(empty)}): {EMPTY_TREATMENT}"
        )
    if long:
        warnings.append(
            f"{len(long)} answer(s) longer than {max_answer_tokens} tokens ({', '.join(long)}): "
            f"{LONG_TREATMENT}"
        )
    return {
        "empty_responses": len(empty),
        "empty_response_rows": empty,
        "max_answer_tokens": max_answer_tokens,
        "long_answers": len(long),
        "long_answer_rows": long,
        "warnings": warnings,
    }


def partial_warning(rows: ResponseRows, responses: str, test_set: str | None) -> str:
    """What a file that answers part of the test set means for its numbers."""
    return (
        f"{responses} answers {len(rows.row_ids)} of the {rows.test_set_rows} rows of the test "
        f"set {test_set}: every metric is of those {len(rows.row_ids)} rows only, not "
        "comparable with a run on the whole test set"
    )


def evaluate(
    dataset: str,
    responses: str,
    *,
    split: str = "instruction",
    test_set: str | None = None,
    labeler: str = "rule",
    classifier: str | None = None,
    labels_column: str | None = None,
    explanation: dict[str, dict[str, Any]] | None = None,
    device: str = "auto",
    seed: int = DEFAULT_SEED,
    n_resamples: int = 1000,
    max_answer_tokens: int = DEFAULT_MAX_ANSWER_TOKENS,
) -> dict[str, Any]:
    """Every metric of one responses file for one IMHI dataset, as a JSON-ready dict.

    Rows whose gold answer matches no template are counted (`unparsed_gold`) and left out
    of correctness; `ood` always counts answers matching no rule keyword. Empty answers and
    answers over `max_answer_tokens` are counted, listed and explained in `warnings`.
    """
    from imhibench.common.devices import resolve_device
    from imhibench.common.io import read_provenance
    from imhibench.label import rule_labels
    from imhibench.score.metrics.correctness import agreement
    from imhibench.score.metrics.explanation import MetricContext, compute_explanation_metrics

    task = get_task(dataset)
    settings = explanation if explanation is not None else explanation_settings()
    uses_classifier = _uses_classifier(labeler, classifier, labels_column)
    local_models = {"bert_score", "bart_score"} | {
        name for name in ("gpt_score", "llm_judge") if settings.get(name, {}).get("backend") == "hf"
    }
    needs_torch = uses_classifier or bool(local_models & set(settings))
    device = resolve_device(device) if needs_torch else "cpu"
    rows = read_rows(responses, task, split, test_set, labels_column)
    checks = answer_warnings(rows, max_answer_tokens)
    if len(rows.row_ids) < rows.test_set_rows:
        checks["warnings"].insert(0, partial_warning(rows, responses, test_set))
    predicted = predict_labels(rows, task, labeler, classifier, device)
    rule, ood = rule_labels(task, rows.responses)
    gold, scored = _scored_subset(rows, predicted, responses)
    unparsed = [r for r, g in zip(rows.row_ids, rows.gold_labels, strict=True) if g is None]
    result: dict[str, Any] = {
        "dataset": task.name,
        "split": split if test_set is None else read_provenance(test_set).get("split"),
        "responses": str(responses),
        "labeler": f"column:{labels_column}" if labels_column else labeler,
        "n": len(rows.row_ids),
        "test_set_rows": rows.test_set_rows,
        "n_correctness": len(gold),
        "unparsed_gold": len(unparsed),
        "unparsed_gold_rows": unparsed,
        **correctness_report(gold, scored, task, seed, n_resamples),
        "ood": sum(ood),
        "rule_agreement": agreement(rule, predicted),
        "bootstrap": {"resamples": n_resamples, "seed": seed, "level": 95},
        **checks,
    }
    provenance: dict[str, Any] = {}
    # api metrics journal answers beside the responses: <responses>.<metric>.journal.jsonl
    context = MetricContext(rows.row_ids, rows.queries, str(responses))
    _, corpus = compute_explanation_metrics(
        rows.responses, rows.gold_answers, settings, device, context, provenance
    )
    result.update(corpus)
    if provenance:
        result["metric_provenance"] = provenance
    if "bert_score_f1" in corpus:  # the CLI's documented key; the pipeline calls it bert_score_f1
        result["bert_score"] = corpus["bert_score_f1"]
    return result


def jsonable(value: Any) -> Any:
    """`value` with numpy scalars as Python numbers and non-finite floats as None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _table(rows: list[list[str]]) -> list[str]:
    """Aligned text columns: the first left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for first, *rest in rows:
        right = (c.rjust(w) for c, w in zip(rest, widths[1:], strict=True))
        cells = [first.ljust(widths[0]), *right]
        lines.append("  " + "  ".join(cells))
    return lines


def format_report(result: dict[str, Any]) -> str:
    """A short human-readable report of an `evaluate` result."""
    low, high = result["weighted_f1_ci95"]
    seed = result["bootstrap"]["seed"]
    lines = [
        f"{result['dataset']}: {result['n']} responses from {result['responses']} "
        f"({result['n']} of the test set's {result['test_set_rows']} rows; "
        f"labeler {result['labeler']})",
        f"correctness (x100, {result['n_correctness']} rows): accuracy {result['accuracy']:.2f}"
        f"  weighted F1 {result['weighted_f1']:.2f} (95% CI {low:.2f}-{high:.2f}, seed {seed})"
        f"  micro F1 {result['micro_f1']:.2f}  macro F1 {result['macro_f1']:.2f}",
        f"out-of-domain answers (no rule keyword): {result['ood']}",
    ]
    if result["unparsed_gold"]:
        lines.append(
            f"gold answers matching no template, left out of correctness: "
            f"{result['unparsed_gold']} ({', '.join(result['unparsed_gold_rows'][:5])})"
        )
    names = (
        "bleu", "rouge1", "rouge2", "rougeL", "bert_score", "bart_score", "gpt_score",
        "llm_judge_overall",
    )  # fmt: skip
    found = [f"{name} {result[name]:.4f}" for name in names if result.get(name) is not None]
    lines.append("explanation: " + "  ".join(found))
    per_class = [["label", "precision", "recall", "f1", "support"]]
    for label, m in result["per_class"].items():
        per_class.append([label, *(f"{m[k]:.2f}" for k in ("precision", "recall", "f1"))])
        per_class[-1].append(str(m["support"]))
    lines += ["per class:", *_table(per_class)]
    matrix = result["confusion_matrix"]
    grid = [["gold \\ predicted", *matrix["labels"]]]
    grid += [[lab, *map(str, r)] for lab, r in zip(matrix["labels"], matrix["matrix"], strict=True)]
    lines += ["confusion matrix:", *_table(grid)]
    return "\n".join(lines)
