"""GPTScore (Fu et al., 2023): the mean log-probability of an answer's tokens given the gold
answer before it, under a causal language model.

Upstream (MentaLLaMA ``src/score.py`` -> ``jinlanfu/GPTScore`` ``gpt_inference.py`` at 18b91c3)
sends ``reference + answer`` (no separator, no instruction) to a legacy Completions endpoint
with ``echo``, and averages the log-probabilities from the token that *begins at the reference's
last character* (``text_offset.index(len(reference) - 1)``, index 0 moved to 1) up to the
second-to-last token (the last one is left out). ``upstream: true`` reproduces that arithmetic;
the default scores the answer cleanly: ``reference + separator + answer`` (separator ``"\\n"``)
and the mean over every token that holds a character of the answer, the last one included.

Both backends reduce a row to the same thing: the start offset (in characters) and the
log-probability of every token of the text (the first has none). ``hf`` computes them by
teacher forcing a local causal checkpoint; ``api`` asks an OpenAI-compatible completions
endpoint for them (``echo: true``, ``logprobs: 1``, ``max_tokens: 1``; the one generated token
is dropped, as lm-evaluation-harness's ``local-completions`` does).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from imhibench.common.errors import ImhiBenchError
from imhibench.score.metrics.registry import (
    MetricContext,
    MetricOutput,
    _positive_int,
    model_metric_options,
    register_explanation_metric,
)

log = logging.getLogger(__name__)

CLEAN_SEPARATOR = "\n"


class UnscorableRow(ImhiBenchError):
    """A row upstream's arithmetic cannot score (upstream itself fails on it)."""


@dataclass(frozen=True)
class TokenLogprobs:
    """Every token of one text: start offset (characters) and log-probability (None: first)."""

    offsets: list[int]
    logprobs: list[float | None]
    text_length: int

    def __post_init__(self) -> None:
        if len(self.offsets) != len(self.logprobs):
            raise ImhiBenchError(
                f"gpt_score: {len(self.offsets)} token offsets but {len(self.logprobs)} "
                "log-probabilities"
            )


def scored_text(reference: str, answer: str, separator: str) -> tuple[str, int]:
    """The text the model reads and the character offset where the answer starts."""
    prefix = reference + separator
    return prefix + answer, len(prefix)


def clean_score(tokens: TokenLogprobs, answer_start: int) -> float:
    """Mean log-probability of every token holding a character of the answer (those ending
    after ``answer_start``); NaN for an empty answer (no such token)."""
    offsets = tokens.offsets
    ends = [*offsets[1:], tokens.text_length]
    picked = [k for k in range(1, len(offsets)) if ends[k] > answer_start]
    if not picked:
        return math.nan
    values = [tokens.logprobs[k] for k in picked]
    if any(v is None for v in values):
        raise ImhiBenchError("gpt_score: an answer token has no log-probability")
    return math.fsum(values) / len(values)


def upstream_score(tokens: TokenLogprobs, reference: str) -> float:
    """Upstream's arithmetic: from the token starting at ``len(reference) - 1`` (0 -> 1) to
    the second-to-last token; raises where upstream's ``list.index`` fails."""
    try:
        first = tokens.offsets.index(len(reference) - 1)
    except ValueError:
        raise UnscorableRow(
            f"gpt_score (upstream): no token begins at the reference's last character (offset "
            f"{len(reference) - 1}); upstream fails on this row too (ValueError)"
        ) from None
    first = max(first, 1)
    values = tokens.logprobs[first:-1]
    if not values:
        raise UnscorableRow(
            "gpt_score (upstream): no token between the reference's end and the last token; "
            "upstream divides by zero on this row"
        )
    if any(v is None for v in values):
        raise ImhiBenchError("gpt_score (upstream): a scored token has no log-probability")
    # upstream: loss = -sum(...); avg = loss / (len(text_offset) - i - 1); score = -avg
    return math.fsum(values) / (len(tokens.offsets) - first - 1)


def score_row(
    tokens: TokenLogprobs, reference: str, answer_start: int, upstream: bool, row: str = "?"
) -> float:
    """The GPTScore of one row under the chosen arithmetic; NaN (logged) where upstream's
    arithmetic fails, and for an empty answer."""
    if not upstream:
        return clean_score(tokens, answer_start)
    try:
        return upstream_score(tokens, reference)
    except UnscorableRow as err:
        log.warning("row %s: %s; scored NaN", row, err)
        return math.nan


