"""The plan of jobs a validated config implies: (model, dataset) pairs, skipped pairs with their
reasons, checkpoints per model, the tables' datasets.

Snakemake's rules/common.smk is a thin layer over `Plan`; everything here is unit-tested."""

from __future__ import annotations

from dataclasses import dataclass

from imhibench.config.paths import checkpoint_key
from imhibench.config.scorers import ScorersPlan
from imhibench.config.sources import SourcesPlan

# Model kinds that read no checkpoint (imported answers; answers from an API endpoint).
KINDS_WITHOUT_CHECKPOINT = ("responses", "api")
# The generate rule of a model, by (kind, run_on); every other model uses rule `generate`.
GENERATE_RULES = {("api", "local"): "generate_api_local", ("api", "cluster"): "generate_api"}


@dataclass(frozen=True)
class Skipped:
    model: str
    dataset: str
    reason: str


class Plan(SourcesPlan, ScorersPlan):
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

    def random_weight_models(self) -> list[str]:
        """Models with jobs whose entry says `random_weights: true` (marked in the tables)."""
        return [m for m in self.models_with_jobs() if self.model(m).get("random_weights")]

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
        from imhibench.common.published import SHIPPED_PUBLISHED

        return self.config["published_weighted_f1"] or str(SHIPPED_PUBLISHED)

    def published_names(self) -> dict[str, str | None]:
        """Each model with jobs and its row in the published file (None: it has none)."""
        return {m: self.model(m).get("published_as") for m in self.models_with_jobs()}

    def table_datasets(self, table: str) -> list[str]:
        """Selected datasets of one table (main / expert) that have at least one job."""
        with_jobs = {d for _, d in self.jobs}
        return [d for d in self.datasets if self.dataset(d)["table"] == table and d in with_jobs]
