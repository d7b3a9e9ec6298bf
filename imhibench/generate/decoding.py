"""Decoding settings: greedy by default, or the checkpoint's own generation config as upstream.

Upstream IMHI.py calls ``model.generate(..., max_length=2048)`` with no decoding arguments, so it
decodes with whatever the checkpoint's ``generation_config.json`` says (LLaMA-2-chat derivatives
often ship ``do_sample: true, temperature: 0.6, top_p: 0.9``). imhi-bench decodes greedily
unless ``decoding: checkpoint``; either way the job log warns when the checkpoint asks for
something else than greedy, and provenance records the checkpoint's values and the ones used.
"""

from __future__ import annotations

import copy
import logging

log = logging.getLogger(__name__)

#: Upstream's ``generate(max_length=2048)``: padded prompt plus answer, in tokens.
UPSTREAM_MAX_LENGTH = 2048
#: Generation-config fields that choose the tokens (search, sampling, penalties, lengths).
DECODING_FIELDS = (
    "do_sample", "num_beams", "temperature", "top_p", "top_k", "min_p", "typical_p",
    "epsilon_cutoff", "eta_cutoff", "repetition_penalty", "encoder_repetition_penalty",
    "no_repeat_ngram_size", "length_penalty", "bad_words_ids", "suppress_tokens",
    "begin_suppress_tokens", "max_length", "max_new_tokens", "min_length", "min_new_tokens",
)  # fmt: skip


def decoding_values(generation_config) -> dict:
    """The decoding fields of a ``GenerationConfig`` (None where unset)."""
    return {name: getattr(generation_config, name, None) for name in DECODING_FIELDS}


def non_greedy_values(generation_config) -> dict:
    """The decoding fields a checkpoint sets to something other than transformers' defaults.

    ``max_length`` is left out when it is transformers' own default (20), which a
    ``generation_config.json`` derived from ``config.json`` carries without meaning it.
    """
    from transformers import GenerationConfig

    defaults = decoding_values(GenerationConfig())
    return {
        name: value
        for name, value in decoding_values(generation_config).items()
        if value is not None and value != defaults[name]
    }


def build_generation_config(
    checkpoint_config, decoding: str, max_new_tokens: int, min_new_tokens: int, pad_token_id
):
    """The ``GenerationConfig`` to generate with.

    ``greedy``: the checkpoint's config forced to greedy search with our length limits.
    ``checkpoint``: the checkpoint's config as it is, plus ``max_length=2048`` (padded prompt +
    answer), as upstream; a ``max_new_tokens`` in the checkpoint's config still takes
    precedence, as it did upstream.
    """
    config = copy.deepcopy(checkpoint_config)
    if decoding == "checkpoint":
        config.update(max_length=UPSTREAM_MAX_LENGTH, pad_token_id=pad_token_id)
        return config
    config.update(
        do_sample=False, num_beams=1, temperature=None, top_p=None, top_k=None,
        max_length=None, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens or None,
        pad_token_id=pad_token_id,
    )  # fmt: skip
    return config


def decoding_record(checkpoint_config, used_config, decoding: str, seed: int, name: str) -> dict:
    """Provenance of the decoding; logs a warning when the checkpoint asks for other decoding.

    ``name`` names the checkpoint in the warning.
    """
    asked = non_greedy_values(checkpoint_config)
    if asked:
        action = "used, as upstream" if decoding == "checkpoint" else "ignored: decoding greedily"
        log.warning(
            "%s: the checkpoint's generation_config asks for %s; %s (decoding: %s)",
            name, asked, action, decoding,
        )  # fmt: skip
    return {
        "decoding": decoding,
        "checkpoint_generation_config": _plain(decoding_values(checkpoint_config)),
        "checkpoint_non_greedy": _plain(asked),
        "used_generation_config": _plain(decoding_values(used_config)),
        "seed": seed,
    }


def _plain(values: dict) -> dict:
    """JSON-safe values: tuples and other sequences as lists, None dropped."""
    return {
        k: (list(v) if isinstance(v, tuple | set) else v)
        for k, v in values.items()
        if v is not None
    }
