"""Metrics that ask an OpenAI-compatible endpoint, row by row, through the generate stage's
client (``imhibench.generate.api.ApiBackend``: concurrency, retries with back-off, the key read
from the environment and redacted from every message) and its journal
(``imhibench.generate.journal.RowJournal``: every answer fsynced as it arrives, so a killed job
asks again only the rows it lacks).

Each journal record carries ``asked_sha256``, the digest of what its row asked about (the
judge: the query and the response; GPTScore: the scored text and its reference): a saved
answer is reused only while its row asks the same, so a row whose response changed is asked
again (its old answer stays in the journal). The journal has one writer (``output_lock``), and
SIGTERM / SIGINT stop the asking as the generate stage does: no new request, the answers in
flight saved, exit status 128 + signal.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from imhibench.common.errors import ImhiBenchError
from imhibench.generate.api import Answer, ApiBackend, ApiSettings

log = logging.getLogger(__name__)

# Keys of a metric's `api` block besides ApiSettings' own (none yet); `mode` is the metric's.
API_KEYS = frozenset(ApiSettings.__dataclass_fields__) - {"mode", "send_seed"}


@dataclass(frozen=True)
class MetricAnswer(Answer):
    """A finished row with what the metric needs from the reply (log-probabilities, ratings)."""

    payload: dict | None = None


def api_settings(metric: str, api: Any, mode: str) -> ApiSettings:
    """``ApiSettings`` from a metric's ``api`` block (``base_url`` and ``model`` required)."""
    if not isinstance(api, dict):
        raise ImhiBenchError(f"settings[{metric!r}]['api'] must be a mapping, got {api!r}")
    unknown = sorted(set(api) - API_KEYS)
    if unknown:
        raise ImhiBenchError(f"settings[{metric!r}]['api']: unknown key(s) {unknown}")
    missing = [k for k in ("base_url", "model") if not api.get(k)]
    if missing:
        raise ImhiBenchError(f"settings[{metric!r}]['api']: missing key(s) {missing}")
    return ApiSettings(**api, mode=mode, send_seed=False)


class MetricBackend(ApiBackend):
    """An ``ApiBackend`` whose request is the metric's own: ``request(client, model, item)``
    returns the answer's fields (``model``, ``system_fingerprint``, ``finish_reason``,
    ``prompt_tokens``, ``completion_tokens``: None where unknown) and its ``payload``."""

    def __init__(
        self,
        label: str,
        settings: ApiSettings,
        request: Callable[[Any, str, Any], dict],
        client: Any = None,
    ) -> None:
        super().__init__(label, settings, max_tokens=1, seed=0, client=client)
        self._metric_request = request

    def _request(self, row_id: str, query: Any) -> Answer:
        fields = self._metric_request(self.client, self.settings.model, query)
        return MetricAnswer(
            row_id=row_id,
            response="",
            finish_reason=fields.get("finish_reason"),
            prompt_tokens=fields.get("prompt_tokens"),
            completion_tokens=fields.get("completion_tokens"),
            model=fields.get("model"),
            system_fingerprint=fields.get("system_fingerprint"),
            payload=fields["payload"],
        )


def reply_fields(reply: Any) -> dict:
    """The accounting fields of one completion reply."""
    usage = getattr(reply, "usage", None)
    return {
        "model": getattr(reply, "model", None),
        "system_fingerprint": getattr(reply, "system_fingerprint", None),
        "finish_reason": reply.choices[0].finish_reason,
        "prompt_tokens": getattr(usage, "prompt_tokens", None),
        "completion_tokens": getattr(usage, "completion_tokens", None),
    }


