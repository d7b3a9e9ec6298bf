"""What one engine did: its outputs, time, forward passes, token slots and peak memory."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Side:
    """What one side did: its outputs, time, work and memory (None: not observable)."""

    name: str
    dtype: str
    token_ids: list[list[int]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    seconds: float = 0.0
    batches: int = 0
    forward_calls: int | None = 0
    weight_bytes: int = 0
    fed_tokens: int = 0  # token slots the model computed (input ids of every forward pass)
    useful_tokens: int = 0  # prompt tokens + generated tokens fed back (no padding, no finished)
    peak_memory_gb: float | None = None
    own_weights: bool = False  # the engine built its own weights: answers are not comparable

    @property
    def output_tokens(self) -> int:
        return sum(len(x) for x in self.token_ids)


class Timer:
    """Counts forward calls of ``model`` and times a block, synchronising CUDA."""

    def __init__(self, model, device: str):
        self.model, self.cuda = model, device.startswith("cuda")
        self.calls = 0
        self.seconds = 0.0

    def __enter__(self) -> Timer:
        import torch

        self.fed_tokens = 0
        self._hook = self.model.register_forward_pre_hook(self._count, with_kwargs=True)
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self._start
        self._hook.remove()

    def _count(self, module, args, kwargs) -> None:
        self.calls += 1
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.fed_tokens += ids.numel() if ids is not None else 0


def finish(side: Side, timer: Timer, model, batches: int, device: str, prompts, cap) -> Side:
    """Record time, passes and token slots. Useful slots: prompt + every generated token fed
    back (all but the last, which is EOS or the one that hit the cap)."""
    import torch

    from imhibench.bench.models import weight_bytes

    side.seconds, side.forward_calls, side.batches = timer.seconds, timer.calls, batches
    side.fed_tokens = timer.fed_tokens
    generated = [len(x) + (len(x) < cap) for x in side.token_ids]  # + EOS unless capped
    side.useful_tokens = sum(len(p) for p in prompts) + sum(g - 1 for g in generated)
    side.weight_bytes = weight_bytes(model)
    if device.startswith("cuda"):
        side.peak_memory_gb = torch.cuda.max_memory_allocated() / 1e9
    return side


def process_peak_rss_gb() -> float:
    """This process's peak resident memory so far (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e9 if sys.platform == "darwin" else peak * 1024 / 1e9


def free_memory(device: str) -> None:
    """Release the previous side's model before loading the next (one model at a time)."""
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
