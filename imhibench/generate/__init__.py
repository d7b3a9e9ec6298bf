"""Generation backends (causal, seq2seq, lora) behind one interface, plus response import."""

from imhibench.generate.base import (
    GenerationBackend,
    GenerationResult,
    GenerationSettings,
    known_kinds,
    load_backend,
    register_backend,
)
from imhibench.generate.responses import import_responses

__all__ = [
    "GenerationBackend",
    "GenerationResult",
    "GenerationSettings",
    "import_responses",
    "known_kinds",
    "load_backend",
    "register_backend",
]
