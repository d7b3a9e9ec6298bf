"""Workflow configuration: schema validation, semantic checks, and the plan of jobs it implies.

Snakemake's rules/common.smk is a thin layer over `Plan`; everything here is unit-tested.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import jsonschema
import yaml

from imhibench.config_overrides import coerce_config, strict_validator
from imhibench.errors import ImhiBenchError
from imhibench.fetch import UPSTREAM_REPO, source_url
from imhibench.tasks import all_tasks

_T = TypeVar("_T")

log = logging.getLogger(__name__)

CHECKPOINT_ROOT = "resources/checkpoints"
IMHI_ROOT = "resources/imhi"
# imhi.source keyword (as null): GitHub raw files at imhi.commit.
UPSTREAM_SOURCE = "upstream"
CHECKPOINT_FIELDS = ("hub_id", "revision", "weights", "path")
# Model kinds that read no checkpoint (imported answers; answers from an API endpoint).
KINDS_WITHOUT_CHECKPOINT = ("responses", "api")
# The generate rule of a model, by (kind, run_on); every other model uses rule `generate`.
GENERATE_RULES = {("api", "local"): "generate_api_local", ("api", "cluster"): "generate_api"}
# Scorer keys that only name what the tables show (never a scorer option, so never a rerun).
TABLE_ONLY_FIELDS = ("parabank2_sha256",)
# The option through which each model-based scorer receives its checkpoint directory.
SCORER_CHECKPOINT_OPTION = {"bart_score": "checkpoint", "bert_score": "model"}
# Scorers that run as a job of their own per (model, dataset), before the score job that merges
# their columns: a causal LM (backend hf, GPU resources of its own) or an endpoint (backend api,
# run_on local or cluster, as kind-api generation). Their own keys, not passed to the metric:
MODEL_METRICS = ("gpt_score", "llm_judge")
MODEL_METRIC_JOB_KEYS = ("run_on", "resources", "datasets")
MODEL_METRIC_ROOT = "results/model_metrics"
# The metric validation runs each model metric's job over upstream's rated explanations as the
# (model, dataset) below; the leading underscore keeps it apart from every catalog name.
VALIDATION_JOB = ("_human_ratings", "rated_explanations")
# The rated explanations as that job's inputs: responses (the explanations), test set (posts).
RATED_EXPLANATIONS = {
    "responses": "results/metric_validation/rated_explanations.parquet",
    "test_set": "results/metric_validation/rated_posts.parquet",
}


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
    `imhibench.config_overrides`). A config that passes plans at least one job, and its
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
    from imhibench.aggregate import load_published

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


def checkpoint_key(spec: dict) -> str:
    """Directory name of a hub checkpoint: owner--name@revision."""
    return f"{spec['hub_id'].replace('/', '--')}@{spec['revision']}"


def checkpoint_dir(spec: dict) -> str:
    """Where a checkpoint lives: its local `path`, or the fetch stage's output directory."""
    if spec.get("path"):
        return spec["path"]
    return f"{CHECKPOINT_ROOT}/{checkpoint_key(spec)}"


@dataclass(frozen=True)
class Skipped:
    model: str
    dataset: str
    reason: str


