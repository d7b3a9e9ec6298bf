"""LLM judge: a model rates each response on the four aspects MentaLLaMA's human annotators
rated (fluency, completeness, reliability, overall; 0-3), from the query (the post and the
question) and the response.

The rubric below was written for imhi-bench after the papers' annotation protocol (the aspect
names and the 0-3 scale); it is not upstream's text (upstream releases no judge). The judge
decodes greedily (temperature 0) and must answer in exactly four ``aspect: digit`` lines. An
answer that does not parse is answered with a reminder of the format, at most
``parse_attempts`` times in all; a row still unparsed is kept in the journal with every answer
and counted (``llm_judge_unparsed``), its ratings NaN, never zero. Where the endpoint returns
top log-probabilities at the rating tokens (``top_logprobs``), each aspect is also given as the
probability-weighted mean over 0-3 of those candidates (as G-Eval does), which separates ties.

Backends: ``api`` (OpenAI-compatible chat completions through the generate stage's client and
journal, see ``api_rows``) and ``hf`` (a local causal checkpoint with its chat template, greedy
``generate`` with the raw logits of each step).
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Callable, Sequence
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

ASPECTS = ("fluency", "completeness", "reliability", "overall")
SCORES = ("0", "1", "2", "3")

RUBRIC = """\
Rate the response on four aspects, each an integer from 0 to 3.
fluency: how well the response is written: grammar, word choice and readability.
  0 = hard to read or not language; 1 = many errors that get in the way; 2 = minor errors;
  3 = fluent and easy to read.
completeness: whether the response states its answer to the question and supports it with the
  parts of the post that matter for that answer.
  0 = no answer or no reasoning; 1 = an answer with little support; 2 = supported, with some
  relevant evidence from the post missing; 3 = answer and all relevant evidence given.
reliability: whether the reasoning is correct and faithful to the post: nothing invented, no
  misreading, no harmful or unfounded claim.
  0 = mostly wrong or invented; 1 = important errors; 2 = small inaccuracies; 3 = fully
  faithful and correct.
overall: the response's quality as an explanation of a mental-health analysis of this post,
  all aspects together.
  0 = useless; 1 = poor; 2 = acceptable; 3 = good."""

FORMAT = "\n".join(f"{aspect}: <0-3>" for aspect in ASPECTS)

PROMPT = """\
You are evaluating an explanation written by an AI model for a mental-health analysis task on a \
social-media post.

[Query: the post and the question]
{query}

[Response to evaluate]
{response}

{rubric}

