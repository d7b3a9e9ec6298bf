"""Greedy decoding of causal models in rounds, for the static engine.

A batch is decoded ``EVICT_EVERY`` steps per ``generate`` call, each call continuing from the
KV cache of the last. After each round the rows that reached EOS (or ``max_new_tokens``) leave
the batch and its cache, and leading columns that are padding in every remaining row are cut.
Once a batch is down to its last long answers (at most 1/``PARK_SHARE`` of its rows) it is set
aside ("parked") with its cache alone, copied out of the round's buffers; after the call's last
batch, or once the parked rows hold 1/``RESERVE_SHARE`` of the token budget, the parked rows of
all batches are finished together, left-padded to a common width, in as few batches as the
token budget allows. One runaway answer per batch then no longer costs every batch its own run
to ``max_new_tokens``.

Every step of a row computes what one uninterrupted ``generate`` call computes: the same single
new token against the same cached keys and values, with positions from the attention mask
(padding columns are masked out); only the batch around it changes.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

#: Decoding steps per ``generate`` call: finished rows leave the batch after each round.
EVICT_EVERY = 32
#: A batch down to at most 1/PARK_SHARE of its rows (at least one) is set aside, to be finished
#: with the parked rows of the other batches.
PARK_SHARE = 32
#: Parked rows may hold up to 1/RESERVE_SHARE of the token budget while later batches run.
RESERVE_SHARE = 8


@dataclass
class Rows:
    """Rows in decoding: ids so far (prompt and answer, left-padded), their attention mask and
    KV cache (every column but the last id), and per row its query, answer and steps done."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    cache: DynamicCache | None
    queries: list[int]
    answers: list[list[int]]
    done: list[int]

    def __len__(self) -> int:
        return len(self.queries)

    def held(self) -> int:
        """Token slots the KV cache of these rows holds, as ``decode`` parks them: one per row
        and cached column (every column but the last id), no room for another round."""
        return len(self) * (self.input_ids.shape[1] - 1)


def decode(
    model, config, eos_ids: set[int], rows: Rows, park_at: int = 0
) -> tuple[dict[int, list[int]], Rows | None]:
    """Decode ``rows`` in rounds until all are finished, or until at most ``park_at`` remain.

    ``config``: a greedy GenerationConfig with ``max_new_tokens``. Returns each finished query's
    new tokens (EOS and what follows it included), and the unfinished rows or None.
    """
    total, min_new = config.max_new_tokens, config.min_new_tokens or 0
    finished: dict[int, list[int]] = {}
    while True:
        steps = min(EVICT_EVERY, total - min(rows.done))
        round_config = copy.copy(config)
        round_config.update(
            max_new_tokens=steps, min_new_tokens=max(0, min_new - min(rows.done)) or None,
            return_dict_in_generate=True,
        )  # fmt: skip
        out = model.generate(
            input_ids=rows.input_ids, attention_mask=rows.attention_mask,
            past_key_values=rows.cache, generation_config=round_config,
        )  # fmt: skip
        width = rows.input_ids.shape[1]
        new = out.sequences[:, width:]
        keep = []
        for row, tokens in enumerate(new.tolist()):
            tokens = tokens[: total - rows.done[row]]  # merged rows may have fewer steps left
            rows.answers[row].extend(tokens)
            rows.done[row] += len(tokens)
            if rows.done[row] < total and not eos_ids.intersection(tokens):
                keep.append(row)
            else:
                finished[rows.queries[row]] = rows.answers[row]
        if not keep:
            return finished, None
        mask = torch.cat([rows.attention_mask, rows.attention_mask.new_ones(new.shape)], dim=1)
        grown = replace(
            rows, input_ids=out.sequences, attention_mask=mask, cache=out.past_key_values
        )
        rows = _select(grown, keep)
        if len(rows) <= park_at and parkable(rows, min_new):
            _compact(rows.cache)
            return finished, rows


