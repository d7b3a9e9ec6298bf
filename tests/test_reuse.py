"""The per-model label and score jobs: every dataset in one process, checkpoints loaded once,
and the reuse store (results/.reuse): a rerun copies each dataset whose key matches and
recomputes the others, so a job that failed at dataset k loses nothing before k."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from imhibench.common.errors import ImhiBenchError
from imhibench.common.io import read_table, write_table
from imhibench.common.reuse import ReuseStore
from imhibench.label import LabelJob, run_label, run_label_model
from imhibench.score.stage import ScoreJob, run_score, run_score_model

DATASETS = ("DR", "SAD", "t-sid")
ANSWERS = {"DR": ("Yes, depressed.", "No."), "SAD": ("Work.", "Money."), "t-sid": ("Suicide.", "")}
GOLD = {"DR": ("yes", "no"), "SAD": ("jobs and careers", "finance issue"),
        "t-sid": ("suicide or self-harm tendency", "depression")}  # fmt: skip


def _write_inputs(folder, dataset, answers=None):
    ids = [f"{dataset}-{i:05d}" for i in range(2)]
    answers = answers or ANSWERS[dataset]
    write_table(pd.DataFrame({"row_id": ids, "response": list(answers)}),
                folder / f"gen-{dataset}.parquet", {"stage": "generate"})  # fmt: skip
    gold_answers = [f"{label}. Reasoning: because." for label in GOLD[dataset]]
    write_table(
        pd.DataFrame({"row_id": ids, "query": ["q", "q"], "gold_label": list(GOLD[dataset]),
                      "gold_answer": gold_answers}),
        folder / f"test-{dataset}.parquet", {"split": "instruction"},
    )  # fmt: skip


@pytest.fixture
def inputs(tmp_path):
    for dataset in DATASETS:
        _write_inputs(tmp_path, dataset)
    return tmp_path


def label_jobs(folder, classifiers=None, datasets=DATASETS):
    return [
        LabelJob(d, d, str(folder / f"gen-{d}.parquet"), str(folder / f"test-{d}.parquet"),
                 str(folder / "label" / f"{d}.parquet"), (classifiers or {}).get(d))
        for d in datasets
    ]  # fmt: skip


def score_jobs(folder, datasets=DATASETS):
    return [
        ScoreJob(d, d, str(folder / f"gen-{d}.parquet"), str(folder / "label" / f"{d}.parquet"),
                 str(folder / f"test-{d}.parquet"), str(folder / "score" / f"{d}.parquet"),
                 str(folder / "metrics" / f"{d}.parquet"))
        for d in datasets
    ]  # fmt: skip


def outcomes(caplog) -> dict[str, str]:
    """dataset -> 'reused' or 'computed', from the jobs' one line per dataset."""
    found = {}
    for record in caplog.records:
        dataset, _, rest = record.getMessage().partition(": ")
        if rest.startswith(("reused ", "computed ")):
            found[dataset] = rest.split(" ", 1)[0]
    caplog.clear()
    return found


def scorers(demo_models) -> dict:
    return {
        "rouge": {},
        "bart_score": {"checkpoint": demo_models["bart-score"],
                       "weights_file": demo_models["bart-score-weights"], "batch_size": 2},
    }  # fmt: skip


def test_label_job_loads_a_shared_classifier_once_and_reuses_finished_datasets(
    inputs, demo_models, monkeypatch, caplog, one_torch_thread
):
    import imhibench.label as label

    loads = []
    real = label.MentalBertLabeler

    def counting(checkpoint, *args, **kwargs):
        loads.append(checkpoint)
        return real(checkpoint, *args, **kwargs)

    monkeypatch.setattr(label, "MentalBertLabeler", counting)
    classifiers = {d: demo_models[f"classifiers/{d}"] for d in DATASETS}
    jobs = label_jobs(inputs, classifiers)
    jobs.append(LabelJob("DR2", "DR", str(inputs / "gen-DR2.parquet"),
                         str(inputs / "test-DR.parquet"), str(inputs / "label" / "DR2.parquet"),
                         classifiers["DR"]))  # fmt: skip
    # DR2 answers DR's rows in another order: it needs DR's row ids.
    write_table(pd.DataFrame({"row_id": ["DR-00000", "DR-00001"], "response": ["No.", "Yes."]}),
                inputs / "gen-DR2.parquet", {"stage": "generate"})  # fmt: skip
    labelers = ["mentalbert", "rule"]
    caplog.set_level(logging.INFO)
    run_label_model(jobs, labelers, inputs / "reuse", device="cpu")
    assert sorted(loads) == sorted(set(classifiers.values()))  # DR and DR2 share one load
    assert outcomes(caplog) == dict.fromkeys([*DATASETS, "DR2"], "computed")
    # The same file as the one-dataset stage writes.
    run_label(jobs[1].responses, jobs[1].test_set, str(inputs / "alone.parquet"), "SAD",
              labelers, classifiers["SAD"], device="cpu")  # fmt: skip
    pd.testing.assert_frame_equal(read_table(jobs[1].out), read_table(inputs / "alone.parquet"))
    first = {job.dataset: Path(job.out).read_bytes() for job in jobs}

    # A rerun (the output folder deleted, as Snakemake does) copies everything, loads nothing.
    loads.clear()
    for job in jobs:
        Path(job.out).unlink()
    run_label_model(jobs, labelers, inputs / "reuse", device="cpu")
    assert loads == []
    assert outcomes(caplog) == dict.fromkeys([*DATASETS, "DR2"], "reused")
    assert {job.dataset: Path(job.out).read_bytes() for job in jobs} == first

    # Another batch size is another key: everything is labelled again.
    run_label_model(jobs, labelers, inputs / "reuse", device="cpu", batch_size=1)
    assert outcomes(caplog) == dict.fromkeys([*DATASETS, "DR2"], "computed")


