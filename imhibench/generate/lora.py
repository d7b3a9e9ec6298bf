"""PEFT LoRA adapters (MentaLLaMA-33B-lora over vicuna-33b), merged before generation."""

from __future__ import annotations

import warnings
from pathlib import Path

from imhibench.common.errors import ImhiBenchError
from imhibench.generate.base import (
    GenerationSettings,
    require_dir,
    resolve_device,
    resolve_engine,
)
from imhibench.generate.causal import load_causal_model, load_tokenizer
from imhibench.generate.engines import make_generator

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")


def tokenizer_dir(adapter_dir: str, base_model_dir: str) -> str:
    """The adapter dir if it ships a tokenizer, else the base model's."""
    has_tokenizer = any((Path(adapter_dir) / f).is_file() for f in _TOKENIZER_FILES)
    return adapter_dir if has_tokenizer else base_model_dir


def load_lora_model(
    adapter_dir: str,
    base_model_dir: str,
    settings: GenerationSettings,
    device: str,
    merge: bool = True,
):
    """Base causal LM + adapter; merged into plain weights unless ``merge=False``."""
    from peft import PeftModel

    base = load_causal_model(base_model_dir, settings, device)
    with warnings.catch_warnings():  # peft 0.21 calls a helper transformers 5 deprecates
        warnings.filterwarnings("ignore", ".*is_gradient_checkpointing", FutureWarning)
        model = PeftModel.from_pretrained(base, adapter_dir)
    return model.merge_and_unload() if merge else model.eval()


def load_lora(
    *,
    model_dir: str,
    base_model_dir: str | None = None,
    settings: GenerationSettings,
    device: str | None = None,
):
    """The ``lora`` backend: ``model_dir`` is the adapter, ``base_model_dir`` the base model."""
    if base_model_dir is None:
        raise ImhiBenchError(
            f"lora adapter {model_dir}: base_model_dir is required (the model the adapter "
            "was trained on, e.g. vicuna-33b for MentaLLaMA-33B-lora)"
        )
    require_dir(model_dir, "lora adapter", "adapter_config.json")
    require_dir(base_model_dir, "lora base model", "config.json")
    device = resolve_device(device)
    tokenizer = load_tokenizer(tokenizer_dir(model_dir, base_model_dir))
    engine = resolve_engine(settings.engine, device)
    if engine == "vllm":
        from imhibench.generate.vllm_engine import VLLMGenerator

        return VLLMGenerator(base_model_dir, tokenizer, settings, device, lora_dir=model_dir)
    # IMHI.py ran the adapter unmerged (PeftModel); the upstream engine does the same.
    model = load_lora_model(model_dir, base_model_dir, settings, device, merge=engine != "upstream")
    return make_generator(model, tokenizer, settings, device)