def separator_of(upstream: bool, separator: str | None) -> str:
    """The text between reference and answer: none upstream, ``"\\n"`` by default."""
    if upstream:
        if separator not in (None, ""):
            raise ImhiBenchError(
                "settings['gpt_score']: upstream: true concatenates with no separator; "
                f"remove separator ({separator!r})"
            )
        return ""
    if separator is None:
        return CLEAN_SEPARATOR
    if not isinstance(separator, str):
        raise ImhiBenchError(f"settings['gpt_score']['separator'] must be a string: {separator!r}")
    return separator


class CausalScorer:
    """Teacher-forced token log-probabilities of texts under a local causal checkpoint."""

    def __init__(self, checkpoint: str, device: str = "cpu", dtype: str = "float32") -> None:
        from pathlib import Path

        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from imhibench.score.metrics.bartscore import resolve_dtype

        if not Path(checkpoint).is_dir():
            raise ImhiBenchError(f"gpt_score: checkpoint directory {checkpoint!r} not found")
        self.torch = torch
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        if not getattr(self.tokenizer, "is_fast", False):
            raise ImhiBenchError(
                f"gpt_score: {checkpoint!r} has no fast tokenizer (character offsets are needed)"
            )
        model = AutoModelForCausalLM.from_pretrained(checkpoint)
        self.model = model.to(device=device, dtype=resolve_dtype(dtype, "gpt_score")).eval()
        positions = getattr(model.config, "max_position_embeddings", None)
        self.max_length = positions if isinstance(positions, int) and positions > 0 else None

    def _encode(self, text: str, row: int) -> tuple[list[int], list[int]]:
        enc = self.tokenizer(text, return_offsets_mapping=True)
        ids, spans = enc["input_ids"], enc["offset_mapping"]
        if self.max_length is not None and len(ids) > self.max_length:
            raise ImhiBenchError(
                f"gpt_score: row {row}: {len(ids)} tokens, more than the model's "
                f"{self.max_length} positions"
            )
        if len(ids) < 2:
            raise ImhiBenchError(f"gpt_score: row {row}: the text tokenizes to fewer than 2 tokens")
        return ids, [start for start, _ in spans]

    def token_logprobs(self, texts: Sequence[str], batch_size: int = 8) -> list[TokenLogprobs]:
        """Per text: offsets and log P(token_k | tokens_<k), batched in length order."""
        torch = self.torch
        encoded = [self._encode(text, n) for n, text in enumerate(texts)]
        order = sorted(range(len(texts)), key=lambda n: len(encoded[n][0]), reverse=True)
        result: list[TokenLogprobs | None] = [None] * len(texts)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                width = max(len(encoded[n][0]) for n in rows)
                ids = torch.zeros((len(rows), width), dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for i, n in enumerate(rows):
                    row_ids = encoded[n][0]
                    ids[i, : len(row_ids)] = torch.tensor(row_ids)
                    mask[i, : len(row_ids)] = 1
                ids, mask = ids.to(self.device), mask.to(self.device)
                logits = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
                log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
                picked = log_probs.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1).cpu()
                for i, n in enumerate(rows):
                    row_ids, offsets = encoded[n]
                    values = picked[i, : len(row_ids) - 1].tolist()
                    result[n] = TokenLogprobs(offsets, [None, *values], len(texts[n]))
        return [r for r in result if r is not None]


def gpt_score_hf(
    references: Sequence[str],
    answers: Sequence[str],
    checkpoint: str,
    device: str = "cpu",
    dtype: str = "float32",
    batch_size: int = 8,
    upstream: bool = False,
    separator: str | None = None,
) -> list[float]:
    """GPTScore of every (reference, answer) row with a local causal checkpoint."""
    sep = separator_of(upstream, separator)
    texts = [scored_text(r, a, sep) for r, a in zip(references, answers, strict=True)]
    scorer = CausalScorer(checkpoint, device=device, dtype=dtype)
    tokens = scorer.token_logprobs([t for t, _ in texts], batch_size=batch_size)
    return [
        score_row(tok, ref, start, upstream)
        for tok, ref, (_, start) in zip(tokens, references, texts, strict=True)
    ]


