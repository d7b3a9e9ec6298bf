"""Config validation: the JSON schema, then checks a schema cannot express (names, engines,
published rows), each error naming the key."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import jsonschema
import yaml

from imhibench.common.errors import ImhiBenchError
from imhibench.common.tasks import all_tasks
from imhibench.config.overrides import coerce_config, strict_validator
from imhibench.config.plan import Plan
from imhibench.config.scorers import MODEL_METRICS

_T = TypeVar("_T")


log = logging.getLogger(__name__)


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


# Added to a schema error about a catalog key: model and dataset names become file paths.
NAME_RULE = (
    " (names become file paths: letters, digits, '.', '_' and '-', starting with a letter or "
    "digit; no '/', '..' or spaces)"
)


def _repeated(items: list) -> list:
    return sorted({repr(x) for x in items if items.count(x) > 1})


def _error_line(error: jsonschema.ValidationError) -> str:
    hint = NAME_RULE if "propertyNames" in error.schema_path else ""
    if error.validator == "uniqueItems":
        hint = f" (repeated: {', '.join(_repeated(error.instance))})"
    return f"  {_key_path(error)}: {error.message}{hint}"


@functools.cache
def _schema(path: str) -> dict:
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def stop_on_error(check: Callable[..., _T], *args: object) -> _T:
    """`check(*args)` for the Snakefile: an ImhiBenchError (a bad config) stops Snakemake with
    its message alone, `imhi-bench: <message>`, exit status 1. (Raised, Snakemake would print
    it with two traceback lines that point into imhi-bench's code and add nothing.)"""
    try:
        return check(*args)
    except ImhiBenchError as err:
        raise SystemExit(f"imhi-bench: {err}") from None


def validate_config(config: dict, schema_path: str | Path) -> None:
    """Validate against the JSON schema, then cross-check names; errors name the key.
    Values the schema wants as another type are first coerced, once, in place: strings from
    `--config` read as YAML, null strings (`'null'`) as None, 42.0 as 42 (see
    `imhibench.config.overrides`). A config that passes plans at least one job, and its
    `published_as` names are rows of the published file."""
    validator = strict_validator(_schema(str(schema_path)))
    coerce_config(config, validator)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [_error_line(e) for e in errors]
        raise ImhiBenchError("invalid configuration:\n" + "\n".join(lines))
    _check_names(config)
    plan = Plan(config)
    if not plan.jobs:
        raise ImhiBenchError(
            "invalid configuration:\n  models, datasets: no (model, dataset) job to run:\n"
            + "\n".join(f"    {m}" for m in plan.skip_messages())
        )
    _check_jobs(plan)
    _check_published(plan)


def _case_collisions(key: str, names: list[str]) -> list[str]:
    """Names that differ only in case: their output files collide on case-insensitive file
    systems (macOS, Windows)."""
    by_folded: dict[str, list[str]] = {}
    for name in dict.fromkeys(names):
        by_folded.setdefault(name.casefold(), []).append(name)
    return [
        f"{key}: {' and '.join(map(repr, same))} differ only in case (their output files would "
        "be the same file on a case-insensitive file system)"
        for same in by_folded.values()
        if len(same) > 1
    ]


def _check_published(plan: Plan) -> None:
    """Every planned model's `published_as` is a row of the published file, read now rather
    than by the aggregate after every other job."""
    from imhibench.common.published import load_published

    path = plan.published_file()
    try:
        rows = list(load_published(path).index)
    except ImhiBenchError as err:
        raise ImhiBenchError(f"invalid configuration:\n  published_weighted_f1: {err}") from err
    problems = [
        f"model_catalog.{model}.published_as: {name!r} is not a row of {path} ({rows})"
        for model, name in plan.published_names().items()
        if name is not None and name not in rows
    ]
    if problems:
        raise ImhiBenchError("invalid configuration:\n" + "\n".join(f"  {p}" for p in problems))


def _check_names(config: dict) -> None:
    problems = _case_collisions("models", config["models"])
    problems += _case_collisions("datasets", config["datasets"])
    catalog = sorted(config["dataset_catalog"])
    for model in config["models"]:
        if model not in config["model_catalog"]:
            problems.append(
                f"models: {model!r} is not in model_catalog {sorted(config['model_catalog'])}"
            )
    for model, spec in config["model_catalog"].items():
        for dataset in spec.get("datasets", []):
            if dataset not in config["dataset_catalog"]:
                problems.append(
                    f"model_catalog.{model}.datasets: {dataset!r} is not in dataset_catalog"
                )
    for dataset in config["datasets"]:
        if dataset not in config["dataset_catalog"]:
            problems.append(f"datasets: {dataset!r} is not in dataset_catalog {catalog}")
    tasks = all_tasks()
    for name, spec in config["dataset_catalog"].items():
        if spec["task"] not in tasks:
            problems.append(
                f"dataset_catalog.{name}.task: unknown task {spec['task']!r} ({sorted(tasks)})"
            )
    for task in config["classifiers"]:
        if task not in tasks:
            problems.append(f"classifiers.{task}: unknown task ({sorted(tasks)})")
    if "mentalbert" in config["labelers"]:
        for dataset in config["datasets"]:
            task = config["dataset_catalog"].get(dataset, {}).get("task")
            if task in tasks and task not in config["classifiers"]:
                problems.append(
                    f"classifiers: no MentalBERT classifier for task {task!r} ({dataset})"
                )
    problems += _engine_problems(config)
    for metric in MODEL_METRICS:
        for dataset in config["scorers"].get(metric, {}).get("datasets") or []:
            if dataset not in config["dataset_catalog"]:
                problems.append(f"scorers.{metric}.datasets: {dataset!r} is not in dataset_catalog")
        for model in config["scorers"].get(metric, {}).get("models") or []:
            if model not in config["model_catalog"]:
                problems.append(f"scorers.{metric}.models: {model!r} is not in model_catalog")
    if problems:
        raise ImhiBenchError("invalid configuration:\n" + "\n".join(f"  {p}" for p in problems))


def _setting_key(config: dict, model: str, name: str) -> str:
    """Where a model's generation setting ``name`` comes from: its own entry or the default."""
    if name in config["model_catalog"][model].get("generation", {}):
        return f"model_catalog.{model}.generation.{name}"
    return f"generation.{name}"


def _engine_problems(config: dict) -> list[str]:
    """Selected models whose engine cannot run what the config asks (docs/generation.md,
    "Refused combinations"): a one-GPU engine for a job of several GPUs, and vLLM serving a
    LoRA adapter in float32."""
    from imhibench.generate.engines import ONE_GPU_ENGINES
    from imhibench.generate.vllm_engine import lora_dtype_problem

    problems = []
    for model in config["models"]:
        spec = config["model_catalog"].get(model)
        if spec is None or spec["kind"] not in ("causal", "lora"):
            continue
        settings = {**config["generation"], **spec.get("generation", {})}
        engine, gpus = settings.get("engine", "auto"), spec["resources"]["gpu"]
        engine_key = f"{_setting_key(config, model, 'engine')} {engine!r} ({model})"
        if engine in ONE_GPU_ENGINES and gpus > 1:
            problems.append(
                f"{engine_key} runs on one GPU, but model_catalog.{model}.resources.gpu is "
                f"{gpus}: {ONE_GPU_ENGINES[engine]}; use engine static"
            )
        dtype = settings.get("dtype", "auto")
        if engine == "vllm" and spec["kind"] == "lora" and lora_dtype_problem(dtype):
            problems.append(
                f"{engine_key} with {_setting_key(config, model, 'dtype')} {dtype!r}: "
                f"{lora_dtype_problem(dtype)}"
            )
    return problems


def _check_jobs(plan: Plan) -> None:
    """What the jobs of a config whose names are valid would refuse only when they run."""
    problems = _job_settings_problems(plan) + _api_key_problems(plan)
    if problems:
        raise ImhiBenchError("invalid configuration:\n" + "\n".join(f"  {p}" for p in problems))


def _job_settings_problems(plan: Plan) -> list[str]:
    """Selected models that generate locally whose merged generation settings the generate
    job would refuse: the job's own checks (``job_settings``), run now rather than on the GPU
    node after the model is fetched. Each problem names the model and the keys involved."""
    from imhibench.generate.engines import job_settings

    config, problems = plan.config, []
    for model in config["models"]:
        spec = config["model_catalog"].get(model)
        if spec is None or spec["kind"] not in ("causal", "seq2seq", "lora"):
            continue
        settings = plan.generation_settings(model)
        try:
            job_settings(spec["kind"], settings, config["seed"], config["device"])
        except ImhiBenchError as err:
            keys = [
                f"{_setting_key(config, model, name)}={value!r}"
                for name, value in settings.items()
                if re.search(rf"\b{name}\b", str(err))
            ]
            problems.append(f"{', '.join(keys) or f'generation ({model})'} ({model}): {err}")
    return problems


def _api_key_problems(plan: Plan) -> list[str]:
    """Model metrics asking an endpoint from this host (`backend: api`, `run_on: local`) whose
    key variable is not set here: the metric's job reads it the same way (``read_api_key``),
    but only after all generation. (With `run_on: cluster` the variable may exist on the
    cluster only, so it is not checked.)"""
    from imhibench.generate.api import ApiSettings, read_api_key

    problems = []
    for metric in plan.model_metrics():
        spec = plan.config["scorers"][metric]
        if spec["backend"] != "api" or spec["run_on"] != "local":
            continue
        where = f"scorers.{metric}.api.api_key_env"
        try:
            read_api_key(ApiSettings(**spec["api"]), where, f"remove {metric} from `scorers`")
        except ImhiBenchError as err:
            problems.append(str(err))
    return problems
