"""The ``continuous`` engine: transformers continuous batching (``model.generate_batch``).

A finished answer's slot is refilled at once instead of riding along until the longest answer
of its batch ends. The whole shard is handed over at once; transformers schedules it. Greedy
only (``decoding: greedy``, no ``min_new_tokens``), on one device (``ONE_GPU_ENGINES``).
"""

from __future__ import annotations

import logging

from imhibench.common.devices import release_cached_memory
from imhibench.common.errors import ImhiBenchError
from imhibench.generate.base import BatchCallback, GenerationSettings, cut_at_eos
from imhibench.generate.engines import ONE_GPU_ENGINES
from imhibench.generate.hf import HFGenerator

log = logging.getLogger(__name__)

#: Tokens per forward pass on CPU. transformers' default sizing targets GPUs; on CPU larger
#: steps only cost memory (10 DR queries, tiny LLaMA, 2-core CPU: 1.3 GB peak RSS and 7.1 s with
#: the default, 0.58 GB and 4.0 s with 1024).
CPU_STEP_TOKENS = 1024
#: Share of the free GPU memory transformers sizes its paged cache (and the tensors sized with
#: it) to: its own default (0.9; 0.8 with logit processors) until an out-of-memory, then halved
#: at each one, for the rest of the job; below ``MIN_MEMORY_SHARE`` the job stops.
DEFAULT_MEMORY_SHARE = 0.9
MIN_MEMORY_SHARE = 0.05


class ContinuousGenerator(HFGenerator):
    """HFGenerator whose batches are scheduled by transformers' continuous batching."""

    def __init__(self, model, tokenizer, settings: GenerationSettings, device: str | None = None):
        if settings.decoding != "greedy" or settings.min_new_tokens:
            raise ImhiBenchError(
                "engine 'continuous' supports greedy decoding without min_new_tokens only"
            )
        devices = set(getattr(model, "hf_device_map", {}).values())
        if len(devices) > 1:
            raise ImhiBenchError(
                f"engine 'continuous' runs on one device, but the model is spread over "
                f"{sorted(map(str, devices))}: {ONE_GPU_ENGINES['continuous']}; use engine static"
            )
        super().__init__(model, tokenizer, settings, device)
        if self.encoder_decoder:
            raise ImhiBenchError("engine 'continuous' is for causal and lora models only")
        #: Share of the free GPU memory for the paged cache; None: transformers' default.
        self.memory_share: float | None = None

    def generate_token_ids(
        self, queries: list[str], on_batch: BatchCallback | None = None
    ) -> list[list[int]]:
        """The whole shard in one ``generate_batch`` call. Out of memory: again with half the
        memory share (halving the prompts would not lower the peak: the paged cache is sized
        from the free memory and the requests per step are fixed)."""
        import torch

        ids = self.encode(list(queries))
        while True:
            try:
                results = self._run_continuous(ids)
                break
            except torch.OutOfMemoryError as err:
                share = (self.memory_share or DEFAULT_MEMORY_SHARE) / 2
                if share < MIN_MEMORY_SHARE:
                    raise ImhiBenchError(
                        f"continuous batching ran out of memory with {self.memory_share:.0%} of "
                        "the free GPU memory for its cache; use engine static, a smaller dtype "
                        "or a larger GPU"
                    ) from err
            release_cached_memory()  # outside the handler: its traceback held the tensors
            log.warning("CUDA out of memory in continuous batching: again with %.0f%% of the "
                        "free GPU memory for the paged cache", share * 100)  # fmt: skip
            self.memory_share = share
        if on_batch is not None:
            on_batch(len(results), sum(len(x) for x in results))
        return results

    def scheduler_config(self, prompts: list[list[int]]):
        """At most ``max_batch_size`` requests per step, attention as loaded (SDPA: no switch
        to FlashAttention, which has no float32 and would break the equality with the static
        engine). On GPU transformers sizes the paged KV cache from ``memory_share`` of the free
        memory; on CPU it is sized to ``batch_tokens`` (at least one longest request), as the
        static engine's batches are, with ``CPU_STEP_TOKENS`` per pass."""
        from transformers import ContinuousBatchingConfig

        config = ContinuousBatchingConfig(
            max_requests_per_batch=self.settings.max_batch_size, auto_switch_to_flash=False,
            max_memory_percent=self.memory_share,
        )  # fmt: skip
        if not self.device.startswith("cuda"):
            longest = max(len(p) for p in prompts) + self.settings.max_new_tokens
            tokens = max(self.batch_tokens, longest)
            config.num_blocks = -(-tokens // config.page_size) + 1
            config.max_batch_tokens = CPU_STEP_TOKENS
        return config

    def _run_continuous(self, prompts: list[list[int]]) -> list[list[int]]:
        """The new ids of each prompt, cut before EOS; OOM inside transformers re-raised."""
        import torch

        # No inference_mode here: transformers' generation thread updates tensors in place.
        outputs = self.model.generate_batch(
            prompts, generation_config=self.generation_config, progress_bar=False,
            continuous_batching_config=self.scheduler_config(prompts),
        )  # fmt: skip
        outputs = list(outputs.values())  # transformers returns them in input order
        errors = [o.error for o in outputs if o.error is not None]
        if any("out of memory" in str(e).lower() for e in errors):
            raise torch.OutOfMemoryError(errors[0])
        if errors or len(outputs) != len(prompts):
            raise ImhiBenchError(
                f"continuous batching: {len(prompts) - len(outputs) + len(errors)} of "
                f"{len(prompts)} requests failed: {errors[:3]}"
            )
        for prompt, out in zip(prompts, outputs, strict=True):
            if list(out.prompt_ids) != list(prompt):
                raise ImhiBenchError("continuous batching returned answers out of order")
        return [cut_at_eos(list(o.generated_tokens), self.eos_ids) for o in outputs]
