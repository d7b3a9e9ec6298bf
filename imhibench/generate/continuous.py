"""The ``continuous`` engine: transformers continuous batching (``model.generate_batch``).

A finished answer's slot is refilled at once instead of riding along until the longest answer
of its batch ends. The whole shard is handed over at once; transformers schedules it. Greedy
only (``decoding: greedy``, no ``min_new_tokens``).
"""

from __future__ import annotations

from imhibench.errors import ImhiBenchError
from imhibench.generate.base import BatchCallback, GenerationSettings, cut_at_eos
from imhibench.generate.hf import HFGenerator

#: Tokens per forward pass on CPU. transformers' default sizing targets GPUs; on CPU larger
#: steps only cost memory (10 DR queries, tiny LLaMA, 2-core CPU: 1.3 GB peak RSS and 7.1 s with
#: the default, 0.58 GB and 4.0 s with 1024).
CPU_STEP_TOKENS = 1024


class ContinuousGenerator(HFGenerator):
    """HFGenerator whose batches are scheduled by transformers' continuous batching."""

    def __init__(self, model, tokenizer, settings: GenerationSettings, device: str | None = None):
        if settings.decoding != "greedy" or settings.min_new_tokens:
            raise ImhiBenchError(
                "engine 'continuous' supports greedy decoding without min_new_tokens only"
            )
        super().__init__(model, tokenizer, settings, device)
        if self.encoder_decoder:
            raise ImhiBenchError("engine 'continuous' is for causal and lora models only")

    def generate_token_ids(
        self, queries: list[str], on_batch: BatchCallback | None = None
    ) -> list[list[int]]:
        ids = self.encode(list(queries))
        results = self.backoff.run(ids, self._run_continuous)
        if on_batch is not None:
            on_batch(len(results), sum(len(x) for x in results))
        return results

    def _scheduler_config(self, prompts: list[list[int]]):
        """At most ``max_batch_size`` requests per step. On GPU transformers sizes the paged KV
        cache from the free memory; on CPU it is sized to ``batch_tokens`` (at least one
        longest request), as the static engine's batches are, with ``CPU_STEP_TOKENS`` per pass."""
        from transformers import ContinuousBatchingConfig

        config = ContinuousBatchingConfig(max_requests_per_batch=self.settings.max_batch_size)
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
            continuous_batching_config=self._scheduler_config(prompts),
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