Reply with exactly these four lines and nothing else, each with one digit from 0 to 3:
{format}"""

REMINDER = (
    "Your answer could not be read. Reply with exactly these four lines and nothing else, each "
    "with one digit from 0 to 3:\n" + FORMAT
)

_LINE = re.compile(r"^\s*(fluency|completeness|reliability|overall)\s*:\s*([0-3])\s*$", re.I)


def rubric_sha256() -> str:
    """Identity of the prompt template, rubric and reminder (in provenance and journals)."""
    text = "\n\n".join((PROMPT, RUBRIC, REMINDER))
    return hashlib.sha256(text.encode()).hexdigest()


def judge_prompt(query: str, response: str) -> str:
    """The one user message the judge reads for a row."""
    return PROMPT.format(query=query, response=response, rubric=RUBRIC, format=FORMAT)


def parse_ratings(text: str) -> tuple[dict[str, int], dict[str, int]] | None:
    """``(ratings, digit offsets)`` if ``text`` is exactly the four lines (any order, each
    aspect once, blank lines allowed), else None."""
    ratings: dict[str, int] = {}
    where: dict[str, int] = {}
    start = 0
    for line in text.splitlines(keepends=True):
        if line.strip():
            match = _LINE.match(line)
            if match is None:
                return None
            aspect = match.group(1).lower()
            if aspect in ratings:
                return None
            ratings[aspect] = int(match.group(2))
            where[aspect] = start + match.start(2)
        start += len(line)
    if set(ratings) != set(ASPECTS):
        return None
    return ratings, where


def spells(text: str, tokens: list[dict]) -> bool:
    """Whether the tokens, joined, are the text (else no rating can be found among them)."""
    return "".join(t["token"] for t in tokens) == text


def weighted_ratings(
    text: str, where: dict[str, int], tokens: list[dict] | None
) -> dict[str, float | None]:
    """Per aspect, sum(p(d) * d) / sum(p(d)) over the digits 0-3 among the top candidates at
    the rating's token; None where the tokens do not line up with the text or hold no digit.

    ``tokens``: ``[{"token": str, "top_logprobs": [{"token": str, "logprob": float}]}]``."""
    empty: dict[str, float | None] = dict.fromkeys(ASPECTS)
    if not tokens or not spells(text, tokens):
        return empty
    starts, offset = [], 0
    for token in tokens:
        starts.append(offset)
        offset += len(token["token"])
    result = dict(empty)
    for aspect, position in where.items():
        index = max(k for k, s in enumerate(starts) if s <= position)
        if tokens[index]["token"].strip() != text[position]:
            continue  # the digit shares its token with other text
        mass = {digit: 0.0 for digit in SCORES}
        for candidate in tokens[index].get("top_logprobs") or []:
            if (digit := candidate["token"].strip()) in mass:
                mass[digit] += math.exp(candidate["logprob"])
        total = math.fsum(mass.values())
        if total > 0:
            result[aspect] = math.fsum(int(d) * p for d, p in mass.items()) / total
    return result


def judge_conversation(
    ask: Any, query: str, response: str, parse_attempts: int
) -> tuple[dict, int, int]:
    """Ask ``ask(messages) -> (text, tokens, prompt_tokens, completion_tokens)`` until the
    answer parses, at most ``parse_attempts`` times; returns (payload, prompt, completion).
    ``tokens`` (for the weighted ratings) may be a function returning them: it is called only
    for an answer that parses."""
    messages = [{"role": "user", "content": judge_prompt(query, response)}]
    answers: list[str] = []
    prompt_tokens = completion_tokens = 0
    for _ in range(parse_attempts):
        text, tokens, used_prompt, used_completion = ask(messages)
        answers.append(text)
        prompt_tokens += used_prompt or 0
        completion_tokens += used_completion or 0
        parsed = parse_ratings(text)
        if parsed is not None:
            ratings, where = parsed
            if callable(tokens):
                tokens = tokens()
            weighted = weighted_ratings(text, where, tokens)
            payload = {"answers": answers, "ratings": ratings, "weighted": weighted}
            if tokens and not spells(text, tokens):
                payload["tokens_unaligned"] = True  # counted: no weighted ratings for this row
            return payload, prompt_tokens, completion_tokens
        messages = [
            *messages,
            {"role": "assistant", "content": text},
            {"role": "user", "content": REMINDER},
        ]
    return {"answers": answers, "ratings": None, "weighted": None}, prompt_tokens, completion_tokens


def _chat_tokens(choice: Any) -> list[dict] | None:
    """The ``logprobs.content`` of a chat choice as plain dicts, or None."""
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    if not content:
        return None
    return [
        {
            "token": item.token,
            "top_logprobs": [
                {"token": c.token, "logprob": c.logprob} for c in (item.top_logprobs or [])
            ],
        }
        for item in content
    ]


def api_judge_request(max_tokens: int, top_logprobs: int, parse_attempts: int):
    """The MetricBackend request of the api judge: one row's conversation."""
    from imhibench.generate.api import Malformed
    from imhibench.score.metrics.api_rows import reply_fields

    def request(client: Any, model: str, item: tuple[str, str]) -> dict:
        last: dict = {}

        def ask(messages: list[dict]) -> tuple[str, list[dict] | None, int, int]:
            extra = {"logprobs": True, "top_logprobs": top_logprobs} if top_logprobs else {}
            reply = client.chat.completions.create(
                model=model, messages=messages, temperature=0, max_tokens=max_tokens, **extra
            )
            choices = getattr(reply, "choices", None)
            if isinstance(reply, str) or not choices:
                raise Malformed(f"answer is not a completion: {str(reply)[:200]!r}")
            fields = reply_fields(reply)
            last.update(fields)
            text = choices[0].message.content or ""
            return (
                text,
                _chat_tokens(choices[0]),
                fields["prompt_tokens"],
                fields["completion_tokens"],
            )

        payload, prompt_tokens, completion_tokens = judge_conversation(
            ask, item[0], item[1], parse_attempts
        )
        return {
            **last,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "payload": payload,
        }

    return request


