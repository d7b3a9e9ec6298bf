"""GPTScore: the hf backend against a direct teacher-forced computation, the api backend
against the loopback fake serving the same tiny model's log-probabilities, and upstream's
arithmetic on a hand-made offsets example."""

from __future__ import annotations

import json
import math

import pytest
from fake_openai import FakeOpenAI, serve

from imhibench.common.errors import ImhiBenchError
from imhibench.score.metrics import compute_explanation_metrics
from imhibench.score.metrics.explanation import MetricContext
from imhibench.score.metrics.gptscore import (
    TokenLogprobs,
    clean_score,
    gpt_score_hf,
    score_row,
    upstream_score,
)

REFS = [
    "Yes, the poster suffers from depression. Reasoning: The poster describes a low mood.",
    "No, the poster does not suffer from depression. Reasoning: The post asks for advice.",
    "The stress cause of this post is work.",
]
PREDS = [
    "Yes, the poster suffers from depression. Reasoning: hopelessness and trouble sleeping.",
    "No. Reasoning: The poster is asking for advice.",
    "Reasoning: The poster worries about deadlines, their boss and losing their job, so work.",
]


def teacher_forced(model_dir: str):
    """A direct, unbatched teacher-forced computation: text -> (tokens, offsets, logprobs)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()

    def compute(text: str):
        enc = tokenizer(text, return_offsets_mapping=True)
        ids = torch.tensor([enc["input_ids"]])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]
        values = [None]
        for k in range(1, ids.shape[1]):
            values.append(float(torch.log_softmax(logits[k - 1], dim=-1)[ids[0, k]]))
        tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"])
        return tokens, [start for start, _ in enc["offset_mapping"]], values

    return compute


def test_hf_equals_direct_teacher_forcing(demo_models, one_torch_thread):
    from transformers import AutoTokenizer

    model = demo_models["causal"]
    compute = teacher_forced(model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    expected = []
    for ref, pred in zip(REFS, PREDS, strict=True):
        # the answer's tokens: those after the tokens of "reference\n" (a prefix here)
        prefix = len(tokenizer(ref + "\n")["input_ids"])
        _, _, values = compute(ref + "\n" + pred)
        assert len(values) > prefix
        expected.append(sum(values[prefix:]) / len(values[prefix:]))
    got = gpt_score_hf(REFS, PREDS, model, batch_size=2)  # padded batches of unequal rows
    assert got == pytest.approx(expected, abs=1e-5)
    assert len(set(got)) == 3


def test_hf_through_the_registry(demo_models, one_torch_thread):
    settings = {"gpt_score": {"backend": "hf", "checkpoint": demo_models["causal"]}}
    provenance: dict = {}
    columns, summary = compute_explanation_metrics(
        [*PREDS, ""], [*REFS, REFS[0]], settings, provenance_out=provenance
    )
    assert math.isnan(columns["gpt_score"][3])  # an empty answer has no tokens to score
    assert summary["gpt_score_unscored"] == 1.0
    assert summary["gpt_score"] == pytest.approx(sum(columns["gpt_score"][:3]) / 3)
    assert provenance["gpt_score"]["arithmetic"] == "clean"


def test_upstream_formula_on_hand_made_offsets():
    # text = "Good." + "Fine now" ; tokens: "Go" "od" "." "Fine" " now"
    tokens = TokenLogprobs([0, 2, 4, 5, 9], [None, -1.0, -2.0, -3.0, -4.0], 13)
    reference = "Good."
    # upstream: i = text_offset.index(len(ref) - 1) = index(4) = 2; mean of logprobs[2:-1]
    # = (-2 + -3) / (5 - 2 - 1)
    assert upstream_score(tokens, reference) == pytest.approx(-2.5)
    # clean: every token holding an answer character (from offset 5): -3, -4
    assert clean_score(tokens, 5) == pytest.approx(-3.5)
    # no token begins at the reference's last character: upstream fails; scored NaN here
    shifted = TokenLogprobs([0, 3, 5, 9], [None, -1.0, -3.0, -4.0], 13)
    assert math.isnan(score_row(shifted, reference, 5, upstream=True))
    # index 0 becomes 1 (upstream's `if i == 0: i = i + 1`)
    one = TokenLogprobs([0, 1, 2], [None, -1.0, -5.0], 3)
    assert upstream_score(one, "G") == pytest.approx(-1.0)


def test_upstream_option_concatenates_without_separator(demo_models, one_torch_thread):
    compute = teacher_forced(demo_models["causal"])
    ref, pred = REFS[2], PREDS[2]
    _, offsets, values = compute(ref + pred)
    i = max(offsets.index(len(ref) - 1), 1)
    expected = sum(values[i:-1]) / (len(offsets) - i - 1)
    got = gpt_score_hf([ref], [pred], demo_models["causal"], upstream=True)
    assert got[0] == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ImhiBenchError, match="no separator"):
        gpt_score_hf([ref], [pred], demo_models["causal"], upstream=True, separator="\n")


def _api_settings(url: str, **api) -> dict:
    """gpt_score through the loopback fake (key from FAKE_KEY, short back-off)."""
    api = {"base_url": url, "model": "tiny", "api_key_env": "FAKE_KEY", "backoff_s": 0.01, **api}
    return {"gpt_score": {"backend": "api", "api": api}}


@pytest.mark.parametrize("upstream", [False, True])
def test_api_equals_hf(demo_models, one_torch_thread, tmp_path, monkeypatch, upstream):
    compute = teacher_forced(demo_models["causal"])
    fake = FakeOpenAI(prompt_logprobs=compute, faults={})
    monkeypatch.setenv("FAKE_KEY", fake.key)
    with serve(fake) as url:
        settings = _api_settings(url)
        settings["gpt_score"]["upstream"] = upstream
        context = MetricContext(["a", "b", "c"], None, tmp_path / "rows")
        provenance: dict = {}
        columns, _ = compute_explanation_metrics(
            PREDS, REFS, settings, context=context, provenance_out=provenance
        )
    hf = gpt_score_hf(REFS, PREDS, demo_models["causal"], upstream=upstream)
    assert columns["gpt_score"] == pytest.approx(hf, abs=1e-5)
    body = fake.bodies[0]
    assert (body["echo"], body["logprobs"], body["max_tokens"]) == (True, 1, 1)
    record = provenance["gpt_score"]
    assert record["prompt_tokens"] == sum(len(compute(b["prompt"])[0]) for b in fake.bodies)
    journal = tmp_path / "rows.gpt_score.journal.jsonl"
    assert len(journal.read_text().splitlines()) == 4  # header + 3 rows
    assert fake.key not in journal.read_text()
    assert fake.key not in json.dumps(record)


def test_api_resumes_from_journal_and_retries(demo_models, one_torch_thread, tmp_path, monkeypatch):
    compute = teacher_forced(demo_models["causal"])
    fake = FakeOpenAI(prompt_logprobs=compute, sequence=["500", "429"])
    monkeypatch.setenv("FAKE_KEY", fake.key)
    with serve(fake) as url:
        settings = _api_settings(url, concurrency=1)
        context = MetricContext(["a", "b", "c"], None, tmp_path / "rows")
        first, _ = compute_explanation_metrics(PREDS, REFS, settings, context=context)
        asked = len(fake.requests)
        assert asked == 5  # 3 rows + 2 retries
        again, _ = compute_explanation_metrics(PREDS, REFS, settings, context=context)
        assert len(fake.requests) == asked  # every row came from the journal
    assert again == first


def test_api_without_prompt_logprobs_is_malformed(tmp_path, monkeypatch):
    fake = FakeOpenAI()  # plain completions, logprobs null
    monkeypatch.setenv("FAKE_KEY", fake.key)
    with serve(fake) as url:
        settings = _api_settings(url, max_attempts=2)
        with pytest.raises(ImhiBenchError, match="no prompt log-probabilities"):
            compute_explanation_metrics(PREDS[:1], REFS[:1], settings)


def test_bad_options_name_the_key(demo_models):
    with pytest.raises(ImhiBenchError, match="backend"):
        compute_explanation_metrics(PREDS, REFS, {"gpt_score": {"backend": "gpu"}})
    with pytest.raises(ImhiBenchError, match="needs a checkpoint"):
        compute_explanation_metrics(PREDS, REFS, {"gpt_score": {"backend": "hf"}})


def _char_logprobs(prompt: str) -> tuple[list[str], list[int], list]:
    """One token per character, each -1 where the text holds "NEW", else -2."""
    value = -1.0 if "NEW" in prompt else -2.0
    return list(prompt), list(range(len(prompt))), [None] + [value] * (len(prompt) - 1)


def test_api_asks_again_when_the_answer_changed(tmp_path, monkeypatch, caplog):
    """A row whose response changed is scored again, never with the old text's
    log-probabilities; the old answer stays in the journal."""
    fake = FakeOpenAI(prompt_logprobs=_char_logprobs)
    monkeypatch.setenv("FAKE_KEY", fake.key)
    context = MetricContext(["a"], None, tmp_path / "rows")
    with serve(fake) as url:
        settings = _api_settings(url)
        old, _ = compute_explanation_metrics(["old answer"], REFS[:1], settings, context=context)
        new, _ = compute_explanation_metrics(["NEW answer"], REFS[:1], settings, context=context)
        again, _ = compute_explanation_metrics(["NEW answer"], REFS[:1], settings, context=context)
    assert old["gpt_score"] == [pytest.approx(-2.0)]
    assert new["gpt_score"] == [pytest.approx(-1.0)]
    assert again == new
    assert len(fake.bodies) == 2
    assert "another text of their row" in caplog.text
    assert len((tmp_path / "rows.gpt_score.journal.jsonl").read_text().splitlines()) == 3