def completions_logprobs(client: Any, model: str, text: str) -> dict:
    """Ask a completions endpoint for the prompt's token log-probabilities (echo), as
    lm-evaluation-harness's ``local-completions`` does: ``max_tokens: 1``, the one generated
    token dropped. Returns the reply's fields with payload ``{"offsets", "logprobs"}``."""
    from imhibench.generate.api import Malformed
    from imhibench.score.metrics.api_rows import reply_fields

    reply = client.completions.create(
        model=model, prompt=text, echo=True, logprobs=1, max_tokens=1, temperature=0
    )
    choices = getattr(reply, "choices", None)
    if isinstance(reply, str) or not choices:
        raise Malformed(f"answer is not a completion: {str(reply)[:200]!r}")
    logprobs = getattr(choices[0], "logprobs", None)
    offsets = getattr(logprobs, "text_offset", None)
    values = getattr(logprobs, "token_logprobs", None)
    if not offsets or values is None or len(offsets) != len(values) or len(offsets) < 3:
        raise Malformed(
            "no prompt log-probabilities in the answer (does the endpoint support echo with "
            "logprobs? vLLM does; OpenAI only for babbage-002/davinci-002)"
        )
    if not str(getattr(choices[0], "text", "")).startswith(text):
        raise Malformed("the echoed text does not start with the prompt")
    # the last token is the generated one
    payload = {"offsets": list(offsets[:-1]), "logprobs": list(values[:-1])}
    return {**reply_fields(reply), "payload": payload}


def gpt_score_api(
    references: Sequence[str],
    answers: Sequence[str],
    row_ids: Sequence[str],
    api: dict,
    journal_out: str | None,
    upstream: bool = False,
    separator: str | None = None,
    client: Any = None,
) -> tuple[list[float], dict]:
    """GPTScore of every row through a completions endpoint, and the run's accounting."""
    from imhibench.score.metrics.api_rows import MetricBackend, api_settings, ask_rows

    sep = separator_of(upstream, separator)
    texts = [scored_text(r, a, sep) for r, a in zip(references, answers, strict=True)]
    settings = api_settings("gpt_score", api, mode="completions")
    backend = MetricBackend("gpt_score", settings, completions_logprobs, client=client)
    # What a saved answer depends on: the endpoint, the model and the request (the journal's
    # key), and per row the text asked about with its reference (each record's asked_sha256).
    key = {**settings.resume_key(), "request": "echo logprobs=1 max_tokens=1", "separator": sep}
    rows = [(rid, text) for rid, (text, _) in zip(row_ids, texts, strict=True)]
    asked = {
        rid: {"text": text, "reference": ref}
        for rid, ref, (text, _) in zip(row_ids, references, texts, strict=True)
    }
    records, accounting = ask_rows(backend, rows, journal_out, key, asked)
    scores = []
    for rid, ref, (text, start) in zip(row_ids, references, texts, strict=True):
        payload = records[rid]["payload"]
        tokens = TokenLogprobs(payload["offsets"], payload["logprobs"], len(text))
        scores.append(score_row(tokens, ref, start, upstream, rid))
    return scores, accounting


def _summary(column: list[float], name: str) -> dict[str, float]:
    """Mean over the scored rows and the count of rows left unscored (NaN)."""
    scored = [v for v in column if not math.isnan(v)]
    return {
        name: math.fsum(scored) / len(scored) if scored else math.nan,
        f"{name}_unscored": float(len(column) - len(scored)),
    }


@register_explanation_metric("gpt_score", context=True)
def gpt_score(
    predictions: list[str],
    references: list[str],
    options: dict[str, Any],
    device: str,
    context: MetricContext,
) -> MetricOutput:
    """GPTScore per row: mean log-probability of the response given the gold answer."""
    defaults = {"upstream": False, "separator": None, "batch_size": 8}
    opts = model_metric_options("gpt_score", options, defaults)
    upstream = opts["upstream"]
    if not isinstance(upstream, bool):
        raise ImhiBenchError(
            f"settings['gpt_score']['upstream'] must be true or false, got {upstream!r}"
        )
    provenance: dict[str, Any] = {
        "backend": opts["backend"],
        "arithmetic": "upstream" if upstream else "clean",
        "separator": separator_of(upstream, opts["separator"]),
    }
    if opts["backend"] == "hf":
        batch_size = _positive_int("gpt_score", "batch_size", opts["batch_size"])
        column = gpt_score_hf(
            references, predictions, str(opts["checkpoint"]), device, str(opts["dtype"]),
            batch_size, upstream, opts["separator"],
        )  # fmt: skip
        provenance.update(dtype=str(opts["dtype"]), device=device)
    else:
        column, accounting = gpt_score_api(
            references, predictions, context.ids(len(predictions)), opts["api"],
            context.journal_for("gpt_score"), upstream, opts["separator"],
        )  # fmt: skip
        provenance.update(accounting)
    return MetricOutput({"gpt_score": column}, _summary(column, "gpt_score"), provenance)
