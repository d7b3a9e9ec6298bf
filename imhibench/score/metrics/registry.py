"""The explanation-metric registry: what a metric returns, what it may be given, and how it is
registered. Kept apart from the metrics themselves so that metrics in modules of their own
(GPTScore, the LLM judge) register here without importing ``explanation``, which imports them."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from imhibench.common.errors import ImhiBenchError


class MetricOutput(NamedTuple):
    """Per-row score columns and corpus-level summary values of one metric."""

    columns: dict[str, list[float]]
    summary: dict[str, float]
    # What the run was (judge identity, rubric, tokens, cost, ...), for the stage's provenance.
    provenance: dict[str, Any] | None = None


@dataclass(frozen=True)
class MetricContext:
    """What some metrics need besides the texts: the rows' ids, the queries (post and question)
    the responses answer, and where a metric that asks a paid endpoint keeps its journal
    (``<journal_prefix>.<metric>.journal.jsonl``; None: no journal, answers live in memory)."""

    row_ids: list[str] | None = None
    queries: list[str] | None = None
    journal_prefix: str | Path | None = None

    def journal_for(self, metric: str) -> str | None:
        """The output path whose ``.journal.jsonl`` holds ``metric``'s answers, or None."""
        return None if self.journal_prefix is None else f"{self.journal_prefix}.{metric}"

    def ids(self, n: int) -> list[str]:
        """Row ids (given, else ``0..n-1``), checked against the number of rows."""
        ids = [str(i) for i in range(n)] if self.row_ids is None else list(self.row_ids)
        if len(ids) != n or len(set(ids)) != n:
            raise ImhiBenchError(f"explanation metrics: {len(ids)} row ids for {n} rows")
        return ids


MetricFn = Callable[..., MetricOutput]

_REGISTRY: dict[str, MetricFn] = {}
# Metrics that take a fifth argument, the MetricContext.
_TAKES_CONTEXT: set[str] = set()


def register_explanation_metric(name: str, context: bool = False) -> Callable[[MetricFn], MetricFn]:
    """Register ``fn(predictions, references, options, device) -> MetricOutput`` as ``name``;
    with ``context=True``, ``fn(predictions, references, options, device, context)`` where
    ``context`` is a :class:`MetricContext`."""

    def decorator(fn: MetricFn) -> MetricFn:
        if name in _REGISTRY:
            raise ImhiBenchError(f"explanation metric {name!r} is registered twice")
        _REGISTRY[name] = fn
        if context:
            _TAKES_CONTEXT.add(name)
        return fn

    return decorator


def available_explanation_metrics() -> list[str]:
    """Names accepted as keys of the ``settings`` mapping."""
    return sorted(_REGISTRY)


def _check_texts(texts: Sequence[Any], side: str) -> None:
    """Raise on a None, NaN or other non-str row, naming its index."""
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ImhiBenchError(
                f"explanation metrics: {side}[{index}] is {text!r}, expected a string"
            )


def _check_inputs(predictions: Sequence[Any], references: Sequence[Any]) -> None:
    """Validate the row-aligned prediction/reference lists."""
    if len(predictions) == 0:
        raise ImhiBenchError("explanation metrics: no predictions to score")
    if len(predictions) != len(references):
        raise ImhiBenchError(
            f"explanation metrics: {len(predictions)} predictions but {len(references)} references"
        )
    _check_texts(predictions, "predictions")
    _check_texts(references, "references")


def _options(
    metric: str, options: Any, required: Sequence[str], defaults: dict[str, Any]
) -> dict[str, Any]:
    """Merge ``options`` over ``defaults``; unknown or missing keys raise."""
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise ImhiBenchError(f"settings[{metric!r}] must be a mapping, got {options!r}")
    unknown = set(options) - set(required) - set(defaults)
    if unknown:
        raise ImhiBenchError(f"settings[{metric!r}]: unknown option(s) {sorted(unknown)}")
    missing = [key for key in required if options.get(key) is None]
    if missing:
        raise ImhiBenchError(f"settings[{metric!r}]: missing option(s) {missing}")
    return {**defaults, **options}


# Options every model metric (GPTScore, LLM judge) takes besides `backend` (hf or api).
MODEL_METRIC_DEFAULTS = {"checkpoint": None, "api": None, "dtype": "float32"}


def model_metric_options(metric: str, options: Any, defaults: dict[str, Any]) -> dict[str, Any]:
    """`_options` of a model metric: `backend` hf (with a checkpoint) or api (with `api`)."""
    opts = _options(
        metric, options, required=("backend",), defaults={**MODEL_METRIC_DEFAULTS, **defaults}
    )
    if opts["backend"] not in ("hf", "api"):
        raise ImhiBenchError(
            f"settings[{metric!r}]['backend'] must be hf or api, got {opts['backend']!r}"
        )
    if opts["backend"] == "hf" and opts["checkpoint"] is None:
        raise ImhiBenchError(f"settings[{metric!r}]: backend hf needs a checkpoint")
    return opts


def _positive_int(metric: str, key: str, value: Any) -> int:
    """``value`` if it is an int >= 1, else raise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ImhiBenchError(f"settings[{metric!r}][{key!r}] must be a positive int, got {value!r}")
    return value


def _mean(values: Sequence[float]) -> float:
    """Plain arithmetic mean."""
    return math.fsum(values) / len(values)
