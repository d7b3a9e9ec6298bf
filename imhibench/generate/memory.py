"""Token budget of a batch from the GPU's free memory and the model's KV-cache size per token."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

#: Share of the free memory left for activations, logits and allocator fragmentation.
MEMORY_MARGIN = 0.15


def kv_bytes_per_token(config, dtype_bytes: int) -> int:
    """KV-cache bytes one token costs: layers x 2 (K and V) x KV heads x head dim x dtype bytes."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return config.num_hidden_layers * 2 * kv_heads * head_dim * dtype_bytes


def token_budget(free_bytes: int, kv_per_token: int, margin: float = MEMORY_MARGIN) -> int:
    """Tokens of KV cache that fit in ``free_bytes`` after keeping ``margin`` of it free."""
    return max(int(free_bytes * (1 - margin)) // kv_per_token, 1)


def batch_token_budget(model, device: str, configured: int) -> int:
    """``configured`` on CPU; on CUDA the smaller of it and what the free memory holds.

    Free memory is read after the model is loaded, summed over the GPUs the model occupies
    (a model spread with ``device_map="auto"`` keeps its cache beside each layer).
    """
    import torch

    if not device.startswith("cuda"):
        return configured
    devices = {d for d in getattr(model, "hf_device_map", {}).values() if isinstance(d, int)}
    devices = devices or {torch.device(device).index or 0}
    free = sum(torch.cuda.mem_get_info(d)[0] for d in devices)
    dtype_bytes = torch.finfo(model.dtype).bits // 8
    budget = token_budget(free, kv_bytes_per_token(model.config, dtype_bytes))
    log.info(
        "%.1f GB free after loading: room for %d tokens of KV cache; batch_tokens %d",
        free / 1e9, budget, min(budget, configured),
    )  # fmt: skip
    return min(budget, configured)
