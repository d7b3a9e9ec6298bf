"""Tests for the hand-written BARTScorer, on a tiny random BART saved like a real checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from tokenizers import ByteLevelBPETokenizer, processors
from transformers import BartConfig, BartForConditionalGeneration, PreTrainedTokenizerFast
from transformers.models.bart.modeling_bart import shift_tokens_right

from imhibench.common.errors import ImhiBenchError
from imhibench.score.metrics import compute_explanation_metrics
from imhibench.score.metrics.bartscore import BARTScorer

CORPUS = [
    "The poster shows signs of depression because they feel hopeless and empty.",
    "No, the post is about a football match and shows no sign of stress.",
    "The cause of stress is jobs and careers: the user lost their job last week.",
    "I can't sleep at night and I feel worthless every single day.",
]
SRCS = ["the user feels hopeless", "no stress at all in this post about sport", "job loss"]
TGTS = ["The poster shows signs of depression.", "No.", "The cause is jobs and careers, clearly."]


def _tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE with BART's special tokens and ``<s> ... </s>`` post-processing."""
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=400, min_frequency=1, special_tokens=specials)
    bpe.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
    )


def _tiny_config(vocab_size: int) -> BartConfig:
    return BartConfig(
        vocab_size=vocab_size,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
    )


def _random_model(vocab_size: int, seed: int) -> BartForConditionalGeneration:
    torch.manual_seed(seed)
    model = BartForConditionalGeneration(_tiny_config(vocab_size)).eval()
    with torch.no_grad():  # make the bias non-trivial so the test notices if it were dropped
        model.final_logits_bias.normal_(0, 0.5)
    return model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny-bart")
    tokenizer = _tiny_tokenizer()
    assert tokenizer.pad_token_id == 1
    _random_model(len(tokenizer), seed=0).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def scorer(checkpoint: Path) -> BARTScorer:
    return BARTScorer(str(checkpoint))


def _manual_score(model: BartForConditionalGeneration, tokenizer, src: str, tgt: str) -> float:
    """Score one unpadded pair from text."""
    src_ids = tokenizer(src, return_tensors="pt").input_ids
    tgt_ids = tokenizer(tgt, return_tensors="pt").input_ids
    return _manual_score_ids(model, src_ids, tgt_ids)


def _manual_score_ids(
    model: BartForConditionalGeneration, src_ids: torch.Tensor, tgt_ids: torch.Tensor
) -> float:
    """Encoder, then decoder on the right-shifted target; mean log-prob of the target tokens."""
    config = model.config
    with torch.no_grad():
        encoded = model.model.encoder(input_ids=src_ids).last_hidden_state
        decoder_in = shift_tokens_right(tgt_ids, config.pad_token_id, config.decoder_start_token_id)
        hidden = model.model.decoder(
            input_ids=decoder_in, encoder_hidden_states=encoded
        ).last_hidden_state
        logits = model.lm_head(hidden) + model.final_logits_bias
        log_probs = torch.log_softmax(logits, dim=-1)
        token_log_probs = log_probs[0].gather(1, tgt_ids[0].unsqueeze(1)).squeeze(1)
    return token_log_probs.mean().item()


def test_scores_match_manual_forward(scorer: BARTScorer) -> None:
    expected = [
        _manual_score(scorer.model, scorer.tokenizer, s, t) for s, t in zip(SRCS, TGTS, strict=True)
    ]
    batched = scorer.score(SRCS, TGTS, batch_size=3)
    single = scorer.score(SRCS, TGTS, batch_size=1)
    assert batched == pytest.approx(expected, abs=1e-5)
    assert single == pytest.approx(expected, abs=1e-5)
    assert all(value < 0 for value in batched)
    assert len(set(TGTS)) == 3 and len({len(t) for t in TGTS}) == 3  # padding is exercised