def parkable(rows: Rows, min_new_tokens: int) -> bool:
    """Whether ``rows`` can be merged with others: every layer of its cache a plain
    ``DynamicLayer`` (so its columns can be padded), and every row past ``min_new_tokens``
    (merged rows share one ``generate`` call, hence one ``min_new_tokens``)."""
    layers = getattr(rows.cache, "layers", None)
    return (
        bool(layers)
        and all(isinstance(layer, DynamicLayer) and layer.is_initialized for layer in layers)
        and min(rows.done) >= min_new_tokens
    )


def merge(parts: list[Rows], pad_token_id: int) -> Rows:
    """One batch of ``parts``' rows, each left-padded (ids with the pad token, mask with 0,
    cache with zeros) to the widest. The parts are left as they were."""
    width = max(p.input_ids.shape[1] for p in parts)

    def padded(tensor, part, value=0):  # left-pad the columns (dim -1 of ids, -2 of K/V)
        fill = width - part.input_ids.shape[1]
        pad = (fill, 0) if tensor.dim() == 2 else (0, 0, fill, 0)
        return torch.nn.functional.pad(tensor, pad, value=value)

    cache = roomy_cache()
    for index in range(len(parts[0].cache.layers)):
        layer = RoomyLayer()
        keys = [padded(p.cache.layers[index].keys, p) for p in parts]
        values = [padded(p.cache.layers[index].values, p) for p in parts]
        layer.lazy_initialization(keys[0], values[0])
        layer.keys, layer.values = torch.cat(keys), torch.cat(values)
        cache.layers.append(layer)
    return Rows(
        input_ids=torch.cat([padded(p.input_ids, p, pad_token_id) for p in parts]),
        attention_mask=torch.cat([padded(p.attention_mask, p) for p in parts]),
        cache=cache,
        queries=[q for p in parts for q in p.queries],
        answers=[list(a) for p in parts for a in p.answers],
        done=[d for p in parts for d in p.done],
    )


def group_parked(
    parts: list[Rows], max_new_tokens: int, batch_tokens: int, max_batch_size: int
) -> Iterator[list[Rows]]:
    """Parked parts in groups to merge, widest first, each group within the per-batch token
    budget (rows x (widest + steps left)) and ``max_batch_size`` rows; a part over the budget
    on its own is a group of one."""
    group: list[Rows] = []
    for part in sorted(parts, key=lambda p: -p.input_ids.shape[1]):
        rows = sum(len(p) for p in group) + len(part)
        steps = max_new_tokens - min(min(p.done) for p in [*group, part])
        width = max(p.input_ids.shape[1] for p in [*group, part])
        if group and (rows > max_batch_size or rows * (width + steps) > batch_tokens):
            yield group
            group = []
        group.append(part)
    if group:
        yield group


def pick(rows: Rows, keep: list[int]) -> Rows:
    """A copy of the rows ``keep`` of ``rows`` (ids, mask, cache); ``rows`` is left whole."""
    cache = DynamicCache()
    for layer in rows.cache.layers:
        index = torch.tensor(keep, device=layer.keys.device)
        keys, values, picked = layer.keys[index], layer.values[index], DynamicLayer()
        picked.lazy_initialization(keys, values)
        picked.keys, picked.values = keys, values
        cache.layers.append(picked)
    index = torch.tensor(keep, device=rows.input_ids.device)
    return Rows(
        rows.input_ids[index], rows.attention_mask[index], cache,
        [rows.queries[k] for k in keep], [list(rows.answers[k]) for k in keep],
        [rows.done[k] for k in keep],
    )  # fmt: skip


