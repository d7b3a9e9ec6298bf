"""Score stage: correctness of each labeler against the gold label, and explanation quality of
each response against the gold answer, per row and per (model, dataset)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from imhibench.common.errors import ImhiBenchError
from imhibench.score.metrics.correctness import agreement, correctness_metrics, weighted_f1_ci

# Fields of a model metric's provenance repeated in the score stage's.
MODEL_METRIC_PROVENANCE = ("metric", "settings", "checkpoint", "metric_provenance", "created_at")
# Columns of the summary table (results/metrics/<model>/<dataset>.parquet), one row per metric.
SUMMARY_COLUMNS = ["model", "dataset", "task", "split", "metric", "labeler", "value"]


def score(
    responses: pd.DataFrame,
    labels: pd.DataFrame,
    test_set: pd.DataFrame,
    labelers: Sequence[str],
    scorers: dict[str, dict],
    device: str = "cpu",
    seed: int = 0,
    model_metrics: Sequence[tuple[pd.DataFrame, dict[str, float]]] = (),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-row explanation scores and a tidy (metric, labeler, value) summary.

    `seed` drives the bootstrap behind the weighted-F1 95% interval rows. `model_metrics`:
    (per-row columns by row_id, summary) of each metric computed by a job of its own
    (`run_model_metric`), merged in.
    """
    from imhibench.score.metrics.explanation import compute_explanation_metrics

    rows = responses[["row_id", "response"]].merge(labels, on="row_id", validate="one_to_one")
    rows = rows.merge(test_set[["row_id", "gold_answer"]], on="row_id", validate="one_to_one")
    if len(rows) != len(responses):
        raise ImhiBenchError(
            f"{len(responses)} responses but {len(rows)} rows after joining labels and gold answers"
        )
    summary: list[tuple[str, str | None, float]] = [("n", None, float(len(rows)))]
    gold = rows["gold_label"].tolist()
    for labeler in labelers:
        predicted = rows[f"label_{labeler}"].tolist()
        summary += [(m, labeler, v) for m, v in correctness_metrics(gold, predicted).items()]
        low, high = weighted_f1_ci(gold, predicted, seed=seed)
        summary += [("weighted_f1_ci_low", labeler, low), ("weighted_f1_ci_high", labeler, high)]
    if "rule" in labelers:
        summary.append(("ood", "rule", float(rows["rule_ood"].sum())))
    if {"rule", "mentalbert"} <= set(labelers):
        value = agreement(rows["label_rule"].tolist(), rows["label_mentalbert"].tolist())
        summary.append(("labeler_agreement", None, value))
    summary.append(("empty_responses", None, float(rows["empty_response"].sum())))

    per_row = pd.DataFrame({"row_id": rows["row_id"]})
    if scorers:
        columns, corpus = compute_explanation_metrics(
            rows["response"].tolist(), rows["gold_answer"].tolist(), scorers, device=device
        )
        for name, values in columns.items():
            per_row[name] = values
        summary += [(name, None, float(value)) for name, value in corpus.items()]
    for columns, corpus in model_metrics:
        per_row = per_row.merge(columns, on="row_id", how="left", validate="one_to_one")
        summary += [(name, None, float(value)) for name, value in corpus.items()]
    table = pd.DataFrame(summary, columns=["metric", "labeler", "value"])
    return per_row, table


def bart_score_provenance(options: dict) -> dict:
    """The weights file BARTScore loaded (source and sha256), for the score stage's provenance;
    the aggregate names the variant from it and the checkpoint (``scorer_checkpoints``)."""
    from imhibench.fetch.scorer_weights import weights_record

    weights = options.get("weights_file")
    return {"bart_score_weights": weights_record(weights) if weights is not None else None}


def read_model_metric(path: str, row_ids: Sequence[str]) -> tuple[pd.DataFrame, dict, dict]:
    """(per-row columns, summary, provenance) written by `run_model_metric`; its rows must be
    exactly `row_ids`."""
    from imhibench.common.io import read_provenance, read_table

    columns = read_table(path, ["row_id"])
    if sorted(columns["row_id"]) != sorted(row_ids):
        raise ImhiBenchError(
            f"{path}: its rows are not the responses' rows (stale file? delete it to rescore)"
        )
    provenance = read_provenance(path)
    summary = {k: math.nan if v is None else v for k, v in provenance["metric_summary"].items()}
    return columns, summary, provenance


def model_metric_record(path: str, provenance: dict) -> dict:
    """What a stage that merges a model metric's file records of it (`MODEL_METRIC_PROVENANCE`:
    settings, checkpoint, judge and rubric in `metric_provenance`)."""
    return {"file": path, **{key: provenance.get(key) for key in MODEL_METRIC_PROVENANCE}}


