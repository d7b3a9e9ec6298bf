"""Causal LMs (LLaMA-2, MentaLLaMA-chat): raw query as prompt, left padding, pad = unk."""

from __future__ import annotations

from imhibench.errors import ImhiBenchError
from imhibench.generate.base import GenerationSettings, require_dir, resolve_device, resolve_dtype
from imhibench.generate.hf import HFGenerator


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
    """AutoModelForCausalLM in the settings' dtype with SDPA attention, on ``device``."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        model_dir,
        dtype=resolve_dtype(settings.dtype, device),
        attn_implementation="sdpa",
        device_map=device,
    )


def load_causal(
    *,
    model_dir: str,
    base_model_dir: str | None = None,
    settings: GenerationSettings,
    device: str | None = None,
) -> HFGenerator:
    """The ``causal`` backend."""
    if base_model_dir is not None:
        raise ImhiBenchError("base_model_dir is only used by kind 'lora', not 'causal'")
    require_dir(model_dir, "causal model", "config.json")
    device = resolve_device(device)
    model = load_causal_model(model_dir, settings, device)
    return HFGenerator(model, load_tokenizer(model_dir), settings, device)
