"""Where models run: one rule for every stage."""

from __future__ import annotations

from imhibench.errors import ImhiBenchError


def resolve_device(device: str | None = "auto") -> str:
    """'auto' (or None) -> 'cuda' when a GPU is visible, else 'cpu'; 'cuda' needs a GPU."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ImhiBenchError(f"device: {device} was requested but no CUDA device is visible")
    return device