def run_model_metric(
    metric: str,
    options: dict,
    responses_path: str,
    test_set_path: str,
    out_path: str,
    model: str,
    dataset: str,
    device: str = "auto",
) -> pd.DataFrame:
    """The job of one model metric (GPTScore, LLM judge) for one (model, dataset): per-row
    columns, with the summary and the metric's provenance (judge, rubric, tokens, cost) in the
    file's provenance. An api metric's answers are journaled next to ``out_path``. The job
    holds the output's lock (``output_lock``) for its whole life: a second job on the same
    output (the orphan of a killed snakemake and its rerun) stops at once, naming this one."""
    from imhibench.common.devices import resolve_device
    from imhibench.common.io import read_provenance, read_table, write_table
    from imhibench.common.provenance import build_provenance, checkpoint_provenance
    from imhibench.generate.lock import output_lock
    from imhibench.score.metrics.explanation import MetricContext, compute_explanation_metrics

    with output_lock(out_path):
        responses = read_table(responses_path, ["row_id", "response"])
        test_set = read_table(test_set_path, ["row_id", "query", "gold_answer"])
        rows = responses[["row_id", "response"]].merge(
            test_set[["row_id", "query", "gold_answer"]], on="row_id", validate="one_to_one"
        )
        if len(rows) != len(responses):
            raise ImhiBenchError(
                f"{responses_path}: {len(responses)} responses but {len(rows)} rows in "
                f"{test_set_path}"
            )
        prefix = str(out_path).removesuffix(".parquet")
        context = MetricContext(rows["row_id"].tolist(), rows["query"].tolist(), prefix)
        provenance_out: dict = {}
        columns, summary = compute_explanation_metrics(
            rows["response"].tolist(),
            rows["gold_answer"].tolist(),
            {metric: options},
            device=resolve_device(device),
            context=context,
            provenance_out=provenance_out,
        )
        table = pd.DataFrame({"row_id": rows["row_id"], **columns})
        checkpoint = options.get("checkpoint")
        provenance = build_provenance(
            "score_metric",
            model=model,
            dataset=dataset,
            metric=metric,
            device=device,
            settings=options,
            checkpoint=None if checkpoint is None else checkpoint_provenance(checkpoint),
            metric_summary={k: None if math.isnan(v) else v for k, v in summary.items()},
            metric_provenance=provenance_out.get(metric, {}),
            responses=read_provenance(responses_path),
        )
        write_table(table, out_path, provenance)
        return table


def scorer_provenance(scorers: dict[str, dict]) -> dict:
    """What the model-based scorers loaded: each checkpoint's fetch manifest (or local path and
    digests) as `scorer_checkpoints`, and the BARTScore weights file."""
    from imhibench.common.provenance import checkpoint_provenance
    from imhibench.config.scorers import SCORER_CHECKPOINT_OPTION

    checkpoints = {
        name: checkpoint_provenance(scorers[name][option])
        for name, option in SCORER_CHECKPOINT_OPTION.items()
        if name in scorers
    }
    bart = {}
    if "bart_score" in scorers:
        bart = bart_score_provenance(scorers["bart_score"])
    return {"scorer_checkpoints": checkpoints, **bart}


