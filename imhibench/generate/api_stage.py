"""The generate stage of a ``kind: api`` model: every row once, saved the moment it arrives.

Rows already in the journal (``journal.py``) are never sent again; the others are asked through
``ApiBackend`` and each answer is appended (fsynced) to the journal before the next one is
handed over. Returns the responses table (with the endpoint's per-row accounting as extra
columns) and the provenance fields: endpoint, models and system fingerprints returned, token
totals, estimated cost, empty / filtered answers, retries.
"""

from __future__ import annotations

import logging
from collections import Counter

import pandas as pd

from imhibench.generate.api import answer_until_stopped, secret_redacted
from imhibench.generate.journal import RowJournal
from imhibench.generate.shards import query_sha256
from imhibench.generate.signals import StopOnSignal

log = logging.getLogger(__name__)

# Columns written besides row_id, response, n_output_tokens (= completion tokens).
API_COLUMNS = ["prompt_tokens", "finish_reason"]
CONTENT_FILTER = "content_filter"


def run_api_job(
    subset: pd.DataFrame,
    out_path: str,
    model: str,
    model_spec: dict,
    settings: dict,
    seed: int,
    stop: StopOnSignal,
    interval_s: float,
) -> tuple[pd.DataFrame, dict]:
    """(responses table in ``subset`` order, provenance fields incl. ``endpoint``)."""
    from imhibench.common.progress import Progress
    from imhibench.generate import GenerationSettings, load_backend

    max_tokens = settings["max_new_tokens"]
    backend = load_backend(
        "api",
        model_dir=None,
        settings=GenerationSettings(max_new_tokens=max_tokens, seed=seed),
        api=model_spec["api"],
        label=model,
    )
    api = backend.settings
    key = {
        **api.resume_key(),
        "temperature": 0,
        "max_tokens": max_tokens,
        "seed": seed if api.send_seed else None,
    }
    row_ids, queries = subset["row_id"].tolist(), subset["query"].tolist()
    # The test set enters row by row (never as the file's digest, which a byte-identical
    # re-fetch may change): an answer is reused while its row's query is unchanged.
    digests = {r: query_sha256(q) for r, q in zip(row_ids, queries, strict=True)}
    journal = RowJournal(out_path)
    with secret_redacted(backend):
        saved = journal.open(key)
        answers = {
            r: saved[r]
            for r in row_ids
            if r in saved and saved[r].get("query_sha256") == digests[r]
        }
        todo = [(r, q) for r, q in zip(row_ids, queries, strict=True) if r not in answers]
        log.info(
            "%s: %s at %s (%s mode): %d of %d rows already answered in %s, asking %d, "
            "%d at a time", model, api.model, api.base_url, api.mode, len(answers),
            len(row_ids), journal.path, len(todo), api.concurrency,
        )  # fmt: skip
        progress = Progress(model, len(row_ids), len(answers), interval_s)

        def keep(answer) -> None:
            record = {**answer.to_json(), "query_sha256": digests[answer.row_id]}
            journal.append(record)
            answers[answer.row_id] = record
            progress.batch(1, answer.completion_tokens or 0)

        try:
            answer_until_stopped(
                backend, todo, keep, stop, lambda: len(answers), len(row_ids), journal.path
            )
        finally:
            journal.close()
        progress.log("done; ")
    table = _table([answers[r] for r in row_ids])
    extra = _accounting(table, [answers[r] for r in row_ids], api, key)
    extra["api"].update(
        resumed_rows=len(row_ids) - len(todo),
        requests_retried=backend.counters.retries,
        journal=str(journal.path),
    )
    return table, extra


def _table(records: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "row_id": [r["row_id"] for r in records],
            "response": [r["response"] for r in records],
            "n_output_tokens": pd.array([r["completion_tokens"] for r in records], dtype="Int64"),
            "prompt_tokens": pd.array([r["prompt_tokens"] for r in records], dtype="Int64"),
            "finish_reason": pd.array([r["finish_reason"] for r in records], dtype="string"),
        }
    )


def _accounting(table: pd.DataFrame, records: list[dict], api, key: dict) -> dict:
    """Provenance fields of an API run."""
    prompt = int(table["prompt_tokens"].sum())
    completion = int(table["n_output_tokens"].sum())
    empty = [r for r in records if not r["response"].strip()]
    return {
        "endpoint": {"base_url": api.base_url, "model": api.model, "mode": api.mode},
        "api": {
            "request": {k: key[k] for k in ("temperature", "max_tokens", "seed")},
            "models_returned": dict(Counter(str(r["model"]) for r in records)),
            "system_fingerprints": dict(Counter(str(r["system_fingerprint"]) for r in records)),
            "finish_reasons": dict(Counter(str(r["finish_reason"]) for r in records)),
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "rows_without_usage": int(table["prompt_tokens"].isna().sum()),
            "price_per_million_tokens": api.price_per_million_tokens,
            "estimated_cost": api.estimated_cost(prompt, completion),
            "empty_responses": len(empty),
            "content_filtered": sum(r["finish_reason"] == CONTENT_FILTER for r in records),
        },
    }