class HfJudge:
    """A local causal checkpoint answering through its chat template, greedily."""

    def __init__(self, checkpoint: str, device: str, dtype: str, max_new_tokens: int) -> None:
        from pathlib import Path

        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from imhibench.score.metrics.bartscore import resolve_dtype

        if not Path(checkpoint).is_dir():
            raise ImhiBenchError(f"llm_judge: checkpoint directory {checkpoint!r} not found")
        self.torch, self.device, self.max_new_tokens = torch, device, max_new_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        if not getattr(self.tokenizer, "chat_template", None):
            raise ImhiBenchError(f"llm_judge: {checkpoint!r} has no chat template")
        model = AutoModelForCausalLM.from_pretrained(checkpoint)
        self.model = model.to(device=device, dtype=resolve_dtype(dtype, "llm_judge")).eval()

    def ask(
        self, messages: list[dict], top_logprobs: int
    ) -> tuple[str, Callable[[], list[dict]] | None, int, int]:
        """Greedy answer, a function returning its tokens with the top candidates (from the raw
        logits; judge_conversation builds them only for an answer that parses: decoding the
        candidates of every answer was about a tenth of a tiny judge's time on CPU), token
        counts."""
        torch = self.torch
        ids = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"].to(self.device)
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        with torch.inference_mode():
            out = self.model.generate(
                ids, do_sample=False, max_new_tokens=self.max_new_tokens, pad_token_id=pad,
                output_logits=True, return_dict_in_generate=True,
            )  # fmt: skip
        new = out.sequences[0, ids.shape[1] :].tolist()
        if new and new[-1] == eos:
            new = new[:-1]
        text = self._decode(new)

        def tokens() -> list[dict]:
            return self._tokens(new, out.logits, top_logprobs)

        return text, tokens if top_logprobs else None, int(ids.shape[1]), len(new)

    def _tokens(self, new: list[int], logits: Sequence[Any], top_logprobs: int) -> list[dict]:
        """Each answer token's text and its top candidates with their log-probabilities."""
        torch = self.torch
        tokens = []
        for step, token_id in enumerate(new):
            log_probs = torch.log_softmax(logits[step][0].float(), dim=-1)
            top = torch.topk(log_probs, min(top_logprobs, log_probs.shape[-1]))
            before = new[:step]
            start = self._decode(before)
            candidates = [
                {"token": self._piece(before, start, int(i)), "logprob": float(v)}
                for v, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
            ]
            tokens.append(
                {"token": self._piece(before, start, token_id), "top_logprobs": candidates}
            )
        return tokens

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _piece(self, before: list[int], start: str, token_id: int) -> str:
        """The text ``token_id`` adds after the tokens ``before`` (decoded: ``start``):
        decoding a token alone drops a SentencePiece tokenizer's leading space (LLaMA-2,
        Mistral), so the tokens would not spell the answer. Where the longer text does not
        extend the shorter one (a character split across tokens), the token alone (the row is
        then counted, unaligned)."""
        end = self._decode([*before, token_id])
        return end[len(start) :] if end.startswith(start) else self._decode([token_id])


