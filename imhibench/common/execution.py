"""Execution settings: how a job runs (batching, shard size, engine, device), as opposed to what
it answers. Rules get only the answer-affecting settings as params, so that Snakemake reruns a
job when an answer could change and never when only the way of computing it does; the scripts
read the execution settings from the workflow config through the `get_*` helpers here, and every
stage records them in its provenance."""

from __future__ import annotations

from imhibench.config.plan import Plan
from imhibench.generate.base import EXECUTION_SETTINGS, answer_settings


def model_answer_settings(plan: Plan, model: str) -> dict:
    """The generate rule's `settings` param: the answer-affecting generation settings of
    `model`; none for imported answers (kind `responses`), which no decoding setting changes
    (so a new `max_new_tokens` reruns neither their jobs nor the paid metrics scoring them)."""
    if is_imported(plan.model(model)):
        return {}
    return answer_settings(plan.generation_settings(model))


def is_imported(spec: dict) -> bool:
    """A model whose answers were made elsewhere and are imported (kind `responses`): no
    device, dtype or decoding setting applies to them."""
    return spec["kind"] == "responses"


def get_execution_settings(config: dict, model: str) -> dict:
    """The model's execution settings (defaults merged with its own `generation` entry)."""
    settings = Plan(config).generation_settings(model)
    answers = answer_settings(settings)
    return {k: v for k, v in settings.items() if k in EXECUTION_SETTINGS and k not in answers}


def get_generation_settings(config: dict, model: str, params_settings: dict) -> dict:
    """Everything the generate stage needs: the rule's answer settings plus the execution ones."""
    return {**params_settings, **get_execution_settings(config, model)}


#: Keys of a model's `api` entry that change how requests are sent or costed, not the answers:
#: like EXECUTION_SETTINGS, they are read from the config when the job runs and trigger no rerun.
API_EXECUTION_KEYS = frozenset(
    {
        "concurrency",
        "timeout_s",
        "max_attempts",
        "backoff_s",
        "max_backoff_s",
        "price_per_million_tokens",
    }
)
#: Parts of a model entry that are never a rule param: cluster resources, execution placement,
#: `generation` (its answer-affecting part is the rule's `settings` param) and `random_weights`
#: (a mark in the tables).
_SPEC_EXECUTION_KEYS = ("resources", "generation", "run_on", "random_weights")
# Which test sets a model answers changes which jobs exist, never an answer.
_SPEC_PLAN_KEYS = ("datasets",)


def answer_model_spec(spec: dict) -> dict:
    """The part of a model entry that can change its answers (the generate rule's param): a
    test set added to its `datasets` reruns none of the jobs it already has."""
    answer = {k: v for k, v in spec.items() if k not in _SPEC_EXECUTION_KEYS + _SPEC_PLAN_KEYS}
    if "api" in answer:
        answer["api"] = {k: v for k, v in answer["api"].items() if k not in API_EXECUTION_KEYS}
    return answer


def get_model_spec(config: dict, model: str) -> dict:
    """The whole model entry, execution keys included, as the generate stage needs it."""
    return Plan(config).model(model)


def get_device(config: dict) -> str:
    """`device` of the config: auto, cuda or cpu."""
    return config["device"]
