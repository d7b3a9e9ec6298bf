"""Upstream IMHI.py's generation loop, for forensic replication and as the benchmark's baseline.

As ``IMHI.py`` (commit 42cd29d) ran it: float32 weights, the queries in file order in batches of
8 (the README's ``--batch_size 8``), left padding with pad = unk, ``generate(max_length=2048)``
counting the padded prompt plus the answer, decoding as the checkpoint's generation config says
unless told otherwise, and as answer the tokens after the padded prompt decoded with
``skip_special_tokens=True``. ``upstream_token_ids`` is the one implementation of that loop: the
``upstream`` engine and ``scripts/bench_generate.py`` both call it.
"""

from __future__ import annotations

import logging

from imhibench.common.errors import ImhiBenchError
from imhibench.generate import decoding
from imhibench.generate.base import (
    BatchCallback,
    GenerationResult,
    GenerationSettings,
    cut_at_eos,
)
from imhibench.generate.decoding import decoding_values
from imhibench.generate.hf import HFGenerator

log = logging.getLogger(__name__)

#: Upstream README: ``python IMHI.py ... --batch_size 8``.
UPSTREAM_BATCH_SIZE = 8


def upstream_token_ids(
    model,
    tokenizer,
    queries: list[str],
    generation_config,
    *,
    batch_size: int = UPSTREAM_BATCH_SIZE,
    logits_processor=None,
    on_batch: BatchCallback | None = None,
    seed: int | None = None,
) -> list[list[int]]:
    """Per query, the ids after its batch's padded prompt, as IMHI.py slices them.

    Rows that finished before the longest of their batch keep generate's fill (pad tokens).
    ``on_batch(rows, ids)`` after each batch. With ``seed``, torch is seeded before each batch,
    so that a batch's answers (when the checkpoint's decoding samples) depend on the batch
    alone, not on the batches run before it in this call: a resumed run gives a fresh run's.
    """
    import torch

    device = model.device
    rows: list[list[int]] = []
    for start in range(0, len(queries), batch_size):
        inputs = tokenizer(queries[start : start + batch_size], return_tensors="pt", padding=True)
        input_ids = inputs.input_ids.to(device)
        if seed is not None:
            torch.manual_seed(seed)
        with torch.inference_mode():
            out = model.generate(
                input_ids,
                attention_mask=inputs.attention_mask.to(device),
                generation_config=generation_config,
                logits_processor=logits_processor,
            )
        new = out[:, input_ids.shape[1] :].tolist()
        rows.extend(new)
        if on_batch is not None:
            on_batch(len(new), sum(len(x) for x in new))
    return rows


def decode_upstream(tokenizer, row: list[int]) -> str:
    """IMHI.py's decoding of an answer row (special tokens, including the pad fill, dropped)."""
    return tokenizer.decode(row, skip_special_tokens=True, spaces_between_special_tokens=False)


class UpstreamGenerator(HFGenerator):
    """The ``upstream`` engine: IMHI.py's loop behind the backend interface.

    ``prompt_lengths`` reports every query as equally long, so the stage's shards keep file
    order; with ``shard_rows`` a multiple of 8 the batches are exactly upstream's.
    """

    def __init__(
        self,
        model,
        tokenizer,
        settings: GenerationSettings,
        device: str | None = None,
        max_length: int | None = None,
        batch_size: int = UPSTREAM_BATCH_SIZE,
    ):
        if tokenizer.unk_token is not None:
            tokenizer.pad_token = tokenizer.unk_token  # IMHI.py: tokenizer.pad_token = unk_token
        super().__init__(model, tokenizer, settings, device)
        if self.encoder_decoder:
            raise ImhiBenchError("engine 'upstream' is for causal and lora models only")
        # Upstream's only length limit: padded prompt + answer.
        self.generation_config.update(max_length=max_length or decoding.UPSTREAM_MAX_LENGTH)
        if settings.decoding == "greedy":
            self.generation_config.update(max_new_tokens=None)
        self.decoding_provenance["used_generation_config"] = {
            k: v for k, v in decoding_values(self.generation_config).items() if v is not None
        }
        self.batch_size = batch_size

    def prompt_lengths(self, queries: list[str]) -> list[int]:
        """All equal: keeps shards, and so upstream's batches, in file order."""
        return [0] * len(queries)

    def _rows(self, queries, on_batch):
        import torch

        try:
            return upstream_token_ids(
                self.model, self.tokenizer, list(queries), self.generation_config,
                batch_size=self.batch_size, on_batch=on_batch, seed=self.settings.seed,
            )  # fmt: skip
        except torch.OutOfMemoryError as err:
            raise ImhiBenchError(
                f"engine 'upstream': out of memory on a batch of {self.batch_size}; upstream's "
                "batches cannot be split without changing answers: give the job more GPUs "
                "(the model's resources.gpu) or use another engine"
            ) from err

    def generate(
        self, queries: list[str], on_batch: BatchCallback | None = None
    ) -> GenerationResult:
        rows = self._rows(queries, on_batch)
        texts = [decode_upstream(self.tokenizer, row) for row in rows]
        return GenerationResult(texts, [len(cut_at_eos(row, self.eos_ids)) for row in rows])

    def generate_token_ids(
        self, queries: list[str], on_batch: BatchCallback | None = None
    ) -> list[list[int]]:
        return [cut_at_eos(row, self.eos_ids) for row in self._rows(queries, on_batch)]
