"""Explanation-quality metrics: each whole response scored against the whole gold answer
("<label>. Reasoning: ..."), as upstream ``src/score.py`` does (not the explanations alone).

Mirrors MentaLLaMA ``src/score.py`` (ROUGE, BLEU, BERTScore, BARTScore) without HF ``evaluate``,
which needs the Hugging Face hub at run time. Each metric is a small function registered under
the name used in the ``settings`` mapping of :func:`compute_explanation_metrics`.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

from imhibench.common.errors import ImhiBenchError
from imhibench.common.progress import Progress
from imhibench.score.metrics.registry import (
    _REGISTRY,
    _TAKES_CONTEXT,
    MetricContext,
    MetricOutput,
    _check_inputs,
    _mean,
    _options,
    _positive_int,
    available_explanation_metrics,
    register_explanation_metric,
)


@register_explanation_metric("rouge")
def rouge(
    predictions: list[str], references: list[str], options: dict[str, Any], device: str
) -> MetricOutput:
    """ROUGE-1/2/L F-measure per row, with the settings of HF ``evaluate``'s ``rouge``.

    ``evaluate`` scores with ``rouge_score`` (no stemmer, default tokenizer) and reports the
    median of an unseeded bootstrap over rows, which is not reproducible; the summary here is
    the plain mean of the per-row F-measures, the quantity that bootstrap estimates.
    """
    from rouge_score import rouge_scorer

    _options("rouge", options, required=(), defaults={})
    keys = ("rouge1", "rouge2", "rougeL")
    scorer = rouge_scorer.RougeScorer(list(keys), use_stemmer=False)
    rows = [scorer.score(ref, pred) for pred, ref in zip(predictions, references, strict=True)]
    columns = {key: [row[key].fmeasure for row in rows] for key in keys}
    return MetricOutput(columns, {key: _mean(values) for key, values in columns.items()})


def _ngram_counts(tokens: list[str], max_order: int) -> Counter[tuple[str, ...]]:
    """Counts of all n-grams of order 1..max_order."""
    return Counter(
        tuple(tokens[i : i + n])
        for n in range(1, max_order + 1)
        for i in range(len(tokens) - n + 1)
    )


def corpus_bleu(
    hypotheses: list[list[str]], references: list[list[str]], max_order: int = 4
) -> float:
    """Unsmoothed corpus BLEU of tensorflow/nmt ``compute_bleu``, one reference per hypothesis.

    Where nmt divides by zero (no hypothesis or no reference tokens at all) this returns 0.0.
    """
    matches = [0] * max_order
    possible = [0] * max_order
    hyp_len = ref_len = 0
    for hyp, ref in zip(hypotheses, references, strict=True):
        hyp_len += len(hyp)
        ref_len += len(ref)
        overlap = _ngram_counts(hyp, max_order) & _ngram_counts(ref, max_order)
        for ngram, count in overlap.items():
            matches[len(ngram) - 1] += count
        for n in range(1, max_order + 1):
            possible[n - 1] += max(len(hyp) - n + 1, 0)
    precisions = [m / p if p > 0 else 0.0 for m, p in zip(matches, possible, strict=True)]
    if min(precisions) <= 0 or ref_len == 0:
        return 0.0
    geo_mean = math.exp(sum(math.log(p) for p in precisions) / max_order)
    ratio = hyp_len / ref_len
    brevity = 1.0 if ratio > 1.0 else math.exp(1 - 1 / ratio)
    return geo_mean * brevity


@functools.cache
def _tokenizer_13a() -> Callable[[str], str]:
    """sacrebleu's mteval-v13a tokenizer (the one HF ``evaluate``'s ``bleu`` copies)."""
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    return Tokenizer13a()


@register_explanation_metric("bleu")
def bleu(
    predictions: list[str], references: list[str], options: dict[str, Any], device: str
) -> MetricOutput:
    """Corpus BLEU (0..1) equal to HF ``evaluate``'s ``bleu``: nmt counting over 13a tokens.

    Not sacrebleu's ``corpus_bleu``: that right-strips each line before tokenizing, which
    differs from ``evaluate`` for text ending in a hyphen and line break.
    """
    _options("bleu", options, required=(), defaults={})
    tokenize = _tokenizer_13a()
    hyps = [tokenize(text).split() for text in predictions]
    refs = [tokenize(text).split() for text in references]
    return MetricOutput({}, {"bleu": corpus_bleu(hyps, refs)})


def _patch_tokenizer_for_bert_score(tokenizer: Any) -> None:
    """Restore ``build_inputs_with_special_tokens`` for bert-score 0.3.13 under transformers 5.

    bert-score encodes an empty (or whitespace-only) sentence as
    ``tokenizer.build_inputs_with_special_tokens([])``, a method transformers 5 removed.
    """
    if hasattr(tokenizer, "build_inputs_with_special_tokens"):
        return

    def build_inputs_with_special_tokens(token_ids: list[int]) -> list[int]:
        if token_ids:
            raise NotImplementedError("only the empty-sentence call of bert-score is supported")
        return tokenizer("", add_special_tokens=True)["input_ids"]

    tokenizer.build_inputs_with_special_tokens = build_inputs_with_special_tokens


# Tokenizer classes that bert-score 0.3.13 encodes with ``add_prefix_space=True`` (GPT-2-style
# byte-level BPE: under transformers 4 these were GPT2Tokenizer or RobertaTokenizer subclasses).
PREFIX_SPACE_TOKENIZERS = frozenset(
    {"GPT2Tokenizer", "RobertaTokenizer", "BartTokenizer", "DebertaTokenizer",
     "LongformerTokenizer", "LEDTokenizer"}
)  # fmt: skip
# Tokenizers without a real length limit report a huge sentinel (transformers' 1e30).
UNSET_MAX_LENGTH = 1_000_000
# Position-id offset of models whose positions start after the padding index.
POSITION_OFFSET = {"roberta": 2, "xlm-roberta": 2, "camembert": 2, "longformer": 2}


def needs_prefix_space(tokenizer: Any) -> bool:
    """Whether bert-score means ``tokenizer`` to mark the first word with a leading space."""
    names = {cls.__name__.removesuffix("Fast") for cls in type(tokenizer).__mro__}
    return bool(names & PREFIX_SPACE_TOKENIZERS)


def scorer_max_length(model_config: Any) -> int:
    """Usable input length of a scorer model: its position table minus the position offset."""
    positions = getattr(model_config, "max_position_embeddings", None)
    if not isinstance(positions, int) or positions < 1:
        return 512
    return positions - POSITION_OFFSET.get(model_config.model_type, 0)


def bert_score_tokenizer(model: str, model_config: Any, use_fast: bool = False) -> Any:
    """The tokenizer bert-score would use, built as bert-score 0.3.13 intends under
    transformers 5: BPE tokenizers get ``add_prefix_space=True`` at construction (transformers
    5 ignores it per call), and a missing ``model_max_length`` becomes the model's usable
    length (else bert-score's ``truncation`` overflows on the sentinel)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model, use_fast=use_fast)
    if needs_prefix_space(tokenizer):
        tokenizer = AutoTokenizer.from_pretrained(model, use_fast=use_fast, add_prefix_space=True)
    if tokenizer.model_max_length is None or tokenizer.model_max_length > UNSET_MAX_LENGTH:
        tokenizer.model_max_length = scorer_max_length(model_config)
    _patch_tokenizer_for_bert_score(tokenizer)
    return tokenizer


@functools.lru_cache(maxsize=1)
def _bert_scorer(model: str, num_layers: int, device: str, dtype: str) -> Any:
    """Build (and keep the last) ``bert_score.BERTScorer``; settings as HF ``evaluate``'s."""
    from bert_score import BERTScorer

    from imhibench.score.metrics.bartscore import resolve_dtype

    scorer = BERTScorer(model_type=model, num_layers=num_layers, device=device)
    scorer._tokenizer = bert_score_tokenizer(model, scorer._model.config)
    scorer._model.to(dtype=resolve_dtype(dtype, "bert_score"))
    return scorer


def _bert_num_layers(model: str, num_layers: Any) -> int:
    """``num_layers`` as given, else bert-score's tuned default for a known model name."""
    if num_layers is None:
        from bert_score.utils import model2layers

        if model not in model2layers:
            raise ImhiBenchError(
                f"settings['bert_score']: give num_layers for model {model!r} "
                "(bert-score has no default for it)"
            )
        return model2layers[model]
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 0:
        raise ImhiBenchError(
            f"settings['bert_score']['num_layers'] must be an int >= 0, got {num_layers!r}"
        )
    return num_layers


def _bert_f1_in_a_fixed_order(
    scorer: Any, predictions: list[str], references: list[str], batch_size: int
) -> Any:
    """BERTScore F1 as ``BERTScorer.score`` computes it (no idf: [CLS] and [SEP] weigh 0, every
    other token 1), with its texts embedded in a fixed order.

    ``bert_score.utils.bert_cos_score_idf`` embeds the distinct texts longest first, ties in the
    order of a ``set``, i.e. of Python's per-process string hashing: which texts share a padded
    batch changes from one process to the next, and float32 results with it (seen: BERTScore F1
    1.8e-7 apart between two runs of the same job). Here ties are broken by the text itself, so
    a job gives the same numbers in every process; each text's embedding, the greedy matching
    and the F1 are bert-score's own functions."""
    from collections import defaultdict

    import torch
    from bert_score.utils import get_bert_embedding, greedy_cos_idf
    from torch.nn.utils.rnn import pad_sequence

    tokenizer, model = scorer._tokenizer, scorer._model
    idf = defaultdict(lambda: 1.0)
    idf[tokenizer.sep_token_id] = 0
    idf[tokenizer.cls_token_id] = 0
    texts = sorted(set(references) | set(predictions), key=lambda s: (-len(s.split(" ")), s))
    stats = {}
    for start in range(0, len(texts), batch_size):
        batch = texts[start : start + batch_size]
        embeddings, masks, padded_idf = get_bert_embedding(
            batch, model, tokenizer, idf, device=scorer.device, all_layers=False
        )
        for i, text in enumerate(batch):
            length = int(masks[i].sum().item())
            stats[text] = (embeddings[i, :length].cpu(), padded_idf[i, :length].cpu())

    def padded(batch: list[str]) -> tuple[Any, Any, Any]:
        embeddings, weights = zip(*(stats[text] for text in batch), strict=True)
        lengths = torch.tensor([e.size(0) for e in embeddings])
        mask = torch.arange(int(lengths.max())).expand(len(batch), -1) < lengths.unsqueeze(1)
        device = next(model.parameters()).device
        return (
            pad_sequence([e.to(device) for e in embeddings], batch_first=True, padding_value=2.0),
            mask.to(device),
            pad_sequence([w.to(device) for w in weights], batch_first=True),
        )

    f1 = []
    with torch.no_grad():
        for start in range(0, len(references), batch_size):
            refs = padded(references[start : start + batch_size])
            hyps = padded(predictions[start : start + batch_size])
            f1.append(greedy_cos_idf(*refs, *hyps, False)[2].cpu())
    return torch.cat(f1)


@register_explanation_metric("bert_score")
def bert_score(
    predictions: list[str], references: list[str], options: dict[str, Any], device: str
) -> MetricOutput:
    """BERTScore F1 per row (no idf, no baseline rescaling: HF ``evaluate``'s defaults)."""
    opts = _options(
        "bert_score",
        options,
        required=("model",),
        defaults={"num_layers": None, "batch_size": 64, "dtype": "float32"},
    )
    model = str(opts["model"])
    num_layers = _bert_num_layers(model, opts["num_layers"])
    batch_size = _positive_int("bert_score", "batch_size", opts["batch_size"])
    scorer = _bert_scorer(model, num_layers, device, str(opts["dtype"]))
    f1 = _bert_f1_in_a_fixed_order(scorer, predictions, references, batch_size)
    column = [float(value) for value in f1.tolist()]
    return MetricOutput({"bert_score_f1": column}, {"bert_score_f1": _mean(column)})


@functools.lru_cache(maxsize=1)
def _bart_scorer(
    checkpoint: str, weights_file: str | None, max_length: int, device: str, dtype: str
) -> Any:
    """Build (and keep the last) :class:`BARTScorer`."""
    from imhibench.score.metrics.bartscore import BARTScorer

    return BARTScorer(
        checkpoint, device=device, max_length=max_length, weights_file=weights_file, dtype=dtype
    )


@register_explanation_metric("bart_score")
def bart_score(
    predictions: list[str], references: list[str], options: dict[str, Any], device: str
) -> MetricOutput:
    """BARTScore per row with src = whole response, tgt = whole gold answer, as MentaLLaMA does."""
    opts = _options(
        "bart_score",
        options,
        required=("checkpoint",),
        defaults={"weights_file": None, "batch_size": 4, "max_length": 1024, "dtype": "float32"},
    )
    weights = None if opts["weights_file"] is None else str(opts["weights_file"])
    max_length = _positive_int("bart_score", "max_length", opts["max_length"])
    batch_size = _positive_int("bart_score", "batch_size", opts["batch_size"])
    scorer = _bart_scorer(str(opts["checkpoint"]), weights, max_length, device, str(opts["dtype"]))
    column = scorer.score(predictions, references, batch_size=batch_size)
    return MetricOutput({"bart_score": column}, {"bart_score": _mean(column)})


def compute_explanation_metrics(
    predictions: list[str],
    references: list[str],
    settings: dict[str, dict[str, Any]],
    device: str = "cpu",
    context: MetricContext | None = None,
    provenance_out: dict[str, Any] | None = None,
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Run the metrics named in ``settings`` (name -> options) on row-aligned texts;
    ``context`` (row ids, queries, journal location) goes to the metrics that take it, and
    each metric's provenance (if any) is put in ``provenance_out[name]``.

    Returns ``(columns, summary)``: per-row score columns (each as long as ``predictions``)
    and corpus-level values. Any failure raises; nothing is silently skipped.
    """
    _check_inputs(predictions, references)
    if not isinstance(settings, dict):
        raise ImhiBenchError(f"explanation metrics: settings must be a mapping, got {settings!r}")
    unknown = sorted(set(settings) - set(_REGISTRY))
    if unknown:
        raise ImhiBenchError(
            f"explanation metrics: unknown metric(s) {unknown}; "
            f"known: {available_explanation_metrics()}"
        )
    columns: dict[str, list[float]] = {}
    summary: dict[str, float] = {}
    for name, options in settings.items():
        progress = Progress(name, len(predictions), count_tokens=False)
        args = [list(predictions), list(references), options, device]
        if name in _TAKES_CONTEXT:
            args.append(context or MetricContext())
        output = _REGISTRY[name](*args)
        progress.batch(len(predictions), 0)
        progress.log("done: ")
        columns.update(output.columns)
        summary.update(output.summary)
        if output.provenance and provenance_out is not None:
            provenance_out[name] = output.provenance
    return columns, summary


# Metrics defined in their own modules register themselves on import.
import imhibench.score.metrics.gptscore  # noqa: E402
import imhibench.score.metrics.judge  # noqa: E402,F401
