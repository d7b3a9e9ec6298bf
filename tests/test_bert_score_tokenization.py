"""BERTScore on a tiny RoBERTa (byte-level BPE): tokenization as bert-score 0.3.13 intends
(leading-space marker on the first word) and a usable max length when the tokenizer has none."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import ByteLevelBPETokenizer, Tokenizer
from transformers import BertConfig, RobertaConfig, RobertaModel, RobertaTokenizer

from imhibench.score.metrics import compute_explanation_metrics
from imhibench.score.metrics.explanation import (
    UNSET_MAX_LENGTH,
    _bert_scorer,
    bert_score_tokenizer,
    needs_prefix_space,
    scorer_max_length,
)

CORPUS = [
    "I said Yes, the poster suffers from depression. Yes, the poster is sad.",
    "No, the poster does not suffer from depression. Reasoning: the post is about a game.",
    "Reasoning: the poster feels hopeless, empty and worthless every single day.",
    "Yes Yes Yes the poster shows stress because of work and family issues.",
]
PREDS = [
    "Yes, the poster suffers from depression. Reasoning: hopeless and empty.",
    "No, the poster does not suffer from depression.",
    "Reasoning: a game about work.",
]
REFS = [
    "Yes, the poster suffers from depression. Reasoning: the poster feels worthless.",
    "Yes, the poster is sad.",
    "No, the poster shows stress because of family issues.",
]
LAYERS = 2


@pytest.fixture(scope="module")
def tiny_roberta(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer RoBERTa with a trained byte-level BPE, saved like a hub checkpoint but
    without ``model_max_length`` in its tokenizer config (as some hub repositories are)."""
    directory = tmp_path_factory.mktemp("tiny-roberta")
    bpe = ByteLevelBPETokenizer()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe.train_from_iterator(CORPUS, vocab_size=500, min_frequency=1, special_tokens=specials)
    vocab, merges = bpe.save_model(str(directory))
    tokenizer = RobertaTokenizer(vocab=vocab, merges=merges)
    tokenizer.save_pretrained(directory)
    torch.manual_seed(0)
    config = RobertaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=LAYERS,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=66,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=0, eos_token_id=2,
    )  # fmt: skip
    RobertaModel(config).eval().save_pretrained(directory)
    assert "ĠYes" in tokenizer.get_vocab()
    return directory


def _reference_f1(directory: Path, pred: str, ref: str, prefix: str = " ") -> float:
    """BERTScore F1 from first principles: bert-score's documented encoding (a leading space
    before the first word, then ``<s> ... </s>``), layer ``LAYERS``, greedy cosine matching;
    ``<s>``/``</s>`` carry no weight but can be matched (bert-score without idf)."""
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    model = RobertaModel.from_pretrained(directory).eval()

    def embed(text: str) -> tuple[torch.Tensor, torch.Tensor]:
        ids = tokenizer.encode(prefix + text.strip()).ids
        assert ids[0] == 0 and ids[-1] == 2  # <s> ... </s>
        with torch.no_grad():
            hidden = model(torch.tensor([ids]), output_hidden_states=True).hidden_states[LAYERS]
        vectors = torch.nn.functional.normalize(hidden[0], dim=-1)
        weights = torch.ones(len(ids))
        weights[0] = weights[-1] = 0.0
        return vectors, weights / weights.sum()

    hyp, hyp_w = embed(pred)
    gold, gold_w = embed(ref)
    sim = hyp @ gold.T
    precision = (sim.max(dim=1).values * hyp_w).sum().item()
    recall = (sim.max(dim=0).values * gold_w).sum().item()
    return 2 * precision * recall / (precision + recall)


def test_first_word_gets_the_space_prefixed_piece(tiny_roberta: Path) -> None:
    from bert_score.utils import sent_encode

    scorer = _bert_scorer(str(tiny_roberta), LAYERS, "cpu", "float32")
    ids = sent_encode(scorer._tokenizer, "Yes, the poster suffers from depression.")
    tokens = scorer._tokenizer.convert_ids_to_tokens(ids)
    assert tokens[:3] == ["<s>", "ĠYes", ","]


def test_scores_equal_bert_score_documented_tokenization(tiny_roberta: Path) -> None:
    settings = {"bert_score": {"model": str(tiny_roberta), "num_layers": LAYERS}}
    columns, _ = compute_explanation_metrics(PREDS, REFS, settings)
    expected = [_reference_f1(tiny_roberta, p, r) for p, r in zip(PREDS, REFS, strict=True)]
    unprefixed = [
        _reference_f1(tiny_roberta, p, r, prefix="") for p, r in zip(PREDS, REFS, strict=True)
    ]
    assert columns["bert_score_f1"] == pytest.approx(expected, abs=1e-5)
    # The test tells the two tokenizations apart (transformers 5 without the fix gives these).
    assert unprefixed != pytest.approx(expected, abs=1e-5)
    assert max(abs(a - b) for a, b in zip(expected, unprefixed, strict=True)) > 0.01


def test_missing_model_max_length_becomes_the_model_length(tiny_roberta: Path) -> None:
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(tiny_roberta).model_max_length > UNSET_MAX_LENGTH
    model_config = RobertaConfig.from_pretrained(tiny_roberta)
    tokenizer = bert_score_tokenizer(str(tiny_roberta), model_config)
    assert tokenizer.model_max_length == 64  # 66 positions minus RoBERTa's offset of 2
    long_text = " ".join(CORPUS * 20)  # far beyond 64 tokens: truncated, no OverflowError
    settings = {"bert_score": {"model": str(tiny_roberta), "num_layers": LAYERS}}
    columns, _ = compute_explanation_metrics([long_text], [REFS[0]], settings)
    assert 0.0 < columns["bert_score_f1"][0] <= 1.0


def test_usable_length_per_model_family() -> None:
    assert scorer_max_length(RobertaConfig(max_position_embeddings=514)) == 512
    assert scorer_max_length(BertConfig(max_position_embeddings=512)) == 512
    assert scorer_max_length(BertConfig(max_position_embeddings=128)) == 128


def test_wordpiece_tokenizers_get_no_prefix_space(tiny_roberta: Path, demo_models) -> None:
    from transformers import AutoTokenizer

    assert needs_prefix_space(AutoTokenizer.from_pretrained(tiny_roberta))
    assert not needs_prefix_space(AutoTokenizer.from_pretrained(demo_models["bert-score"]))


def test_bert_score_dtype_is_float32_unless_asked(tiny_roberta: Path) -> None:
    assert _bert_scorer(str(tiny_roberta), LAYERS, "cpu", "float32")._model.dtype == torch.float32
    half = _bert_scorer(str(tiny_roberta), LAYERS, "cpu", "bfloat16")
    assert half._model.dtype == torch.bfloat16
    settings = {"bert_score": {"model": str(tiny_roberta), "num_layers": LAYERS}}
    full, _ = compute_explanation_metrics(PREDS, REFS, settings)
    settings["bert_score"]["dtype"] = "bfloat16"
    bf16, _ = compute_explanation_metrics(PREDS, REFS, settings)
    assert bf16["bert_score_f1"] != pytest.approx(full["bert_score_f1"], abs=1e-6)
