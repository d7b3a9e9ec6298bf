"""Where models run: one rule for every stage."""

from __future__ import annotations

from imhibench.common.errors import ImhiBenchError


def resolve_device(device: str | None = "auto") -> str:
    """'auto' (or None) -> 'cuda' when a GPU is visible, else 'cpu'; 'cuda' needs a GPU."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ImhiBenchError(f"device: {device} was requested but no CUDA device is visible")
    return device


def release_cached_memory() -> None:
    """Hand the CUDA allocator's cached blocks back after an out-of-memory. Called after the
    ``except`` block: inside it the exception's traceback still holds the failed batch's
    tensors (its frames' locals), so their memory could not be released."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