class Plan:
    """The (model, dataset) jobs a validated config asks for, and where their inputs live."""

    def __init__(self, config: dict):
        self.config = config
        self.models = list(config["models"])
        self.datasets = list(config["datasets"])
        self.jobs: list[tuple[str, str]] = []
        self.skipped: list[Skipped] = []
        for model in self.models:
            split = self.model(model)["split"]
            for dataset in self.datasets:
                reason = self._skip_reason(dataset, split) or self._answers_only(model, dataset)
                if reason:
                    self.skipped.append(Skipped(model, dataset, reason))
                else:
                    self.jobs.append((model, dataset))

    def _skip_reason(self, dataset: str, split: str) -> str | None:
        files = self.dataset(dataset)["files"]
        if split in files:
            return None
        if not files:
            return (
                f"{dataset} has no test file (never released upstream); add one under "
                f"dataset_catalog.{dataset}.files.{split}: {{local_path: ..., sha256: ...}}"
            )
        return f"{dataset} has no {split} split (it has {sorted(files)})"

    def _answers_only(self, model: str, dataset: str) -> str | None:
        """A model that lists the `datasets` it answers (e.g. imported answers) skips others."""
        answered = self.model(model).get("datasets")
        if answered is None or dataset in answered:
            return None
        return f"{model} answers only {answered} (model_catalog.{model}.datasets)"

    def rows_of(self, model: str) -> int | None:
        """Rows per test set of a model: its own `rows_per_dataset`, else the global one."""
        return self.model(model).get("rows_per_dataset", self.config["rows_per_dataset"])

    def imhi_file_source(self, relative_path: str) -> str:
        """URL of an upstream IMHI file: under imhi.source, or GitHub at imhi.commit when the
        source is null or `upstream`. Every IMHI file (test sets, example answers) uses it."""
        base = self.config["imhi"]["source"]
        if base in (None, UPSTREAM_SOURCE):
            base = f"{UPSTREAM_REPO}/{self.config['imhi']['commit']}"
        return source_url(base, relative_path)

    def example_responses_source(self, dataset: str) -> str:
        """URL of the upstream example answers for `dataset` (key imhi_example_responses)."""
        return self.imhi_file_source(self.config["imhi_example_responses"][dataset]["path"])

    def rating_files(self) -> dict[str, dict]:
        """Upstream's human-rating files the metric validation reads (name -> path, sha256);
        empty when the stage is off."""
        return dict(self.config["metric_validation"]["ratings"])

    def rating_file_source(self, name: str) -> str:
        """URL of one human-rating file (metric_validation.ratings.<name>)."""
        return self.imhi_file_source(self.rating_files()[name]["path"])

    def skip_messages(self, table: str | None = None) -> list[str]:
        """One line per skipped (dataset, reason), naming the models it affects; with ``table``
        (main / expert), only those of that table's datasets."""
        grouped: dict[tuple[str, str], list[str]] = {}
        for skip in self.skipped:
            if table is not None and self.dataset(skip.dataset)["table"] != table:
                continue
            grouped.setdefault((skip.dataset, skip.reason), []).append(skip.model)
        return [f"skipping {d} for {', '.join(models)}: {r}" for (d, r), models in grouped.items()]

    def model(self, name: str) -> dict:
        return self.config["model_catalog"][name]

    def dataset(self, name: str) -> dict:
        return self.config["dataset_catalog"][name]

    def task_of(self, dataset: str) -> str:
        return self.dataset(dataset)["task"]

    def split_of(self, model: str) -> str:
        return self.model(model)["split"]

    def models_with_jobs(self) -> list[str]:
        return [m for m in self.models if any(job[0] == m for job in self.jobs)]

    def test_file(self, dataset: str, split: str) -> dict:
        return self.dataset(dataset)["files"][split]

    def test_file_source(self, dataset: str, split: str) -> str:
        """URL (or local path) of a test file: upstream/mirror path, or the user's own file."""
        spec = self.test_file(dataset, split)
        if "local_path" in spec:
            return spec["local_path"]
        return self.imhi_file_source(spec["path"])

    def test_set_path(self, dataset: str, split: str, ext: str = "parquet") -> str:
        return f"{IMHI_ROOT}/{split}/{dataset}.{ext}"

    def needed_test_sets(self) -> list[tuple[str, str]]:
        return sorted({(d, self.split_of(m)) for m, d in self.jobs})

    def generation_settings(self, model: str) -> dict:
        return {**self.config["generation"], **self.model(model).get("generation", {})}

    def model_checkpoints(self, model: str) -> dict[str, dict]:
        """Checkpoints a model's generation reads: {'model': spec, 'base': spec}."""
        spec = self.model(model)
        if spec["kind"] in KINDS_WITHOUT_CHECKPOINT:
            return {}
        found = {"model": spec}
        if spec["kind"] == "lora":
            found["base"] = spec["base"]
        return found

    def generate_rule(self, model: str) -> str:
        """The rule that generates a model's answers (API models run where `run_on` says)."""
        spec = self.model(model)
        return GENERATE_RULES.get((spec["kind"], spec.get("run_on")), "generate")

    def models_of_generate_rule(self, rule: str) -> list[str]:
        return [m for m in self.config["model_catalog"] if self.generate_rule(m) == rule]

    def classifier(self, dataset: str) -> dict:
        return self.config["classifiers"][self.task_of(dataset)]

    def scorer_checkpoints(self) -> dict[str, dict]:
        scorers = self.config["scorers"]
        return {k: v for k, v in scorers.items() if k in SCORER_CHECKPOINT_OPTION}

    def model_metrics(self) -> list[str]:
        """The configured scorers that run as jobs of their own (MODEL_METRICS)."""
        return [m for m in MODEL_METRICS if m in self.config["scorers"]]

    def model_metric_rule(self, metric: str) -> str:
        """`score_metric` (hf), `score_metric_api` (api, run_on cluster) or
        `score_metric_local` (api, run_on local)."""
        spec = self.config["scorers"][metric]
        if spec["backend"] == "hf":
            return "score_metric"
        return "score_metric_local" if spec["run_on"] == "local" else "score_metric_api"

    def model_metrics_of_rule(self, rule: str) -> list[str]:
        return [m for m in self.model_metrics() if self.model_metric_rule(m) == rule]

    def model_metric_paths(self, model: str, dataset: str) -> dict[str, str]:
        """metric -> per-row output of that metric's job for (model, dataset), for the metrics
        whose `datasets` (all when absent) include `dataset`."""
        found = {}
        for metric in self.model_metrics():
            datasets = self.config["scorers"][metric].get("datasets")
            if datasets is None or dataset in datasets:
                found[metric] = f"{MODEL_METRIC_ROOT}/{metric}/{model}/{dataset}.parquet"
        return found

    def validation_model_metric_paths(self) -> dict[str, str]:
        """metric -> per-row output of each model metric's job over the rated explanations
        (every configured model metric, whatever its `datasets`); none when the metric
        validation is off."""
        if not self.rating_files():
            return {}
        model, dataset = VALIDATION_JOB
        return {
            m: f"{MODEL_METRIC_ROOT}/{m}/{model}/{dataset}.parquet" for m in self.model_metrics()
        }

    def model_metric_checkpoint(self, metric: str) -> dict | None:
        """The checkpoint spec of an hf model metric, None for api."""
        spec = self.config["scorers"][metric]
        return spec if spec["backend"] == "hf" else None

    def model_metric_settings(self, metric: str) -> dict:
        """Options of a model metric for imhibench.metrics, its checkpoint as `checkpoint`."""
        spec = self.config["scorers"][metric]
        skip = (*CHECKPOINT_FIELDS, *MODEL_METRIC_JOB_KEYS)
        options = {k: v for k, v in spec.items() if k not in skip}
        if spec["backend"] == "hf":
            options["checkpoint"] = checkpoint_dir(spec)
        return options

    def scorer_settings(self) -> dict[str, dict]:
        """Options for imhibench.metrics.explanation, checkpoints resolved to directories
        (the scorers run by the score job itself: not MODEL_METRICS)."""
        settings = {}
        for name, spec in self.config["scorers"].items():
            if name in MODEL_METRICS:
                continue
            options = {
                k: v for k, v in spec.items() if k not in CHECKPOINT_FIELDS + TABLE_ONLY_FIELDS
            }
            if name in SCORER_CHECKPOINT_OPTION:
                options[SCORER_CHECKPOINT_OPTION[name]] = checkpoint_dir(spec)
            if name == "bart_score" and "weights_file" in options:
                options["weights_file"] = self.bart_score_weights_path()
            settings[name] = options
        return settings

    def bart_score_weights(self) -> dict | None:
        """Where the BARTScore weights file comes from (scorers.bart_score.weights_file)."""
        return self.config["scorers"].get("bart_score", {}).get("weights_file")

    def parabank2_sha256(self) -> str | None:
        """The sha256 recorded as ParaBank2's bart_score.pth (scorers.bart_score), or None."""
        return self.config["scorers"].get("bart_score", {}).get("parabank2_sha256")

    def random_weight_models(self) -> list[str]:
        """Models with jobs whose entry says `random_weights: true` (marked in the tables)."""
        return [m for m in self.models_with_jobs() if self.model(m).get("random_weights")]

    def bart_score_weights_path(self) -> str | None:
        """The fetched weights file the score stage reads (a folder per source), or None for
        the plain checkpoint."""
        from imhibench.scorer_weights import weights_path

        spec = self.bart_score_weights()
        return weights_path(spec) if spec else None

    def hub_checkpoints(self) -> dict[str, dict]:
        """Every hub checkpoint the planned jobs need, by checkpoint_key."""
        specs = [s for m in self.models_with_jobs() for s in self.model_checkpoints(m).values()]
        if "mentalbert" in self.config["labelers"]:
            specs += [self.classifier(d) for d in {d for _, d in self.jobs}]
        specs += list(self.scorer_checkpoints().values())
        specs += [s for m in self.model_metrics() if (s := self.model_metric_checkpoint(m))]
        return {checkpoint_key(s): s for s in specs if not s.get("path")}

    def published_file(self) -> str:
        """The published weighted F1 file: the config's, else the transcription that ships."""
        from imhibench.aggregate import SHIPPED_PUBLISHED

        return self.config["published_weighted_f1"] or str(SHIPPED_PUBLISHED)

    def published_names(self) -> dict[str, str | None]:
        """Each model with jobs and its row in the published file (None: it has none)."""
        return {m: self.model(m).get("published_as") for m in self.models_with_jobs()}

    def scorers_of_group(self, group: str) -> list[str]:
        """The scorers with a value in a table group: all but model metrics whose `datasets`
        miss every test set of the group."""
        datasets = set(self.table_datasets(group))
        return [
            name
            for name, spec in self.config["scorers"].items()
            if name not in MODEL_METRICS or spec.get("datasets") is None
            or datasets & set(spec["datasets"])
        ]  # fmt: skip

    def table_datasets(self, table: str) -> list[str]:
        """Selected datasets of one table (main / expert) that have at least one job."""
        with_jobs = {d for _, d in self.jobs}
        return [d for d in self.datasets if self.dataset(d)["table"] == table and d in with_jobs]
