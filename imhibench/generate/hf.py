"""Greedy, length-batched generation with any transformers causal or encoder-decoder model."""

from __future__ import annotations

import logging

from imhibench.errors import ImhiBenchError
from imhibench.generate.base import (
    BatchCallback,
    GenerationResult,
    GenerationSettings,
    cut_at_eos,
    resolve_device,
)
from imhibench.generate.batching import OOMBackoff, plan_batches
from imhibench.generate.decoding import build_generation_config, decoding_record
from imhibench.generate.memory import batch_token_budget

log = logging.getLogger(__name__)

#: Decoding steps between checks for finished answers (causal models, greedy decoding): a
#: finished row then leaves its batch, so one long answer no longer holds a batch of finished
#: ones to its last step.
EVICT_EVERY = 32


class HFGenerator:
    """Generation backend around a loaded model and tokenizer.

    Causal models get left padding (the new tokens follow every prompt); encoder-decoder models
    get right padding on the encoder side. Prompts are the raw queries, as upstream, unless
    ``settings.chat_template`` wraps each one as a single user turn.
    """

    def __init__(self, model, tokenizer, settings: GenerationSettings, device: str | None = None):
        self.device = resolve_device(device)
        # A model spread over several GPUs (device_map="auto") stays where accelerate put it.
        dispatched = len(set(getattr(model, "hf_device_map", {}).values())) > 1
        self.model = (model if dispatched else model.to(self.device)).eval()
        self.tokenizer = tokenizer
        self.settings = settings
        self.encoder_decoder = bool(model.config.is_encoder_decoder)
        tokenizer.padding_side = "right" if self.encoder_decoder else "left"
        if tokenizer.pad_token_id is None:
            raise ImhiBenchError(f"{tokenizer.name_or_path}: tokenizer has no pad token")
        if settings.chat_template and not tokenizer.chat_template:
            raise ImhiBenchError(f"{tokenizer.name_or_path}: chat_template=True but none set")
        # Decoders with learned positions (BART) cap the answer at what fits (fix9).
        self.max_new_tokens = self._capped_max_new_tokens()
        # The checkpoint's generation_config.json, as from_pretrained loaded it.
        checkpoint_config = self.model.generation_config
        self.generation_config = build_generation_config(
            checkpoint_config, settings.decoding, self.max_new_tokens,
            min(settings.min_new_tokens, self.max_new_tokens), tokenizer.pad_token_id,
        )  # fmt: skip
        if self.max_new_tokens_cap is not None and self.generation_config.max_length:
            # decoding: checkpoint sets max_length (decoder start token + answer): cap it too.
            self.generation_config.max_length = min(
                self.generation_config.max_length, self.max_new_tokens + 1
            )
        #: What provenance records about decoding (checkpoint's values and the ones used).
        self.decoding_provenance = decoding_record(
            checkpoint_config, self.generation_config, settings.decoding, settings.seed,
            tokenizer.name_or_path,
        )  # fmt: skip
        eos = self.generation_config.eos_token_id
        eos = tokenizer.eos_token_id if eos is None else eos
        self.eos_ids = set(eos) if isinstance(eos, list) else {eos}
        self.backoff = OOMBackoff()  # remembers, for the whole job, the batch size that fit
        #: Per-batch token budget: the setting, lowered on GPU to what the free memory holds.
        self.batch_tokens = batch_token_budget(self.model, self.device, settings.batch_tokens)

    def encode(self, queries: list[str]) -> list[list[int]]:
        """Token ids of each prompt, unpadded."""
        tok = self.tokenizer
        texts, special = list(queries), True
        if self.settings.chat_template:
            texts = [
                tok.apply_chat_template(
                    [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False
                )
                for q in queries
            ]
            special = False  # the template holds the special tokens (BOS), as in HF's own path
        ids = tok(texts, add_special_tokens=special)["input_ids"]
        limit = self._max_source_length()
        if limit is not None and any(len(x) > limit for x in ids):
            n = sum(len(x) > limit for x in ids)
            log.warning("%d queries longer than the model's %d positions; truncated", n, limit)
            ids = tok(texts, add_special_tokens=special, truncation=True, max_length=limit)
            ids = ids["input_ids"]
        return ids

    def _max_source_length(self) -> int | None:
        """Hard encoder limit of encoder-decoder models with learned positions (BART: 1024).

        Longer inputs would crash the position embedding, so they are cut. Models
        with relative positions (T5) have no such limit and are left alone.
        """
        if not self.encoder_decoder:
            return None
        return getattr(self.model.config, "max_position_embeddings", None)

    def _capped_max_new_tokens(self) -> int:
        """``settings.max_new_tokens``, capped for decoders with learned positions.

        A BART decoder has ``max_position_embeddings`` positions (1024), its start token
        included, so room for that many new tokens; decoding past them crashes (IndexError on
        CPU, a device-side assert on CUDA). Answers are cut there instead, with one warning.
        T5 (relative positions) is uncapped.
        """
        wanted = self.settings.max_new_tokens
        positions = self._max_source_length()  # BART's decoder shares the encoder's limit
        if positions is None or wanted <= positions:
            return wanted
        cap = positions  # start token + cap - 1 fed back: the last step uses position cap - 1
        log.warning(
            "max_new_tokens %d does not fit the decoder's %d learned positions: answers are "
            "cut at %d new tokens (recorded as max_new_tokens_cap in the provenance)",
            wanted, positions, cap,
        )  # fmt: skip
        return cap

    @property
    def max_new_tokens_cap(self) -> int | None:
        """The cap on new tokens set by the model, or None when the settings' limit applies."""
        return self.max_new_tokens if self.max_new_tokens < self.settings.max_new_tokens else None

    def prompt_lengths(self, queries: list[str]) -> list[int]:
        """Prompt length of each query in tokens (what batching sorts by)."""
        return [len(x) for x in self.encode(queries)]

    def generate(
        self, queries: list[str], on_batch: BatchCallback | None = None
    ) -> GenerationResult:
        """One greedy response per query, in query order."""
        ids = self.generate_token_ids(queries, on_batch)
        texts = [self.tokenizer.decode(x, skip_special_tokens=True) for x in ids]
        return GenerationResult(texts=texts, n_output_tokens=[len(x) for x in ids])

    def generate_token_ids(
        self, queries: list[str], on_batch: BatchCallback | None = None
    ) -> list[list[int]]:
        """The new token ids of each query's response, cut before the first EOS.

        ``on_batch(rows, output_tokens)`` is called after each batch (progress reports).
        """
        import torch

        torch.manual_seed(self.settings.seed)
        ids = self.encode(list(queries))
        s = self.settings
        batches = plan_batches(
            [len(x) for x in ids], s.max_new_tokens, self.batch_tokens, s.max_batch_size
        )
        results: list[list[int]] = [[] for _ in ids]
        for k, batch in enumerate(batches, 1):
            log.debug("batch %d/%d: %d queries", k, len(batches), len(batch))
            outputs = self.backoff.run(batch, lambda b: self._run([ids[i] for i in b]))
            for i, out in zip(batch, outputs, strict=True):
                results[i] = out
            if on_batch is not None:
                on_batch(len(batch), sum(len(x) for x in outputs))
        return results

    def _run(self, batch: list[list[int]]) -> list[list[int]]:
        """Generate for one padded batch; the new tokens of each row, cut before EOS."""
        import torch

        width = max(len(x) for x in batch)
        pad = self.tokenizer.pad_token_id
        left = not self.encoder_decoder
        rows, masks = [], []
        for x in batch:
            fill = width - len(x)
            rows.append([pad] * fill + x if left else x + [pad] * fill)
            masks.append([0] * fill + [1] * len(x) if left else [1] * len(x) + [0] * fill)
        input_ids = torch.tensor(rows, device=self.device)
        attention_mask = torch.tensor(masks, device=self.device)
        with torch.inference_mode():
            if self._evicts():
                new = self._generate_evicting(input_ids, attention_mask)
            else:
                out = self.model.generate(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    generation_config=self.generation_config,
                )
                # Decoder outputs start with decoder_start_token_id; causal ones repeat the
                # prompt.
                new = (out[:, 1:] if self.encoder_decoder else out[:, width:]).tolist()
        return [cut_at_eos(row, self.eos_ids) for row in new]

    def _evicts(self) -> bool:
        """Whether finished rows leave their batch: causal models, greedy decoding.

        (Sampling would draw other random numbers once the batch shrinks, and ``decoding:
        checkpoint`` keeps upstream's single ``generate`` call with its ``max_length``.)
        """
        config = self.generation_config
        return (
            not self.encoder_decoder
            and self.settings.decoding == "greedy"
            and not config.do_sample
            and (config.num_beams or 1) == 1
            and config.max_new_tokens is not None
            and not config.min_length  # counts the whole padded row, which rounds cut
        )

    def _generate_evicting(self, input_ids, attention_mask) -> list[list[int]]:
        """Greedy ``generate`` in rounds of ``EVICT_EVERY`` steps; after each round the rows
        that reached EOS leave the batch (and its KV cache) and the rest go on from the cache.

        Every step of a row computes what one uninterrupted ``generate`` call computes: the
        same single new token against the same cached keys and values, with positions from the
        same attention mask; only the batch around it shrinks. Padding columns that no
        remaining row needs are cut off.
        """
        import copy

        import torch

        config = self.generation_config
        total, min_new = config.max_new_tokens, config.min_new_tokens or 0
        answers: list[list[int]] = [[] for _ in range(input_ids.shape[0])]
        live = list(range(input_ids.shape[0]))  # batch row -> index in ``answers``
        cache, done = None, 0
        while done < total:
            steps = min(EVICT_EVERY, total - done)
            round_config = copy.copy(config)
            round_config.update(
                max_new_tokens=steps, min_new_tokens=max(0, min_new - done) or None,
                return_dict_in_generate=True,
            )  # fmt: skip
            out = self.model.generate(
                input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache,
                generation_config=round_config,
            )  # fmt: skip
            new = out.sequences[:, input_ids.shape[1] :]
            done += new.shape[1]
            keep = []
            for row, tokens in enumerate(new.tolist()):
                answers[live[row]].extend(tokens)
                if not self.eos_ids.intersection(tokens):
                    keep.append(row)
            if not keep or done >= total:
                break
            mask = torch.cat([attention_mask, attention_mask.new_ones(new.shape)], dim=1)
            input_ids, cache = out.sequences, out.past_key_values
            if len(keep) < len(live):
                index = torch.tensor(keep)
                cache.batch_select_indices(index)
                input_ids, mask = input_ids[index.to(input_ids.device)], mask[index.to(mask.device)]
                live = [live[row] for row in keep]
            input_ids, attention_mask = _drop_padding_columns(input_ids, mask, cache)
        return answers


def _drop_padding_columns(input_ids, attention_mask, cache):
    """Cut the leading columns that are padding in every row, from the ids, the mask and a
    ``DynamicCache`` (other caches are left whole, and so are the columns)."""
    from transformers.cache_utils import DynamicLayer

    first = int(attention_mask.any(dim=0).int().argmax())
    layers = getattr(cache, "layers", None)
    if first == 0 or not layers or any(type(layer) is not DynamicLayer for layer in layers):
        return input_ids, attention_mask
    for layer in layers:
        if layer.is_initialized:
            layer.keys = layer.keys[..., first:, :]
            layer.values = layer.values[..., first:, :]
    return input_ids[:, first:], attention_mask[:, first:]
