"""Encoder-decoder models (MentalBART, MentalT5) via AutoModelForSeq2SeqLM.

Upstream IMHI.py loads these with AutoModel, which has no LM head; we use the seq2seq class.
"""

from __future__ import annotations

from imhibench.common.errors import ImhiBenchError
from imhibench.generate.base import (
    GenerationSettings,
    kind_engine_problem,
    require_dir,
    resolve_device,
    resolve_dtype,
)
from imhibench.generate.hf import HFGenerator


def load_seq2seq(
    *,
    model_dir: str,
    base_model_dir: str | None = None,
    settings: GenerationSettings,
    device: str | None = None,
) -> HFGenerator:
    """The ``seq2seq`` backend."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    if base_model_dir is not None:
        raise ImhiBenchError("base_model_dir is only used by kind 'lora', not 'seq2seq'")
    require_dir(model_dir, "seq2seq model", "config.json")
    if problem := kind_engine_problem("seq2seq", settings.engine):
        raise ImhiBenchError(f"seq2seq model {model_dir}: {problem}")
    device = resolve_device(device)
    model = AutoModelForSeq2SeqLM.from_pretrained(
        model_dir, dtype=resolve_dtype(settings.dtype, device), device_map=device
    )
    return HFGenerator(model, AutoTokenizer.from_pretrained(model_dir), settings, device)
