"""The benchmarked causal LM: the tiny demo LLaMA, LLaMA-2-7B-shaped random weights built from
their config (no download), or a local checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from imhibench.common.errors import ImhiBenchError

LLAMA2_7B = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000}  # fmt: skip


def model_source(args: argparse.Namespace, workdir: Path) -> tuple[str, str]:
    """(checkpoint dir with the tokenizer, description of the model)."""
    if args.model_dir is not None:
        return args.model_dir, args.model_dir
    from imhibench.demo_models import build_demo_models

    if args.model == "llama7b-shape" and args.tokenizer_dir:
        return (
            args.tokenizer_dir,
            f"LLaMA-2-7B shape, random weights, tokenizer {args.tokenizer_dir}",
        )
    model_dir = build_demo_models(workdir, {}, seed=args.seed)["causal"]
    if args.model == "llama7b-shape":
        return model_dir, "LLaMA-2-7B shape, random weights, demo BPE tokenizer"
    return model_dir, "tiny demo LLaMA (imhibench.demo_models), random weights"


def builds_random_weights(args: argparse.Namespace) -> bool:
    """True for ``--model llama7b-shape``: weights built from the config, not read from files."""
    return args.model_dir is None and args.model == "llama7b-shape"


def llama7b_config(tokenizer, tokenizer_dir: str):
    """The LLaMA-2-7B config, with the special tokens of ``tokenizer`` (from ``tokenizer_dir``)."""
    from transformers import LlamaConfig

    if len(tokenizer) > LLAMA2_7B["vocab_size"]:
        raise ImhiBenchError(
            f"{tokenizer_dir}: tokenizer has {len(tokenizer)} tokens; LLaMA-2 32000"
        )
    return LlamaConfig(
        **LLAMA2_7B, max_position_embeddings=4096, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
    )  # fmt: skip


def load_model(args: argparse.Namespace, model_dir: str, dtype, device: str):
    """The benchmarked causal LM in ``dtype`` on ``device``; the same weights on every call."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    if not builds_random_weights(args):
        return AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=dtype, attn_implementation="sdpa", device_map=device
        ).eval()
    from imhibench.generate.causal import load_tokenizer

    config = llama7b_config(load_tokenizer(model_dir), model_dir)
    config._attn_implementation = "sdpa"
    torch.manual_seed(args.seed)  # same seed, same device: the same random weights each time
    with torch.device(device):
        model = LlamaForCausalLM(config)
    return model.to(dtype).eval()


def weight_bytes(model) -> int:
    """Bytes of weights one forward step reads (the input embedding is a gather: left out)."""
    skip = model.get_input_embeddings().weight
    return sum(p.numel() * p.element_size() for p in model.parameters() if p is not skip)