def run_score(
    responses_path: str,
    labels_path: str,
    test_set_path: str,
    rows_out: str,
    summary_out: str,
    model: str,
    dataset: str,
    task_name: str,
    labelers: Sequence[str],
    scorers: dict[str, dict],
    device: str = "auto",
    seed: int = 0,
    model_metric_paths: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Score stage for one (model, dataset): per-row scores and the summary, with provenance;
    the columns of the model metrics' jobs (`model_metric_paths`, metric -> file) merged in."""
    import logging

    from imhibench.common.devices import resolve_device
    from imhibench.common.io import read_provenance, read_table, write_table
    from imhibench.common.provenance import build_provenance

    log = logging.getLogger(__name__)
    responses = read_table(responses_path, ["row_id", "response"])
    labels = read_table(labels_path, ["row_id", "gold_label", *(f"label_{x}" for x in labelers)])
    test_set = read_table(test_set_path, ["row_id", "gold_answer"])
    merged = {
        metric: read_model_metric(path, responses["row_id"].tolist())
        for metric, path in (model_metric_paths or {}).items()
    }
    per_row, summary = score(
        responses, labels, test_set, labelers, scorers, resolve_device(device), seed=seed,
        model_metrics=[(columns, corpus) for columns, corpus, _ in merged.values()],
    )  # fmt: skip
    split = read_provenance(test_set_path).get("split")
    summary.insert(0, "model", model)
    summary.insert(1, "dataset", dataset)
    summary.insert(2, "task", task_name)
    summary.insert(3, "split", split)
    summary = summary[SUMMARY_COLUMNS]
    provenance = build_provenance(
        "score",
        model=model,
        dataset=dataset,
        seed=seed,
        device=device,
        scorers=scorers,
        **scorer_provenance(scorers),
        model_metrics={
            metric: model_metric_record(path, record)
            for (metric, path), (_, _, record) in zip(
                (model_metric_paths or {}).items(), merged.values(), strict=True
            )
        },
        labels=read_provenance(labels_path),
    )
    write_table(per_row, rows_out, provenance)
    write_table(summary, summary_out, provenance)
    log.info("%s: %s", summary_out, summary.to_dict("records"))
    return summary


@dataclass(frozen=True)
class ScoreJob:
    """One dataset of a model's score job: its inputs, task, output files and the files of
    the model metrics merged in (metric -> file)."""

    dataset: str
    task: str
    responses: str
    labels: str
    test_set: str
    rows_out: str
    summary_out: str
    model_metrics: dict[str, str] = field(default_factory=dict)


#: The files of a dataset's entry in the score job's reuse store.
ROWS_FILE, SUMMARY_FILE = "scores.parquet", "metrics.parquet"


def score_code_sha256() -> str:
    """sha256 of the code that writes a score file: the score stage's sources (this folder
    and metrics/) and the shared sources."""
    from imhibench.common.reuse import common_sources, sources_sha256

    return sources_sha256([*sorted(Path(__file__).parent.rglob("*.py")), *common_sources()])


def scorer_files_sha256(scorers: dict[str, dict]) -> dict:
    """The content of what the scorers load: each checkpoint's files and the BARTScore
    weights file, by scorer."""
    from imhibench.common.checkpoint_hashes import local_checkpoint_sha256
    from imhibench.common.hashing import sha256_file
    from imhibench.config.scorers import SCORER_CHECKPOINT_OPTION

    digests: dict = {}
    for name, option in SCORER_CHECKPOINT_OPTION.items():
        if name in scorers and Path(scorers[name][option]).is_dir():
            digests[name] = local_checkpoint_sha256(scorers[name][option])
    weights = scorers.get("bart_score", {}).get("weights_file")
    if weights is not None:
        digests["bart_score_weights"] = sha256_file(weights)
    return digests


def score_key(
    model: str,
    job: ScoreJob,
    labelers: Sequence[str],
    scorers: dict[str, dict],
    scorer_files: dict,
    device: str,
    seed: int,
) -> dict:
    """Everything a dataset's score files depend on: its inputs' content (responses, labels,
    test set, the model metrics' files), the scorers' settings and files, the packages and the
    score code."""
    from imhibench.common.devices import resolve_device
    from imhibench.common.hashing import sha256_file
    from imhibench.common.reuse import stage_versions

    return {
        "stage": "score",
        "model": model,
        "dataset": job.dataset,
        "task": job.task,
        "labelers": list(labelers),
        "responses_sha256": sha256_file(job.responses),
        "labels_sha256": sha256_file(job.labels),
        "test_set_sha256": sha256_file(job.test_set),
        "model_metrics_sha256": {m: sha256_file(p) for m, p in sorted(job.model_metrics.items())},
        "scorers": scorers,
        "scorer_files_sha256": scorer_files,
        "seed": seed,
        "device": resolve_device(device).split(":")[0],
        **stage_versions(score_code_sha256()),
    }


def run_score_model(
    model: str,
    jobs: Sequence[ScoreJob],
    labelers: Sequence[str],
    scorers: dict[str, dict],
    reuse_dir: str | Path,
    device: str = "auto",
    seed: int = 0,
) -> None:
    """A model's score job: every dataset of ``jobs``, each copied from the reuse store
    (``reuse_dir``) when its key matches, else scored and put in the store at once. The
    model-based scorers are built once (``explanation._bert_scorer``, ``_bart_scorer``) and
    reused for every dataset."""
    import logging

    from imhibench.common.reuse import ReuseStore, key_sha256

    log = logging.getLogger(__name__)
    store = ReuseStore(reuse_dir)
    scorer_files = scorer_files_sha256(scorers)
    for job in jobs:
        key = key_sha256(score_key(model, job, labelers, scorers, scorer_files, device, seed))
        outputs = {ROWS_FILE: job.rows_out, SUMMARY_FILE: job.summary_out}
        if store.fetch(job.dataset, key, outputs):
            log.info("%s: reused %s (key %s)", job.dataset, job.summary_out, key[:16])
            continue

        def write(folder: Path, job: ScoreJob = job) -> None:
            run_score(
                job.responses, job.labels, job.test_set, str(folder / ROWS_FILE),
                str(folder / SUMMARY_FILE), model, job.dataset, job.task, labelers, scorers,
                device, seed, job.model_metrics,
            )  # fmt: skip

        store.put(job.dataset, key, write, outputs)
        store.fetch(job.dataset, key, outputs)
        log.info("%s: computed %s (key %s)", job.dataset, job.summary_out, key[:16])
