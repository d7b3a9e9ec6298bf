"""LLM judge: strict parsing, probability-weighted ratings, the api backend against the loopback
fake (malformed answers retried then counted, a killed job resumed without asking an answered
row again, the key in no file) and the hf backend on the tiny demo LLaMA."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI, serve

from imhibench.common.errors import ImhiBenchError
from imhibench.score.metrics import compute_explanation_metrics
from imhibench.score.metrics.explanation import MetricContext
from imhibench.score.metrics.judge import (
    ASPECTS,
    REMINDER,
    SCORES,
    judge_prompt,
    parse_ratings,
    weighted_ratings,
)

QUERIES = [
    f'Consider this post: "post number {n}" Question: Does the poster suffer?' for n in "0123"
]
RESPONSES = ["Yes. Reasoning: low mood.", "No. Reasoning: fine.", "Yes.", "No."]
REFS = ["Yes. Reasoning: gold."] * 4
GOOD = "fluency: 3\ncompleteness: 2\nreliability: 1\noverall: 2"


def test_parse_is_strict():
    ratings, where = parse_ratings(GOOD)
    assert ratings == {"fluency": 3, "completeness": 2, "reliability": 1, "overall": 2}
    assert GOOD[where["overall"]] == "2"
    assert parse_ratings("Overall: 2\n\nfluency:3\ncompleteness : 0\nreliability: 1\n")
    for bad in (
        GOOD.replace("3", "4"),  # out of range
        GOOD + "\nfluency: 1",  # an aspect twice
        "Sure! " + GOOD,  # extra text
        GOOD.replace("\noverall: 2", ""),  # an aspect missing
        GOOD.replace("3", "3.5"),
        "",
    ):
        assert parse_ratings(bad) is None, bad


def _tokens(text: str, top: dict[str, float] | None = None) -> list[dict]:
    """One token per character; digits get ``top`` as their candidates (probabilities)."""
    out = []
    for char in text:
        candidates = [{"token": char, "logprob": 0.0}]
        if char.isdigit() and top is not None:
            candidates = [{"token": t, "logprob": math.log(p)} for t, p in top.items()]
        out.append({"token": char, "top_logprobs": candidates})
    return out


def test_weighted_mean_over_the_digit_candidates():
    _, where = parse_ratings(GOOD)
    top = {"2": 0.5, " 3": 0.25, "1": 0.125, "yes": 0.125}  # " 3" counts as 3; "yes" not
    weighted = weighted_ratings(GOOD, where, _tokens(GOOD, top))
    expected = (2 * 0.5 + 3 * 0.25 + 1 * 0.125) / 0.875
    assert weighted == pytest.approx(dict.fromkeys(ASPECTS, expected))
    # tokens that do not spell the text: no weighted ratings
    assert weighted_ratings(GOOD, where, _tokens(GOOD + "x", top)) == dict.fromkeys(ASPECTS)


def _fake(bad: dict[str, int] | None = None) -> FakeOpenAI:
    """A judge that rates by the post number, with logprobs; ``bad[post]`` = how many of its
    first answers are malformed."""
    bad = dict(bad or {})

    def chat_reply(body: dict) -> tuple[str, dict | None]:
        first = body["messages"][0]["content"]
        post = next(n for n in "0123" if f"post number {n}" in first)
        if bad.get(post, 0) > 0:
            bad[post] -= 1
            return "I would rate it highly.", None
        n = int(post)
        text = f"fluency: {n}\ncompleteness: {3 - n}\nreliability: 1\noverall: {n % 2}"
        content = [
            {"token": t["token"], "logprob": 0.0, "bytes": None, "top_logprobs": [
                {**c, "bytes": None} for c in t["top_logprobs"]
            ]}
            for t in _tokens(text)
        ]  # fmt: skip
        return text, {"content": content}

    return FakeOpenAI(chat_reply=chat_reply)


def _settings(url: str, **api) -> dict:
    return {
        "llm_judge": {
            "backend": "api",
            "api": {"base_url": url, "model": "judge-x", "api_key_env": "FAKE_KEY",
                    "backoff_s": 0.01, **api},
        }
    }  # fmt: skip


def test_api_judge_parses_and_counts_malformed(tmp_path, monkeypatch):
    fake = _fake(bad={"1": 1, "2": 99})  # post 1: one bad answer; post 2: never parses
    monkeypatch.setenv("FAKE_KEY", fake.key)
    context = MetricContext(["a", "b", "c", "d"], QUERIES, tmp_path / "rows")
    provenance: dict = {}
    with serve(fake) as url:
        columns, summary = compute_explanation_metrics(
            RESPONSES, REFS, _settings(url), context=context, provenance_out=provenance
        )
    assert columns["llm_judge_fluency"][:2] == [0.0, 1.0]
    assert math.isnan(columns["llm_judge_fluency"][2])  # unparsed: NaN, never 0
    assert columns["llm_judge_completeness"][3] == 0.0
    assert columns["llm_judge_overall_weighted"][0] == pytest.approx(0.0)
    assert summary["llm_judge_unparsed"] == 1.0
    assert summary["llm_judge_fluency"] == pytest.approx((0 + 1 + 3) / 3)
    requests = [json.dumps(b) for b in fake.bodies]
    assert sum("post number 2" in r for r in requests) == 3  # parse_attempts
    assert sum("post number 1" in r for r in requests) == 2
    retried = next(
        b for b in fake.bodies if "post number 1" in json.dumps(b) and len(b["messages"]) == 3
    )
    assert retried["messages"][2]["content"] == REMINDER
    assert all(b["temperature"] == 0 and b["top_logprobs"] == 20 for b in fake.bodies)
    record = provenance["llm_judge"]
    assert record["unparsed_rows"] == 1 and record["judge_answers"] == 7
    assert "judge-x" in record["judge"] and record["rubric"].startswith("Rate the response")
    journal = (tmp_path / "rows.llm_judge.journal.jsonl").read_text()
    unparsed = [json.loads(x) for x in journal.splitlines()[1:] if '"c"' in x]
    assert len(unparsed[0]["payload"]["answers"]) == 3  # every answer kept
    for path in tmp_path.rglob("*"):
        assert fake.key not in path.read_text()
    assert fake.key not in json.dumps(provenance)


def test_queries_are_required():
    with pytest.raises(ImhiBenchError, match="queries"):
        compute_explanation_metrics(RESPONSES, REFS, {"llm_judge": {"backend": "api"}})


KILLED_JOB = """
import sys
sys.path[:0] = {paths!r}
from imhibench.score.metrics import compute_explanation_metrics
from imhibench.score.metrics.explanation import MetricContext
compute_explanation_metrics({responses!r}, {refs!r}, {settings!r},
    context=MetricContext(["a", "b", "c", "d"], {queries!r}, {prefix!r}))
