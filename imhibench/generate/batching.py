"""Length-sorted batching under a token budget, and halving a batch on CUDA out-of-memory."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from imhibench.common.devices import release_cached_memory
from imhibench.common.errors import ImhiBenchError

T = TypeVar("T")
log = logging.getLogger(__name__)


def plan_batches(
    lengths: list[int], max_new_tokens: int, batch_tokens: int, max_batch_size: int
) -> list[list[int]]:
    """Group query indices, longest first, so that size x (padded length + new tokens) fits.

    A query over the budget on its own still gets a batch of one.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        if batches:
            batch = batches[-1]
            longest = lengths[batch[0]]  # sorted: the first is the longest
            cost = (len(batch) + 1) * (longest + max_new_tokens)
            if len(batch) < max_batch_size and cost <= batch_tokens:
                batch.append(i)
                continue
        batches.append([i])
    return batches


def plan_shards(lengths: list[int], shard_rows: int) -> list[list[int]]:
    """Query indices, longest first (ties in input order), cut into chunks of ``shard_rows``.

    A pure function of the lengths: a restarted job plans the same shards, so a shard it
    recomputes is batched, and therefore answered, exactly as in an uninterrupted run.
    """
    if shard_rows < 1:
        raise ImhiBenchError("generation settings: shard_rows must be >= 1")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[k : k + shard_rows] for k in range(0, len(order), shard_rows)]


class OOMBackoff:
    """Runs batches under a size limit that only ever shrinks, for the rest of the job.

    On CUDA out-of-memory the failing batch is cut to half its size and retried; the size that
    then works becomes the limit, so later batches are split up front instead of failing again.
    """

    def __init__(self) -> None:
        self.limit: int | None = None  # None until the first out-of-memory

    def run(self, items: list[T], run: Callable[[list[T]], list]) -> list:
        """``run`` over ``items`` in chunks of at most ``limit``; results in order."""
        import torch

        results: list = []
        start = 0
        while start < len(items):
            size = min(len(items) - start, self.limit or len(items))
            try:
                results.extend(run(items[start : start + size]))
                start += size
                continue
            except torch.OutOfMemoryError as err:
                if size == 1:
                    raise ImhiBenchError(
                        "out of memory generating a single query; lower max_new_tokens, use a "
                        "smaller dtype or a larger GPU"
                    ) from err
            release_cached_memory()  # outside the handler: its traceback held the tensors
            self.limit = size // 2
            log.warning(
                "CUDA out of memory on a batch of %d; batches of at most %d from now on",
                size, self.limit,
            )  # fmt: skip
        return results