def asked_sha256(asked: Any) -> str:
    """The digest of what a row asks about (JSON text of ``asked``), saved with its answer."""
    text = json.dumps(asked, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def reusable(label: str, saved: dict[str, dict], digests: dict[str, str]) -> dict[str, dict]:
    """The saved records whose row still asks the same (``asked_sha256``); logs the others,
    which stay in the journal and are asked again."""
    kept = {
        r: saved[r] for r, d in digests.items() if r in saved and saved[r].get("asked_sha256") == d
    }
    changed = sum(r in saved and "asked_sha256" in saved[r] for r in digests if r not in kept)
    unknown = sum(r in saved and "asked_sha256" not in saved[r] for r in digests)
    if changed:
        log.warning(
            "%s: %d saved answer(s) were for another text of their row (the responses "
            "changed?): asked again; the old answers stay in the journal", label, changed,
        )  # fmt: skip
    if unknown:
        log.warning(
            "%s: %d saved answer(s) do not record what they were asked about (a journal "
            "written before imhi-bench saved it): asked again; they stay in the journal",
            label, unknown,
        )  # fmt: skip
    return kept


def ask_rows(
    backend: MetricBackend,
    rows: list[tuple[str, Any]],
    journal_out: str | None,
    key: dict,
    asked: dict[str, Any] | None = None,
) -> tuple[dict[str, dict], dict]:
    """Every row's answer record (row_id -> record) and the run's accounting for provenance.

    With ``journal_out``, a row saved under the same ``key`` for the same ``asked[row_id]``
    (what the answer depends on; default: the row's item) is not asked again, and each new
    answer is saved before the next is handed over; the journal's lock is held meanwhile.
    SIGTERM / SIGINT end the asking (``GenerationStopped``) once the answers in flight are
    saved."""
    from contextlib import nullcontext

    from imhibench.generate.api import answer_until_stopped, secret_redacted
    from imhibench.generate.journal import RowJournal
    from imhibench.generate.lock import output_lock
    from imhibench.generate.signals import StopOnSignal

    asked = {r: item for r, item in rows} if asked is None else asked
    digests = {r: asked_sha256(asked[r]) for r, _ in rows}
    journal = RowJournal(journal_out) if journal_out is not None else None
    if journal is None:
        log.warning("%s: no journal: answers are kept in memory only", backend.label)
    lock = output_lock(journal_out) if journal_out is not None else nullcontext()
    with lock, secret_redacted(backend), StopOnSignal() as stop:
        saved = journal.open(key) if journal is not None else {}
        records = reusable(backend.label, saved, digests)
        todo = [(r, item) for r, item in rows if r not in records]
        log.info(
            "%s: %s at %s: %d of %d rows already answered, asking %d",
            backend.label, backend.settings.model, backend.settings.base_url,
            len(records), len(rows), len(todo),
        )  # fmt: skip

        def keep(answer: Answer) -> None:
            record = {**answer.to_json(), "asked_sha256": digests[answer.row_id]}
            if journal is not None:
                journal.append(record)
            records[answer.row_id] = record

        try:
            answer_until_stopped(
                backend, todo, keep, stop, lambda: len(records), len(rows),
                None if journal is None else journal.path,
            )  # fmt: skip
        finally:
            if journal is not None:
                journal.close()
    ordered = [records[r] for r, _ in rows]
    prompt = sum(r["prompt_tokens"] or 0 for r in ordered)
    completion = sum(r["completion_tokens"] or 0 for r in ordered)
    api = backend.settings
    accounting = {
        "endpoint": {"base_url": api.base_url, "model": api.model, "mode": api.mode},
        "requests": sum(r.get("attempts", 1) for r in ordered),
        "models_returned": dict(Counter(str(r["model"]) for r in ordered)),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "rows_without_usage": sum(r["prompt_tokens"] is None for r in ordered),
        "price_per_million_tokens": api.price_per_million_tokens,
        "estimated_cost": api.estimated_cost(prompt, completion),
        "resumed_rows": len(rows) - len(todo),
        "requests_retried": backend.counters.retries,
        "journal": None if journal is None else str(journal.path),
    }
    return records, accounting
