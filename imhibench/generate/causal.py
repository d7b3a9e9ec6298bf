"""Causal LMs (LLaMA-2, MentaLLaMA-chat): raw query as prompt, left padding, pad = unk."""

from __future__ import annotations

from imhibench.common.errors import ImhiBenchError
from imhibench.generate.base import (
    GenerationSettings,
    require_dir,
    resolve_device,
    resolve_engine,
)
from imhibench.generate.engines import device_map, job_gpus, make_generator, model_dtype


def load_tokenizer(tokenizer_dir: str):
    """AutoTokenizer with a pad token: unk, as upstream IMHI.py, when the tokenizer has none."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if tokenizer.pad_token is None:
        if tokenizer.unk_token is not None:
            tokenizer.pad_token = tokenizer.unk_token
        elif tokenizer.eos_token is not None:
            # No unk either (e.g. Llama-3-style BPE): eos is the usual stand-in. Padded positions
            # are masked out, and EOS ends a response anyway, so this changes no output.
            tokenizer.pad_token = tokenizer.eos_token
        else:
            raise ImhiBenchError(f"{tokenizer_dir}: tokenizer has no pad, unk or eos token")
    tokenizer.padding_side = "left"
    return tokenizer


def load_causal_model(model_dir: str, settings: GenerationSettings, device: str):
    """AutoModelForCausalLM in the engine's dtype with SDPA attention, on ``device``.

    On ``cuda`` with several visible GPUs the layers are spread over them (``device_map="auto"``).
    """
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        model_dir,
        dtype=model_dtype(settings, device),
        attn_implementation="sdpa",
        device_map=device_map(device, job_gpus()),
    )


def load_causal(
    *,
    model_dir: str,
    base_model_dir: str | None = None,
    settings: GenerationSettings,
    device: str | None = None,
):
    """The ``causal`` backend."""
    if base_model_dir is not None:
        raise ImhiBenchError("base_model_dir is only used by kind 'lora', not 'causal'")
    require_dir(model_dir, "causal model", "config.json")
    device = resolve_device(device)
    if resolve_engine(settings.engine, device) == "vllm":
        from imhibench.generate.vllm_engine import VLLMGenerator

        return VLLMGenerator(model_dir, load_tokenizer(model_dir), settings, device)
    model = load_causal_model(model_dir, settings, device)
    return make_generator(model, load_tokenizer(model_dir), settings, device)