def test_score_job_failed_at_dataset_k_reuses_the_datasets_before_k(
    inputs, demo_models, caplog, one_torch_thread
):
    from imhibench.score.metrics import explanation

    run_label_model(label_jobs(inputs), ["rule"], inputs / "reuse-label", device="cpu")
    good_labels = read_table(inputs / "label" / "SAD.parquet")
    write_table(good_labels.drop(columns=["label_rule"]), inputs / "label" / "SAD.parquet")
    caplog.set_level(logging.INFO)
    caplog.clear()
    explanation._bart_scorer.cache_clear()
    jobs = score_jobs(inputs)
    with pytest.raises(ImhiBenchError, match="label_rule"):
        run_score_model("m", jobs, ["rule"], scorers(demo_models), inputs / "reuse", "cpu")
    assert outcomes(caplog) == {"DR": "computed"}
    store = ReuseStore(inputs / "reuse")
    [entry] = (inputs / "reuse" / "DR").iterdir()
    stored = {p.name: p.stat().st_mtime_ns for p in entry.iterdir()}
    assert not (inputs / "reuse" / "SAD").exists() or not any(store.root.joinpath("SAD").iterdir())

    # Fixed, then rerun (the outputs deleted, as Snakemake does): DR is copied, not scored.
    write_table(good_labels, inputs / "label" / "SAD.parquet")
    for folder in ("score", "metrics"):
        for path in (inputs / folder).glob("*.parquet"):
            path.unlink()
    run_score_model("m", jobs, ["rule"], scorers(demo_models), inputs / "reuse", "cpu")
    assert outcomes(caplog) == {"DR": "reused", "SAD": "computed", "t-sid": "computed"}
    assert {p.name: p.stat().st_mtime_ns for p in entry.iterdir()} == stored
    # The BARTScore model was built once for the whole job (two datasets scored).
    assert explanation._bart_scorer.cache_info().misses == 1
    # Every dataset's files are those of the one-dataset stage.
    for job in jobs:
        run_score(job.responses, job.labels, job.test_set, str(inputs / "rows.parquet"),
                  str(inputs / "summary.parquet"), "m", job.dataset, job.task, ["rule"],
                  scorers(demo_models), "cpu")  # fmt: skip
        pd.testing.assert_frame_equal(read_table(job.rows_out), read_table(inputs / "rows.parquet"))
        pd.testing.assert_frame_equal(
            read_table(job.summary_out), read_table(inputs / "summary.parquet")
        )


def test_a_changed_input_of_one_dataset_recomputes_only_that_dataset(
    inputs, demo_models, caplog, one_torch_thread
):
    run_label_model(label_jobs(inputs), ["rule"], inputs / "reuse-label", device="cpu")
    jobs = score_jobs(inputs)
    run_score_model("m", jobs, ["rule"], scorers(demo_models), inputs / "reuse", "cpu")
    caplog.set_level(logging.INFO)
    caplog.clear()
    before = {job.dataset: read_table(job.summary_out) for job in jobs}

    _write_inputs(inputs, "SAD", ("Money.", "Work."))  # new answers for SAD only
    run_label_model(label_jobs(inputs), ["rule"], inputs / "reuse-label", device="cpu")
    assert outcomes(caplog) == {"DR": "reused", "SAD": "computed", "t-sid": "reused"}
    run_score_model("m", jobs, ["rule"], scorers(demo_models), inputs / "reuse", "cpu")
    assert outcomes(caplog) == {"DR": "reused", "SAD": "computed", "t-sid": "reused"}
    after = {job.dataset: read_table(job.summary_out) for job in jobs}
    for dataset in ("DR", "t-sid"):
        pd.testing.assert_frame_equal(after[dataset], before[dataset])
    assert not after["SAD"].equals(before["SAD"])
    # The older entry of SAD is pruned: one entry per dataset.
    for root in ("reuse", "reuse-label"):
        assert {d: len(list((inputs / root / d).iterdir())) for d in DATASETS} == dict.fromkeys(
            DATASETS, 1
        )

    # A changed scorer setting is another key for every dataset.
    changed = scorers(demo_models)
    changed["bart_score"]["max_length"] = 64
    run_score_model("m", jobs, ["rule"], changed, inputs / "reuse", "cpu")
    assert outcomes(caplog) == dict.fromkeys(DATASETS, "computed")
