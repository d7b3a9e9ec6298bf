"""The generation interface, its settings and the registry of backends keyed by ``kind``."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from imhibench.common.errors import ImhiBenchError

DTYPES = ("auto", "float32", "bfloat16", "float16")
#: greedy: always greedy (default); checkpoint: the checkpoint's generation_config.json with
#: max_length=2048 counting padded prompt + answer, as upstream IMHI.py (seeded).
DECODINGS = ("greedy", "checkpoint")
#: auto: the per-device default below; static: length-sorted padded batches through
#: ``generate``; continuous: transformers continuous batching (``generate_batch``); vllm: vLLM
#: (optional extra, GPU only); upstream: IMHI.py's loop (float32, batches of 8 in file order).
ENGINES = ("auto", "static", "continuous", "vllm", "upstream")
#: Per device, the fastest engine verified to give the reference answers (those of
#: one-query-at-a-time greedy ``generate``). Only CPU timings exist (continuous batching is
#: overhead-bound there, docs/benchmarks.md); no GPU was available to show continuous faster.
DEFAULT_ENGINE = {"cpu": "static", "cuda": "static"}
#: Engines verified to give the reference answers (tests/test_engines.py); choosing among them
#: changes speed, not answers.
REFERENCE_ENGINES = frozenset({"static", "continuous"})
#: Generation settings that change how answers are computed, not what they are (shard size,
#: batch budget, batch size cap, and ``engine`` while it names a reference engine, see
#: ``answer_settings``): recorded in provenance, read from the config when the job runs, and
#: not Snakemake params, so changing one reruns nothing (docs/cluster.md); saved answers are
#: reused when only these change (the generate resume key uses ``answer_settings``).
EXECUTION_SETTINGS = frozenset({"shard_rows", "batch_tokens", "max_batch_size", "engine"})


@dataclass(frozen=True)
class GenerationSettings:
    """How to generate. Decoding is greedy (``do_sample=False``, ``num_beams=1``) unless
    ``decoding="checkpoint"`` (see ``DECODINGS``); ``engine`` picks the generation loop.

    ``max_new_tokens`` counts generated tokens only. Upstream IMHI.py calls
    ``generate(max_length=2048)``, which counts prompt + answer; the default 2048 new tokens is
    therefore never shorter than upstream's budget (IMHI prompts stay well below 2048 tokens).
    ``batch_tokens`` is the per-batch budget of padded prompt length plus ``max_new_tokens``,
    times the batch size. ``dtype="auto"`` means bfloat16 on CUDA and float32 on CPU (upstream
    used float32 everywhere).
    """

    max_new_tokens: int = 2048
    batch_tokens: int = 16384
    max_batch_size: int = 64
    chat_template: bool = False
    dtype: str = "auto"
    seed: int = 0
    min_new_tokens: int = 0
    decoding: str = "greedy"
    engine: str = "auto"

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "batch_tokens", "max_batch_size"):
            if getattr(self, name) < 1:
                raise ImhiBenchError(f"generation settings: {name} must be >= 1")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ImhiBenchError("generation settings: need 0 <= min_new_tokens <= max_new_tokens")
        if self.dtype not in DTYPES:
            raise ImhiBenchError(f"generation settings: dtype {self.dtype!r} not in {DTYPES}")
        if self.decoding not in DECODINGS:
            raise ImhiBenchError(
                f"generation settings: decoding {self.decoding!r} not in {DECODINGS}"
            )
        if self.engine not in ENGINES:
            raise ImhiBenchError(f"generation settings: engine {self.engine!r} not in {ENGINES}")
        if self.decoding == "checkpoint" and self.engine not in ("auto", "static", "upstream"):
            raise ImhiBenchError(
                f"generation settings: decoding 'checkpoint' needs engine static or upstream "
                f"(max_length counts the padded prompt), not {self.engine!r}"
            )
        if self.engine == "upstream" and self.dtype not in ("auto", "float32"):
            raise ImhiBenchError(
                f"generation settings: engine 'upstream' runs in float32 as IMHI.py; dtype "
                f"{self.dtype!r} contradicts it (use dtype auto or float32)"
            )
        if self.engine == "upstream" and self.chat_template:
            raise ImhiBenchError(
                "generation settings: engine 'upstream' feeds the raw queries as IMHI.py; "
                "chat_template true contradicts it (set chat_template: false)"
            )


#: Model kinds and the engines they can run: encoder-decoder models have only the static loop.
KIND_ENGINES = {"seq2seq": ("auto", "static")}


def kind_engine_problem(kind: str, engine: str) -> str | None:
    """Why a model of ``kind`` cannot run ``engine``, or None when it can."""
    if engine in KIND_ENGINES.get(kind, ENGINES):
        return None
    return (
        f"engine {engine!r} is for causal and lora models, not kind {kind!r}; set it per "
        "model (model_catalog.<model>.generation.engine)"
    )


def resolve_engine(engine: str, device: str) -> str:
    """``engine``, or for ``auto`` the default of ``device`` (``cuda:1`` counts as ``cuda``)."""
    if engine != "auto":
        return engine
    return DEFAULT_ENGINE["cuda" if device.startswith("cuda") else "cpu"]


def answer_settings(settings: dict) -> dict:
    """The settings that determine the answers: all but the execution settings.

    ``engine`` stays when it names an engine that is not a reference engine (``upstream``
    batches 8 queries in file order in float32; ``vllm`` has its own kernels), because
    switching to or from it can change answers.
    """
    kept = {k: v for k, v in settings.items() if k not in EXECUTION_SETTINGS}
    engine = settings.get("engine", "auto")
    if engine not in REFERENCE_ENGINES and engine != "auto":
        kept["engine"] = engine
    return kept


@dataclass(frozen=True)
class GenerationResult:
    """One text per query, in query order, and its number of generated tokens (EOS excluded)."""

    texts: list[str]
    n_output_tokens: list[int]


#: Called after each batch with (rows, output tokens) of that batch; for progress reports.
BatchCallback = Callable[[int, int], None]


def cut_at_eos(row: list[int], eos_ids: set[int]) -> list[int]:
    """``row`` up to (without) its first EOS."""
    return row[: next((j for j, t in enumerate(row) if t in eos_ids), len(row))]


class GenerationBackend(Protocol):
    """Anything that answers a list of queries, one response per query, same order."""

    def generate(
        self, queries: list[str], on_batch: BatchCallback | None = None
    ) -> GenerationResult: ...

    def prompt_lengths(self, queries: list[str]) -> list[int]:
        """Prompt length of each query (tokens); generation order and shards sort by it."""
        ...


BackendLoader = Callable[..., GenerationBackend]

# kind -> loader, or "module:function" imported on first use (keeps torch out of plain imports).
# A loader is called as loader(model_dir=..., base_model_dir=..., settings=..., device=...).
_REGISTRY: dict[str, BackendLoader | str] = {
    "causal": "imhibench.generate.causal:load_causal",
    "seq2seq": "imhibench.generate.seq2seq:load_seq2seq",
    "lora": "imhibench.generate.lora:load_lora",
    "responses": "imhibench.generate.responses:load_responses",
    "api": "imhibench.generate.api:load_api",
}


def known_kinds() -> list[str]:
    """The registered backend kinds, sorted."""
    return sorted(_REGISTRY)


def register_backend(kind: str, loader: BackendLoader | str) -> None:
    """Add or replace the loader of ``kind``."""
    _REGISTRY[kind] = loader


def load_backend(
    kind: str,
    *,
    model_dir: str,
    base_model_dir: str | None = None,
    settings: GenerationSettings,
    device: str | None = None,
    **options: object,
) -> GenerationBackend:
    """Load the backend of ``kind`` (``causal``, ``seq2seq``, ``lora``, ...) from local dirs.

    ``options`` go to the loader as they are (e.g. ``api=`` and ``label=`` for ``kind: api``).
    """
    if kind not in _REGISTRY:
        raise ImhiBenchError(f"unknown generation backend kind {kind!r}; known: {known_kinds()}")
    loader = _REGISTRY[kind]
    if isinstance(loader, str):
        module, _, name = loader.partition(":")
        loader = getattr(importlib.import_module(module), name)
    return loader(
        model_dir=model_dir,
        base_model_dir=base_model_dir,
        settings=settings,
        device=device,
        **options,
    )


def check_model_directories(
    model: str, spec: dict, model_dir: str | None, base_model_dir: str | None = None
) -> None:
    """Before anything is written: the model's directory (and its base's) must be what its
    kind loads, a Hugging Face model directory (config.json with a model_type) or, for the
    adapter of a ``lora`` model, a PEFT adapter (adapter_config.json). The error names the
    config key that points there."""
    for role, directory in (("", model_dir), ("base.", base_model_dir)):
        if directory is None:
            continue
        entry = spec.get("base", {}) if role else spec
        key = "path" if entry.get("path") else "hub_id"
        where = f"model_catalog.{model}.{role}{key}={entry.get(key)}"
        if key == "hub_id":
            where += f" ({directory})"
        if not role and spec.get("kind") == "lora":
            if not (Path(directory) / "adapter_config.json").is_file():
                raise ImhiBenchError(
                    f"{where}: not a PEFT adapter directory (no adapter_config.json)"
                )
            continue
        config = Path(directory) / "config.json"
        if not config.is_file():
            raise ImhiBenchError(f"{where}: not a Hugging Face model directory (no config.json)")
        try:
            model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
        except (ValueError, AttributeError) as err:
            raise ImhiBenchError(
                f"{where}: not a Hugging Face model directory (config.json unreadable: {err})"
            ) from err
        if not model_type:
            raise ImhiBenchError(
                f"{where}: not a Hugging Face model directory (config.json has no model_type)"
            )


def require_dir(path: str | None, what: str, marker: str) -> str:
    """``path`` if it is a directory holding ``marker``; else ImhiBenchError naming it."""
    if path is None:
        raise ImhiBenchError(f"{what}: no directory given")
    if not (Path(path) / marker).is_file():
        raise ImhiBenchError(f"{what} {path}: not a model directory (no {marker})")
    return path


def resolve_device(device: str | None) -> str:
    """``device`` or, when None, ``cuda`` if available else ``cpu``."""
    from imhibench.common.devices import resolve_device as resolve

    return resolve(device)


def resolve_dtype(dtype: str, device: str):
    """The torch dtype for a settings dtype name; ``auto`` -> bf16 on CUDA, fp32 elsewhere."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)