def _select(rows: Rows, keep: list[int]) -> Rows:
    """``rows`` reduced to the rows ``keep``, without the columns they no longer need."""
    ids, mask, cache = rows.input_ids, rows.attention_mask, rows.cache
    if len(keep) < len(rows):
        index = torch.tensor(keep)
        cache.batch_select_indices(index)
        ids, mask = ids[index.to(ids.device)], mask[index.to(mask.device)]
    ids, mask = _drop_padding_columns(ids, mask, cache)
    for layer in getattr(cache, "layers", ()):
        if isinstance(layer, RoomyLayer):
            layer.release_stale_room()
    pick = [rows.queries[k] for k in keep], [rows.answers[k] for k in keep]
    return Rows(ids, mask, cache, *pick, [rows.done[k] for k in keep])


def _compact(cache: DynamicCache) -> None:
    """Each layer of ``cache`` (all ``DynamicLayer``s) holding its keys and values alone: no
    room for another round, no rows or columns cut from a larger tensor. Parked rows wait
    while other batches run; the planner counts only their cached columns (``Rows.held``)."""
    for layer in cache.layers:
        layer.keys = layer.keys.clone(memory_format=torch.contiguous_format)
        layer.values = layer.values.clone(memory_format=torch.contiguous_format)
        if isinstance(layer, RoomyLayer):
            layer.room_keys = layer.room_values = None


def _drop_padding_columns(input_ids, attention_mask, cache):
    """Cut the leading columns that are padding in every row, from the ids, the mask and a
    ``DynamicCache`` (other caches are left whole, and so are the columns)."""
    first = int(attention_mask.any(dim=0).int().argmax())
    layers = getattr(cache, "layers", None)
    if first == 0 or not layers or not all(isinstance(x, DynamicLayer) for x in layers):
        return input_ids, attention_mask
    for layer in layers:
        if layer.is_initialized:
            layer.keys = layer.keys[..., first:, :]
            layer.values = layer.values[..., first:, :]
    return input_ids[:, first:], attention_mask[:, first:]


class RoomyLayer(DynamicLayer):
    """``DynamicLayer`` that keeps room for ``EVICT_EVERY`` more positions.

    ``keys``/``values`` are views of the first positions of larger buffers, so a step writes its
    new position in place instead of copying the whole cache (``torch.cat``, which took a
    quarter of the static engine's CPU time). A cache changed from outside (rows or columns
    dropped, or merged) is copied once into new room.
    """

    room_keys = room_values = None

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        old = self.get_seq_length()
        new = old + key_states.shape[-2]
        room = self.room_keys
        if room is None or not _is_start_of(self.keys, room) or new > room.shape[-2]:
            shape = (*key_states.shape[:-2], new + EVICT_EVERY, key_states.shape[-1])
            self.room_keys = key_states.new_empty(shape)
            self.room_values = value_states.new_empty(shape)
            if old:
                self.room_keys[..., :old, :] = self.keys
                self.room_values[..., :old, :] = self.values
        self.room_keys[..., old:new, :] = key_states
        self.room_values[..., old:new, :] = value_states
        self.keys, self.values = self.room_keys[..., :new, :], self.room_values[..., :new, :]
        return self.keys, self.values

    def release_stale_room(self) -> None:
        """Let go of the room once ``keys`` no longer lies at its start (rows or columns were
        dropped from outside): the next ``update`` would replace it anyway, and until then it
        would hold the memory of the rows and columns that left."""
        if self.room_keys is not None and not _is_start_of(self.keys, self.room_keys):
            self.room_keys = self.room_values = None


def roomy_cache() -> DynamicCache:
    """An empty ``DynamicCache`` whose layers are ``RoomyLayer``s."""
    cache = DynamicCache()
    cache.layer_class_to_replicate = RoomyLayer
    return cache


def _is_start_of(view: torch.Tensor, room: torch.Tensor) -> bool:
    """Whether ``view`` is ``room[..., :n, :]`` for some n (same storage, start and strides)."""
    return (
        view.data_ptr() == room.data_ptr()
        and view.shape[:-2] == room.shape[:-2]
        and view.stride() == room.stride()
    )
