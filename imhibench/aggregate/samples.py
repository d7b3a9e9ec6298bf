"""A browsable sample of one (model, dataset)'s answers, worst-scoring first, as one HTML page:
query excerpt, response, gold answer, gold label, every labeler's label and the per-row scores,
so that a reader of the report can see why a number is what it is."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from imhibench.common.io import atomic_path, read_table
from imhibench.common.tables import HTML_STYLE, html_page

SAMPLE_ROWS = 50  # rows shown per (model, dataset)
QUERY_EXCERPT_CHARS = 400
# The per-row score that orders rows within the wrong / right groups, first present wins
# (lower = worse for all of them).
ORDER_SCORES = ("bart_score", "bert_score_f1", "rougeL")

SAMPLE_STYLE = HTML_STYLE + (
    "td{vertical-align:top;text-align:left;white-space:normal;max-width:28em;font-size:90%}"
    "tr.wrong td.verdict{font-weight:bold}.excerpt{color:#333}"
)


def sample_rows(
    test_set: pd.DataFrame,
    responses: pd.DataFrame,
    labels: pd.DataFrame,
    scores: pd.DataFrame,
    labelers: Sequence[str],
    n_rows: int = SAMPLE_ROWS,
) -> pd.DataFrame:
    """One row per answer, worst first: rows whose first labeler's label is wrong, then right;
    within each, the lowest per-row explanation score (ORDER_SCORES) first; ties by row_id."""
    rows = responses[["row_id", "response"]].merge(labels, on="row_id", validate="one_to_one")
    rows = rows.merge(
        test_set[["row_id", "query", "gold_answer"]], on="row_id", how="left", validate="one_to_one"
    )
    rows = rows.merge(scores, on="row_id", how="left", validate="one_to_one")
    rows["correct"] = rows[f"label_{labelers[0]}"] == rows["gold_label"]
    keys, ascending = ["correct"], [True]
    if order := next((s for s in ORDER_SCORES if s in rows.columns), None):
        keys.append(order)
        ascending.append(True)
    rows = rows.sort_values([*keys, "row_id"], ascending=[*ascending, True], kind="stable")
    return rows.head(n_rows).reset_index(drop=True)


def _excerpt(text: str, limit: int = QUERY_EXCERPT_CHARS) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit].rstrip() + " …"


def _score_text(value: object) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.3f}"
    return html.escape(str(value))


def to_html(
    rows: pd.DataFrame, model: str, dataset: str, labelers: Sequence[str], total_rows: int
) -> str:
    """The page: a summary line and one table row per answer."""
    score_columns = [
        c
        for c in rows.columns
        if c in ("bart_score", "bert_score_f1", "rouge1", "rouge2", "rougeL")
    ]
    header = [
        "#",
        "row",
        "query (excerpt)",
        "response",
        "gold answer",
        "gold label",
        *(f"{labeler} label" for labeler in labelers),
        *score_columns,
    ]
    body = []
    for n, row in rows.iterrows():
        verdict = "right" if row["correct"] else "wrong"
        cells = [
            str(n + 1),
            html.escape(str(row["row_id"])),
            f'<span class="excerpt">{html.escape(_excerpt(row["query"]))}</span>',
            html.escape(str(row["response"])),
            html.escape(str(row["gold_answer"])),
            html.escape(str(row["gold_label"])),
        ]
        for labeler in labelers:
            label = html.escape(str(row[f"label_{labeler}"]))
            if labeler == "rule" and bool(row.get("rule_ood", False)):
                label += " (out of domain)"
            cells.append(label)
        cells += [_score_text(row[c]) for c in score_columns]
        first_label = 6  # the first labeler's cell: bold when wrong
        tds = "".join(
            f'<td class="verdict">{c}</td>' if i == first_label else f"<td>{c}</td>"
            for i, c in enumerate(cells)
        )
        body.append(f'<tr class="{verdict}">{tds}</tr>')
    wrong = int((~rows["correct"]).sum())
    title = f"Answers of {model} on {dataset}"
    intro = (
        f"<h2>{html.escape(title)}</h2><p>{len(rows)} of {total_rows} rows, worst first: rows "
        f"whose {html.escape(labelers[0])} label is wrong ({wrong} shown) before right ones, "
        "then by lowest per-row explanation score. Non-clinical research data: social-media "
        "posts, shown as released by the IMHI benchmark.</p>"
    )
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    table = f"<table><thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(body) + "</tbody></table>"
    return html_page(title, intro + table, SAMPLE_STYLE)


def write_sample(
    test_set_path: str | Path,
    responses_path: str | Path,
    labels_path: str | Path,
    scores_path: str | Path,
    out_path: str | Path,
    model: str,
    dataset: str,
    labelers: Sequence[str],
    n_rows: int = SAMPLE_ROWS,
) -> pd.DataFrame:
    """Read one job's stage outputs and write its answer page; returns the rows shown."""
    label_columns = ["row_id", "gold_label", *(f"label_{x}" for x in labelers)]
    rows = sample_rows(
        read_table(test_set_path, ["row_id", "query", "gold_answer"]),
        read_table(responses_path, ["row_id", "response"]),
        read_table(labels_path, label_columns),
        read_table(scores_path, ["row_id"]),
        labelers,
        n_rows,
    )
    total = len(read_table(responses_path, ["row_id"]))
    path = Path(out_path)
    tmp = atomic_path(path)
    tmp.write_text(to_html(rows, model, dataset, labelers, total), encoding="utf-8")
    tmp.replace(path)
    return rows


def write_samples(pages: Sequence[dict], model: str, labelers: Sequence[str]) -> None:
    """The answer page of each of a model's datasets (``pages``: dataset, test_set,
    responses, labels, scores, out)."""
    for page in pages:
        write_sample(
            page["test_set"], page["responses"], page["labels"], page["scores"], page["out"],
            model, page["dataset"], labelers,
        )  # fmt: skip