"""


def test_killed_job_resumes_without_asking_answered_rows(tmp_path, monkeypatch):
    fake = _fake()
    fake.faults = {}
    fake.slow_s = 60.0
    monkeypatch.setenv("FAKE_KEY", fake.key)
    prefix = str(tmp_path / "rows")
    journal = Path(f"{prefix}.llm_judge.journal.jsonl")
    with serve(fake) as url:
        settings = _settings(url, concurrency=1)
        # the third row's answer never comes: the job hangs there and is killed
        third = next(q for q in QUERIES if "post number 2" in q)
        fake.faults[_first_message(third)] = ["slow"]
        script = KILLED_JOB.format(
            paths=[str(Path.cwd()), str(Path(__file__).parent)], responses=RESPONSES,
            refs=REFS, settings=settings, queries=QUERIES, prefix=prefix,
        )  # fmt: skip
        job = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], env=os.environ)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # rows a, b saved and c's request at the server
            saved = journal.exists() and len(journal.read_text().splitlines()) >= 3
            if saved and any(third in b["messages"][0]["content"] for b in list(fake.bodies)):
                break
            time.sleep(0.1)
        job.send_signal(signal.SIGKILL)
        job.wait()
        assert len(journal.read_text().splitlines()) == 3  # header + rows a, b
        fake.faults.clear()
        context = MetricContext(["a", "b", "c", "d"], QUERIES, prefix)
        columns, _ = compute_explanation_metrics(RESPONSES, REFS, settings, context=context)
    asked = [b["messages"][0]["content"] for b in fake.bodies]
    for n, query in enumerate(QUERIES):
        expected = 2 if n == 2 else 1  # the killed request, then once more
        assert sum(query in a for a in asked) == expected, n
    assert columns["llm_judge_fluency"] == [0.0, 1.0, 2.0, 3.0]
    assert fake.key not in journal.read_text()


def _first_message(query: str) -> str:
    from imhibench.score.metrics.judge import judge_prompt

    return judge_prompt(query, RESPONSES[QUERIES.index(query)])


def test_hf_judge_on_tiny_llama(demo_models, one_torch_thread):
    settings = {
        "llm_judge": {"backend": "hf", "checkpoint": demo_models["causal"], "max_new_tokens": 8}
    }
    context = MetricContext(None, QUERIES[:2], None)
    provenance: dict = {}
    columns, summary = compute_explanation_metrics(
        RESPONSES[:2], REFS[:2], settings, context=context, provenance_out=provenance
    )
    # random weights never write the format: every row unparsed, counted, rated NaN
    assert summary["llm_judge_unparsed"] == 2.0
    assert all(math.isnan(v) for v in columns["llm_judge_overall"])
    assert provenance["llm_judge"]["judge_answers"] == 6
    assert provenance["llm_judge"]["completion_tokens"] > 0


def _rate_by_answer(body: dict) -> tuple[str, dict | None]:
    """A judge that rates 3 a response holding "NEW answer", else 0."""
    n = 3 if "NEW answer" in body["messages"][0]["content"] else 0
    return "\n".join(f"{aspect}: {n}" for aspect in ASPECTS), None


def test_a_changed_response_is_asked_again(tmp_path, monkeypatch, caplog):
    """A row whose response changed (new generation settings, an edited answers file) is rated
    again: the old answer's rating is never written for the new one, and stays journaled."""
    fake = FakeOpenAI(chat_reply=_rate_by_answer)
    monkeypatch.setenv("FAKE_KEY", fake.key)
    context = MetricContext(["a"], QUERIES[:1], tmp_path / "rows")
    with serve(fake) as url:
        settings = _settings(url)
        old, _ = compute_explanation_metrics(["old answer"], REFS[:1], settings, context=context)
        new, _ = compute_explanation_metrics(["NEW answer"], REFS[:1], settings, context=context)
        again, _ = compute_explanation_metrics(["NEW answer"], REFS[:1], settings, context=context)
    assert old["llm_judge_overall"] == [0.0]
    assert new["llm_judge_overall"] == [3.0]
    assert again == new
    assert len(fake.bodies) == 2  # the new answer once, then reused
    assert "1 saved answer(s) were for another text of their row" in caplog.text
    lines = (tmp_path / "rows.llm_judge.journal.jsonl").read_text().splitlines()
    assert len(lines) == 3  # header, the old answer (kept), the new one


