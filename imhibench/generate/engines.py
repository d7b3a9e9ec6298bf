"""Which generation loop runs a loaded causal model (``engine`` setting), and on which GPUs."""

from __future__ import annotations

import importlib

from imhibench.common.errors import ImhiBenchError
from imhibench.generate.base import (
    GenerationSettings,
    kind_engine_problem,
    resolve_dtype,
    resolve_engine,
)

# Rows per shard when the settings give no ``shard_rows``: minutes of GPU work for a 7B model.
DEFAULT_SHARD_ROWS = 256

# engine -> generator class taking (model, tokenizer, settings, device); ``vllm`` loads its own
# model (imhibench.generate.vllm_engine) and is not listed.
_GENERATORS = {
    "static": "imhibench.generate.hf:HFGenerator",
    "continuous": "imhibench.generate.continuous:ContinuousGenerator",
    "upstream": "imhibench.generate.upstream:UpstreamGenerator",
}

#: Engines that run a model on one GPU only, and why: config validation refuses them for a
#: model whose job requests several GPUs (``resources.gpu``), and they refuse a model spread
#: over several devices.
ONE_GPU_ENGINES = {
    "continuous": (
        "transformers' continuous batching allocates its paged KV cache on the model's first "
        "device, which the layers on the other GPUs cannot write to "
        "(transformers/generation/continuous_batching/cache.py)"
    ),
}


def job_gpus() -> int:
    """GPUs this job may use: the visible ones (SLURM sets CUDA_VISIBLE_DEVICES per job)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def device_map(device: str, gpus: int) -> str:
    """``auto`` (accelerate spreads the layers) on ``cuda`` with several GPUs, else ``device``.

    A model that does not fit one GPU (33B in float32: ~132 GB) needs its job to request
    enough GPUs (the model's ``resources.gpu``). An explicit ``cuda:N`` stays on that GPU.
    """
    return "auto" if device == "cuda" and gpus > 1 else device


def model_dtype(settings: GenerationSettings, device: str):
    """The torch dtype to load in: float32 for the ``upstream`` engine, as IMHI.py."""
    import torch

    if resolve_engine(settings.engine, device) == "upstream":
        return torch.float32
    return resolve_dtype(settings.dtype, device)


def make_generator(model, tokenizer, settings: GenerationSettings, device: str):
    """The generator of the settings' engine around a loaded model."""
    module, _, name = _GENERATORS[resolve_engine(settings.engine, device)].partition(":")
    return getattr(importlib.import_module(module), name)(model, tokenizer, settings, device)


def job_settings(
    kind: str, settings: dict, seed: int, device: str
) -> tuple[GenerationSettings, int]:
    """(GenerationSettings, shard_rows) of a generate job of a model of ``kind`` (causal,
    seq2seq, lora) with ``settings`` (GenerationSettings fields plus ``shard_rows``), or an
    ImhiBenchError naming the problem. These are the checks the job runs before it loads
    anything; config validation runs the same function on every selected model, so a
    combination that cannot run is refused at once, not on the GPU node."""
    from imhibench.generate.upstream import UPSTREAM_BATCH_SIZE

    shard_rows = settings.get("shard_rows", DEFAULT_SHARD_ROWS)
    if type(shard_rows) is not int or shard_rows < 1:
        raise ImhiBenchError(f"generation settings: shard_rows must be an integer >= 1: {settings}")
    fields = {k: v for k, v in settings.items() if k != "shard_rows"}
    try:
        generation = GenerationSettings(**fields, seed=seed)
    except TypeError as err:
        raise ImhiBenchError(f"generation settings {settings}: {err}") from err
    if problem := kind_engine_problem(kind, generation.engine):
        raise ImhiBenchError(f"generation settings: {problem}")
    if resolve_engine(generation.engine, device) == "upstream" and shard_rows % UPSTREAM_BATCH_SIZE:
        raise ImhiBenchError(
            f"generation settings: engine 'upstream' needs shard_rows a multiple of "
            f"{UPSTREAM_BATCH_SIZE} (upstream's batches), not {shard_rows}"
        )
    return generation, shard_rows