def _columns(records: Sequence[dict]) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Per-row rating columns (NaN where unparsed) and their means over the parsed rows."""
    columns: dict[str, list[float]] = {}
    for aspect in ASPECTS:
        columns[f"llm_judge_{aspect}"] = [
            math.nan if r["ratings"] is None else float(r["ratings"][aspect]) for r in records
        ]
        weighted = [
            math.nan if r["weighted"] is None or r["weighted"][aspect] is None
            else float(r["weighted"][aspect])
            for r in records
        ]  # fmt: skip
        if any(not math.isnan(v) for v in weighted):
            columns[f"llm_judge_{aspect}_weighted"] = weighted
    summary: dict[str, float] = {}
    for name, values in columns.items():
        kept = [v for v in values if not math.isnan(v)]
        summary[name] = math.fsum(kept) / len(kept) if kept else math.nan
    summary["llm_judge_unparsed"] = float(sum(r["ratings"] is None for r in records))
    return columns, summary


def judge_identity(provenance: dict) -> str:
    """How captions name the judge, e.g. ``LLM judge gpt-4o (api), rubric 1a2b3c4d``."""
    model = provenance.get("model") or "?"
    return (
        f"LLM judge {model} ({provenance.get('backend')}), "
        f"rubric {str(provenance.get('rubric_sha256', ''))[:8]}"
    )


@register_explanation_metric("llm_judge", context=True)
def llm_judge(
    predictions: list[str],
    references: list[str],
    options: dict[str, Any],
    device: str,
    context: MetricContext,
) -> MetricOutput:
    """Ratings 0-3 of fluency, completeness, reliability and overall per row."""
    defaults = {"max_new_tokens": 32, "parse_attempts": 3, "top_logprobs": 20}
    opts = model_metric_options("llm_judge", options, defaults)
    if context.queries is None:
        raise ImhiBenchError("llm_judge: the queries (posts) the responses answer are needed")
    if len(context.queries) != len(predictions):
        raise ImhiBenchError(
            f"llm_judge: {len(context.queries)} queries for {len(predictions)} responses"
        )
    max_tokens = _positive_int("llm_judge", "max_new_tokens", opts["max_new_tokens"])
    attempts = _positive_int("llm_judge", "parse_attempts", opts["parse_attempts"])
    top = opts["top_logprobs"]
    if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= 20:
        raise ImhiBenchError(f"settings['llm_judge']['top_logprobs'] must be 0-20, got {top!r}")
    provenance: dict[str, Any] = {
        "backend": opts["backend"],
        "rubric": RUBRIC,
        "prompt_template": PROMPT,
        "reminder": REMINDER,
        "rubric_sha256": rubric_sha256(),
        "temperature": 0,
        "max_new_tokens": max_tokens,
        "parse_attempts": attempts,
        "top_logprobs": top,
    }
    rows = list(zip(context.queries, predictions, strict=True))
    if opts["backend"] == "api":
        from imhibench.score.metrics.api_rows import MetricBackend, api_settings, ask_rows

        settings = api_settings("llm_judge", opts["api"], mode="chat")
        request = api_judge_request(max_tokens, top, attempts)
        backend = MetricBackend("llm_judge", settings, request)
        # The journal's key: what every answer depends on; per row, the query and response
        # asked about are in each record's asked_sha256 (ask_rows).
        key = {
            **settings.resume_key(),
            "rubric_sha256": rubric_sha256(),
            "max_tokens": max_tokens,
            "parse_attempts": attempts,
            "top_logprobs": top,
        }
        ids = context.ids(len(predictions))
        answered, accounting = ask_rows(
            backend, list(zip(ids, rows, strict=True)), context.journal_for("llm_judge"), key
        )
        records = [answered[r]["payload"] for r in ids]
        provenance.update(accounting, model=settings.model)
        provenance["judge_answers"] = sum(len(r["answers"]) for r in records)
    else:
        judge = HfJudge(str(opts["checkpoint"]), device, str(opts["dtype"]), max_tokens)
        records = []
        prompt_tokens = completion_tokens = 0
        for query, response in rows:
            payload, used_prompt, used_completion = judge_conversation(
                lambda messages: judge.ask(messages, top), query, response, attempts
            )
            records.append(payload)
            prompt_tokens += used_prompt
            completion_tokens += used_completion
        provenance.update(
            model=str(opts["checkpoint"]), dtype=str(opts["dtype"]), device=device,
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
            judge_answers=sum(len(r["answers"]) for r in records),
        )  # fmt: skip
    columns, summary = _columns(records)
    provenance["unparsed_rows"] = int(summary["llm_judge_unparsed"])
    unaligned = sum(bool(r.get("tokens_unaligned")) for r in records)
    provenance["weighted_unaligned_rows"] = unaligned
    if unaligned:
        log.warning(
            "llm_judge: %d of %d rows: the judge's tokens do not spell its answer, so these "
            "rows have no weighted ratings%s", unaligned, len(records),
            "" if any(k.endswith("_weighted") for k in columns)
            else " (no llm_judge_*_weighted column is written)",
        )  # fmt: skip
    provenance["judge"] = judge_identity(provenance)
    return MetricOutput(columns, summary, provenance)