def test_matches_reference_labels_code_path(scorer: BARTScorer) -> None:
    """neulab/BARTScore passes ``labels`` and lets BART shift them; the results must agree."""
    tok = scorer.tokenizer
    src = tok(SRCS, max_length=1024, truncation=True, padding=True, return_tensors="pt")
    tgt = tok(TGTS, max_length=1024, truncation=True, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = scorer.model(
            input_ids=src.input_ids, attention_mask=src.attention_mask, labels=tgt.input_ids
        ).logits
    loss_fct = torch.nn.NLLLoss(reduction="none", ignore_index=scorer.model.config.pad_token_id)
    loss = loss_fct(
        torch.log_softmax(logits, dim=-1).view(-1, logits.size(-1)), tgt.input_ids.view(-1)
    )
    expected = (-(loss.view(len(TGTS), -1).sum(1) / tgt.attention_mask.sum(1))).tolist()
    assert scorer.score(SRCS, TGTS, batch_size=4) == pytest.approx(expected, abs=1e-5)


def test_weights_file_is_loaded(checkpoint: Path, scorer: BARTScorer, tmp_path: Path) -> None:
    other = _random_model(len(scorer.tokenizer), seed=1)
    weights = tmp_path / "bart_score.pth"
    torch.save(other.state_dict(), weights)
    loaded = BARTScorer(str(checkpoint), weights_file=str(weights))
    expected = [
        _manual_score(other, scorer.tokenizer, s, t) for s, t in zip(SRCS, TGTS, strict=True)
    ]
    assert loaded.score(SRCS, TGTS) == pytest.approx(expected, abs=1e-5)
    assert loaded.score(SRCS, TGTS) != pytest.approx(scorer.score(SRCS, TGTS), abs=1e-3)


def test_bad_weights_file_raises(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ImhiBenchError, match="does not exist"):
        BARTScorer(str(checkpoint), weights_file=str(tmp_path / "missing.pth"))
    wrong = tmp_path / "wrong.pth"
    torch.save({"model.shared.weight": torch.zeros(3, 3)}, wrong)
    with pytest.raises(ImhiBenchError, match="does not fit"):
        BARTScorer(str(checkpoint), weights_file=str(wrong))


def test_long_target_is_truncated(checkpoint: Path) -> None:
    long_text = " ".join(CORPUS * 10)  # far beyond the 64 positions of the tiny model
    short = BARTScorer(str(checkpoint), max_length=32)
    scores = short.score([long_text, "job loss"], ["job loss", long_text], batch_size=2)
    assert all(math.isfinite(value) for value in scores)
    tgt_ids = short.tokenizer(long_text, max_length=32, truncation=True, return_tensors="pt")
    assert tgt_ids.input_ids.shape == (1, 32) and tgt_ids.input_ids[0, -1].item() == 2
    src_ids = short.tokenizer("job loss", return_tensors="pt").input_ids
    expected = _manual_score_ids(short.model, src_ids, tgt_ids.input_ids)
    assert scores[1] == pytest.approx(expected, abs=1e-5)


def test_score_input_errors(scorer: BARTScorer) -> None:
    assert scorer.score([], []) == []
    with pytest.raises(ImhiBenchError, match="2 sources but 1 targets"):
        scorer.score(["a", "b"], ["a"])
    with pytest.raises(ImhiBenchError, match="batch_size"):
        scorer.score(["a"], ["a"], batch_size=0)
    with pytest.raises(ImhiBenchError, match="not found"):
        BARTScorer("/no/such/checkpoint")


def test_registry_direction_and_summary(checkpoint: Path, scorer: BARTScorer) -> None:
    """src = prediction (generated), tgt = reference (gold), as MentaLLaMA's score.py."""
    settings = {"bart_score": {"checkpoint": str(checkpoint), "batch_size": 2}}
    columns, summary = compute_explanation_metrics(SRCS, TGTS, settings)
    expected = scorer.score(SRCS, TGTS)
    assert columns["bart_score"] == pytest.approx(expected, abs=1e-6)
    assert columns["bart_score"] != pytest.approx(scorer.score(TGTS, SRCS), abs=1e-3)
    assert summary["bart_score"] == pytest.approx(sum(expected) / 3)


def test_out_of_memory_halves_batch_then_raises(
    scorer: BARTScorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = scorer.score(SRCS, TGTS, batch_size=1)
    real = BARTScorer._score_batch
    sizes: list[int] = []

    def fake(self: BARTScorer, srcs: list[str], tgts: list[str]) -> list[float]:
        sizes.append(len(srcs))
        if len(srcs) > 1:
            raise torch.cuda.OutOfMemoryError("fake OOM")
        return real(self, srcs, tgts)

    monkeypatch.setattr(BARTScorer, "_score_batch", fake)
    assert scorer.score(SRCS, TGTS, batch_size=4) == pytest.approx(expected, abs=1e-6)
    assert sizes[:3] == [3, 2, 1]

    def always_oom(self: BARTScorer, srcs: list[str], tgts: list[str]) -> list[float]:
        raise torch.cuda.OutOfMemoryError("fake OOM")

    monkeypatch.setattr(BARTScorer, "_score_batch", always_oom)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        scorer.score(SRCS, TGTS, batch_size=2)


def test_out_of_memory_releases_the_cache_after_leaving_the_handler(
    scorer: BARTScorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside ``except`` the traceback still holds the failed batch's frames: the CUDA cache is
    emptied only once they are gone (the generation engines' rule, issue 23)."""
    import weakref

    class Batch:  # stands for the failed batch's tensors
        pass

    real = BARTScorer._score_batch
    failed, alive_at_release = [], []

    def fake(self: BARTScorer, srcs: list[str], tgts: list[str]) -> list[float]:
        batch = Batch()
        if len(srcs) > 1:
            failed.append(weakref.ref(batch))
            raise torch.cuda.OutOfMemoryError("fake OOM")
        return real(self, srcs, tgts)

    monkeypatch.setattr(BARTScorer, "_score_batch", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: alive_at_release.append(failed[-1]()))
    scorer.score(SRCS, TGTS, batch_size=4)
    assert alive_at_release == [None, None]  # 3 then 2 rows failed; both freed before the release