def test_a_journal_without_digests_is_not_reused(tmp_path, monkeypatch, caplog):
    """Answers journaled before each record held what it asked about: asked again, kept."""
    fake = FakeOpenAI(chat_reply=_rate_by_answer)
    monkeypatch.setenv("FAKE_KEY", fake.key)
    context = MetricContext(["a"], QUERIES[:1], tmp_path / "rows")
    journal = tmp_path / "rows.llm_judge.journal.jsonl"
    with serve(fake) as url:
        settings = _settings(url)
        compute_explanation_metrics(["old answer"], REFS[:1], settings, context=context)
        header, record = journal.read_text().splitlines()
        record = json.loads(record)
        record.pop("asked_sha256", None)
        journal.write_text(f"{header}\n{json.dumps(record)}\n")
        new, _ = compute_explanation_metrics(["NEW answer"], REFS[:1], settings, context=context)
    assert new["llm_judge_overall"] == [3.0]
    assert len(fake.bodies) == 2
    assert "do not record what they were asked about" in caplog.text
    assert len(journal.read_text().splitlines()) == 3


def _sentencepiece_tokenizer():
    """A tiny LLaMA-style tokenizer trained here: Metaspace pre-tokenizer and decoder, digits
    split one by one, so " 3" is the tokens "▁" and "3" and decoding "▁" alone gives ""."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(),
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.Split("\n", "isolated"),
        ]
    )
    tokenizer.decoder = decoders.Metaspace()
    texts = [GOOD.replace("3", str(n)) for n in range(4)] + [judge_prompt(QUERIES[0], "Yes.")]
    specials = ["<unk>", "<s>", "</s>"]
    tokenizer.train_from_iterator(
        texts, trainers.BpeTrainer(vocab_size=200, special_tokens=specials, show_progress=False)
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    fast.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    return fast


class _ScriptedModel:
    """Stands in for a causal model's ``generate`` (greedy, ``output_logits=True``,
    ``return_dict_in_generate=True``: ``sequences`` and one logits row per step): it writes
    ``target``, each token at logit 5 and, at a digit, the digit ``alternative`` at logit 4."""

    def __init__(self, target: list[int], alternative: dict[int, int], vocab: int) -> None:
        self.target, self.alternative, self.vocab = target, alternative, vocab

    def generate(self, ids, **kwargs):
        import types

        import torch

        assert kwargs["output_logits"] and kwargs["return_dict_in_generate"]
        assert not kwargs["do_sample"] and len(self.target) <= kwargs["max_new_tokens"]
        logits = []
        for token in self.target:
            row = torch.full((1, self.vocab), -30.0)
            row[0, token] = 5.0
            if token in self.alternative:
                row[0, self.alternative[token]] = 4.0
            logits.append(row)
        sequences = torch.cat([ids, torch.tensor([self.target])], dim=1)
        return types.SimpleNamespace(sequences=sequences, logits=tuple(logits))


def test_hf_weighted_ratings_with_a_sentencepiece_tokenizer():
    """The local judge's tokens spell its answer with a Metaspace tokenizer (LLaMA-2, Mistral):
    each token's text is what it adds to the decoded text, so the weighted ratings are found."""
    import torch

    from imhibench.score.metrics.judge import HfJudge, judge_conversation

    tokenizer = _sentencepiece_tokenizer()
    ids = tokenizer(GOOD, add_special_tokens=False)["input_ids"]
    assert "".join(tokenizer.decode([i]) for i in ids) != GOOD  # the defect's premise
    digit = {d: tokenizer.convert_tokens_to_ids(d) for d in SCORES}
    # every rating d (GOOD has no 0) written at logit 5, d - 1 at logit 4
    alternative = {digit[d]: digit[str(int(d) - 1)] for d in SCORES[1:]}
    judge = HfJudge.__new__(HfJudge)  # the checkpoint's model is scripted; the rest is real
    judge.torch, judge.device, judge.max_new_tokens = torch, "cpu", 32
    judge.tokenizer = tokenizer
    judge.model = _ScriptedModel([*ids, tokenizer.eos_token_id], alternative, len(tokenizer))
    payload, _, completion = judge_conversation(
        lambda messages: judge.ask(messages, 2), QUERIES[0], RESPONSES[0], 1
    )
    assert payload["answers"] == [GOOD] and completion == len(ids)
    high = math.exp(5) / (math.exp(5) + math.exp(4))
    expected = {aspect: d * high + (d - 1) * (1 - high) for aspect, d in payload["ratings"].items()}
    assert payload["weighted"] == pytest.approx(expected)
    assert "tokens_unaligned" not in payload


