"""Greedy, length-batched generation with any transformers causal or encoder-decoder model."""

from __future__ import annotations

import logging

from imhibench.common.errors import ImhiBenchError
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

        ``on_batch(rows, output_tokens)`` is called as answers finish (progress reports): after
        each batch for its finished rows, and after each group of parked rows (``rounds``).
        """
        import torch

        from imhibench.generate import rounds

        torch.manual_seed(self.settings.seed)
        ids = self.encode(list(queries))
        s = self.settings
        # Parked rows keep their cache while later batches run: it may hold up to ``reserve``
        # of the token budget (beyond, they are finished at once; they grow only then, when no
        # other batch runs); batches get the rest.
        reserve = self.batch_tokens // rounds.RESERVE_SHARE if self._evicts() else 0
        batches = plan_batches(
            [len(x) for x in ids], s.max_new_tokens, self.batch_tokens - reserve, s.max_batch_size
        )
        results: list[list[int]] = [[] for _ in ids]
        parked: list[rounds.Rows] = []  # batches down to their last long answers

        def report(answers: dict[int, list[int]]) -> None:
            for i, answer in answers.items():
                results[i] = cut_at_eos(answer, self.eos_ids)
            if on_batch is not None and answers:
                on_batch(len(answers), sum(len(results[i]) for i in answers))

        for k, batch in enumerate(batches, 1):
            log.debug("batch %d/%d: %d queries", k, len(batches), len(batch))
            outputs = self.backoff.run(batch, lambda b: self._run(b, ids, parked))
            report({i: out for i, out in zip(batch, outputs, strict=True) if out is not None})
            if k == len(batches) or sum(p.held() for p in parked) > reserve:
                report(self._finish_parked(parked))
                parked.clear()
        return results

    def _run(self, batch: list[int], ids: list[list[int]], parked: list) -> list:
        """Generate for one padded batch of the queries ``batch`` (their token ``ids``): the
        new tokens of each row, or None for a row left in ``parked`` to finish later."""
        import torch

        from imhibench.generate import rounds

        width = max(len(ids[i]) for i in batch)
        pad = self.tokenizer.pad_token_id
        left = not self.encoder_decoder
        rows, masks = [], []
        for x in (ids[i] for i in batch):
            fill = width - len(x)
            rows.append([pad] * fill + x if left else x + [pad] * fill)
            masks.append([0] * fill + [1] * len(x) if left else [1] * len(x) + [0] * fill)
        input_ids = torch.tensor(rows, device=self.device)
        attention_mask = torch.tensor(masks, device=self.device)
        with torch.inference_mode():
            if not self._evicts():
                out = self.model.generate(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    generation_config=self.generation_config,
                )
                # Decoder outputs start with decoder_start_token_id; causal ones repeat the
                # prompt.
                return (out[:, 1:] if self.encoder_decoder else out[:, width:]).tolist()
            state = rounds.Rows(
                input_ids, attention_mask, rounds.roomy_cache(), list(batch),
                [[] for _ in batch], [0] * len(batch),
            )  # fmt: skip
            park_at = max(1, len(batch) // rounds.PARK_SHARE)
            finished, rest = rounds.decode(
                self.model, self.generation_config, self.eos_ids, state, park_at
            )
        if rest is not None:
            parked.append(rest)
        return [finished.get(i) for i in batch]

    def _finish_parked(self, parked: list) -> dict[int, list[int]]:
        """Finish the parked rows of every batch together, in merged batches under the token
        budget and the batch size that fit so far (out of memory: in smaller groups of rows,
        down to single rows, whatever part they were parked in)."""
        import torch

        from imhibench.generate import rounds

        def finish(rows: list[tuple[rounds.Rows, int]]) -> list[dict]:
            merged = rounds.merge(_parts_of(rows), self.tokenizer.pad_token_id)
            with torch.inference_mode():
                answers, _ = rounds.decode(self.model, self.generation_config, self.eos_ids, merged)
            return [answers]

        s, finished = self.settings, {}
        most_rows = min(s.max_batch_size, self.backoff.limit or s.max_batch_size)
        # The parked caches stay until all groups are done (an out-of-memory retries a group
        # from its parts): merged batches get the budget they leave.
        budget = self.batch_tokens - sum(p.held() for p in parked)
        groups = rounds.group_parked(parked, s.max_new_tokens, budget, most_rows)
        for group in groups:
            log.debug("finishing %d long answers of %d batches", sum(map(len, group)), len(group))
            rows = [(part, row) for part in group for row in range(len(part))]
            for answers in OOMBackoff().run(rows, finish):
                finished.update(answers)
        return finished

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


def _parts_of(rows: list) -> list:
    """The parked parts of ``rows`` ((part, row index) pairs, a part's rows together): a part
    whose rows are all there as it is, another as a copy of those rows (``rounds.pick``)."""
    from imhibench.generate import rounds

    parts: dict[int, tuple] = {}
    for part, row in rows:
        parts.setdefault(id(part), (part, []))[1].append(row)
    return [p if len(keep) == len(p) else rounds.pick(p, keep) for p, keep in parts.values()]
