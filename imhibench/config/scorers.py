"""What the config's `scorers` plan: the score job's scorers with their options, and the model
metrics (GPTScore, LLM judge) that run as jobs of their own."""

from __future__ import annotations

from imhibench.config.paths import (
    CHECKPOINT_FIELDS,
    MODEL_METRIC_ROOT,
    VALIDATION_JOB,
    checkpoint_dir,
)

# Scorer keys that only name what the tables show (never a scorer option, so never a rerun).
TABLE_ONLY_FIELDS = ("parabank2_sha256",)

# The option through which each model-based scorer receives its checkpoint directory.
SCORER_CHECKPOINT_OPTION = {"bart_score": "checkpoint", "bert_score": "model"}

# Scorers that run as a job of their own per (model, dataset), before the score job that merges
# their columns: a causal LM (backend hf, GPU resources of its own) or an endpoint (backend api,
# run_on local or cluster, as kind-api generation). Their own keys, not passed to the metric:
MODEL_METRICS = ("gpt_score", "llm_judge")

MODEL_METRIC_JOB_KEYS = ("run_on", "resources", "datasets", "models")


class ScorersPlan:
    """Plan methods: the scorers of the config and the jobs of the model metrics."""

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

    def model_metric_scores(self, metric: str, model: str, dataset: str) -> bool:
        """Whether a model metric scores (model, dataset): its `datasets` and `models` (each
        all when absent) include them."""
        spec = self.config["scorers"][metric]
        return all(spec.get(key) is None or name in spec[key]
                   for key, name in (("datasets", dataset), ("models", model)))  # fmt: skip

    def model_metric_paths(self, model: str, dataset: str) -> dict[str, str]:
        """metric -> per-row output of that metric's job for (model, dataset), for the metrics
        that score it (`model_metric_scores`)."""
        return {
            metric: f"{MODEL_METRIC_ROOT}/{metric}/{model}/{dataset}.parquet"
            for metric in self.model_metrics()
            if self.model_metric_scores(metric, model, dataset)
        }

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
        """Options of a model metric for imhibench.score.metrics, its checkpoint as `checkpoint`."""
        spec = self.config["scorers"][metric]
        skip = (*CHECKPOINT_FIELDS, *MODEL_METRIC_JOB_KEYS)
        options = {k: v for k, v in spec.items() if k not in skip}
        if spec["backend"] == "hf":
            options["checkpoint"] = checkpoint_dir(spec)
        return options

    def scorer_settings(self) -> dict[str, dict]:
        """Options for imhibench.score.metrics.explanation, checkpoints resolved to directories
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

    def bart_score_weights_path(self) -> str | None:
        """The fetched weights file the score stage reads (a folder per source), or None for
        the plain checkpoint."""
        from imhibench.fetch.scorer_weights import weights_path

        spec = self.bart_score_weights()
        return weights_path(spec) if spec else None

    def scorers_of_group(self, group: str) -> list[str]:
        """The scorers with a value in a table group: all but model metrics that score no job
        (model, dataset) of the group."""
        datasets = set(self.table_datasets(group))
        jobs = [(m, d) for m, d in self.jobs if d in datasets]
        return [
            name
            for name in self.config["scorers"]
            if name not in MODEL_METRICS
            or any(self.model_metric_scores(name, m, d) for m, d in jobs)
        ]