def test_hf_judge_builds_the_tokens_of_parsed_answers_only():
    """The weighted ratings need each answer token's candidates; building them decodes every
    candidate, so it is done for an answer that parses only: two unparsed answers build none,
    a parsed one builds its own once."""
    import torch

    from imhibench.score.metrics.judge import HfJudge, judge_conversation

    tokenizer = _sentencepiece_tokenizer()
    judge = HfJudge.__new__(HfJudge)
    judge.torch, judge.device, judge.max_new_tokens = torch, "cpu", 32
    judge.tokenizer = tokenizer
    built: list[int] = []
    real = judge._tokens
    judge._tokens = lambda new, logits, top: built.append(len(new)) or real(new, logits, top)
    unparsed = tokenizer("Yes.", add_special_tokens=False)["input_ids"]
    judge.model = _ScriptedModel([*unparsed, tokenizer.eos_token_id], {}, len(tokenizer))
    payload, _, _ = judge_conversation(
        lambda messages: judge.ask(messages, 2), QUERIES[0], RESPONSES[0], 2
    )
    assert payload["ratings"] is None and len(payload["answers"]) == 2 and built == []
    good = tokenizer(GOOD, add_special_tokens=False)["input_ids"]
    judge.model = _ScriptedModel([*good, tokenizer.eos_token_id], {}, len(tokenizer))
    payload, _, _ = judge_conversation(
        lambda messages: judge.ask(messages, 2), QUERIES[0], RESPONSES[0], 2
    )
    assert payload["ratings"] is not None and built == [len(good)]


def test_unaligned_tokens_are_counted_and_reported(tmp_path, monkeypatch, caplog):
    """A judge whose tokens do not spell its answer: no weighted column, and the rows are
    counted in the provenance and the log instead of vanishing silently."""

    def chat_reply(body: dict) -> tuple[str, dict]:
        tokens = [t for t in _tokens(GOOD) if t["token"] != " "]  # spaces dropped
        content = [{**t, "logprob": 0.0, "bytes": None} for t in tokens]
        return GOOD, {"content": content}

    fake = FakeOpenAI(chat_reply=chat_reply)
    monkeypatch.setenv("FAKE_KEY", fake.key)
    provenance: dict = {}
    with serve(fake) as url:
        columns, _ = compute_explanation_metrics(
            RESPONSES, REFS, _settings(url), context=MetricContext(None, QUERIES, None),
            provenance_out=provenance,
        )  # fmt: skip
    assert columns["llm_judge_overall"] == [2.0] * 4
    assert not any(name.endswith("_weighted") for name in columns)
    assert provenance["llm_judge"]["weighted_unaligned_rows"] == 4
    assert "4 of 4 rows: the judge's tokens do not spell its answer" in caplog.text
    assert "no llm_judge_*_weighted column is written" in caplog.text
