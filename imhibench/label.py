"""Label stage: turn each model response into a task label, with the upstream keyword rules
and with the task's MentalBERT classifier."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from imhibench.common.devices import resolve_device
from imhibench.common.errors import ImhiBenchError
from imhibench.common.progress import Progress
from imhibench.common.tasks import Task

log = logging.getLogger(__name__)

CLASSIFIER_MAX_LENGTH = 512  # as upstream label_inference.py


def rule_labels(
    task: Task, responses: Sequence[str], corrected: bool = False
) -> tuple[list[str], list[bool]]:
    """Upstream IMHI.py's keyword labels and out-of-domain flags for each response
    (``corrected``: with the task's ``rule_corrections``, the `rule_corrected` labeler)."""
    pairs = [task.rule_label(text, corrected) for text in responses]
    return [label for label, _ in pairs], [ood for _, ood in pairs]


class MentalBertLabeler:
    """A task's MentalBERT sequence classifier (upstream label_inference.py), batched by length."""

    def __init__(
        self,
        checkpoint: str,
        task: Task,
        device: str = "auto",
        batch_size: int = 64,
        dtype: str = "float32",
    ):
        """``dtype`` float32 (default, as upstream on every device) or bfloat16/float16, which
        is faster on GPU but moves the logits and can flip near-tie argmaxes."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from imhibench.score.metrics.bartscore import resolve_dtype

        self.task = task
        self.device = resolve_device(device)
        self.batch_size = batch_size
        dtype = resolve_dtype(dtype, "label_dtype")
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        self.model = AutoModelForSequenceClassification.from_pretrained(checkpoint, dtype=dtype)
        self.model.to(self.device).eval()
        n_labels = self.model.config.num_labels
        if n_labels != len(task.classifier_labels):
            raise ImhiBenchError(
                f"{checkpoint}: classifier has {n_labels} labels but task {task.name} needs "
                f"{len(task.classifier_labels)} ({list(task.classifier_labels)})"
            )

    def predict(self, texts: Sequence[str]) -> list[str]:
        """The label name of every text (argmax, truncation at 512 tokens), in input order."""
        import torch

        lengths = [
            len(self.tokenizer(t, truncation=True, max_length=CLASSIFIER_MAX_LENGTH)["input_ids"])
            for t in texts
        ]
        order = sorted(range(len(texts)), key=lengths.__getitem__)
        predictions: list[int] = [0] * len(texts)
        progress = Progress(f"MentalBERT {self.task.name}", len(texts), count_tokens=False)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                encoded = self.tokenizer(
                    [texts[i] for i in batch],
                    truncation=True,
                    max_length=CLASSIFIER_MAX_LENGTH,
                    padding=True,
                    return_tensors="pt",
                ).to(self.device)
                logits = self.model(**encoded).logits
                for i, index in zip(batch, logits.argmax(dim=-1).tolist(), strict=True):
                    predictions[i] = index
                progress.batch(len(batch), 0)
        progress.log("done: ")
        return [self.task.classifier_labels[i] for i in predictions]


def check_responses(responses: pd.DataFrame, path: str) -> None:
    """Every row needs a response string; a missing (null) one is an error naming the row."""
    missing = responses.loc[responses["response"].isna(), "row_id"].tolist()
    if missing:
        raise ImhiBenchError(f"{path}: missing (null) response for row(s) {missing[:5]}")


def label_responses(
    responses: pd.DataFrame,
    test_set: pd.DataFrame,
    task: Task,
    labelers: Sequence[str],
    classifier: MentalBertLabeler | None,
) -> pd.DataFrame:
    """The label table: row_id, gold_label, label_<labeler> for each labeler, rule_ood."""
    merged = responses[["row_id", "response"]].merge(
        test_set[["row_id", "gold_label"]], on="row_id", how="left", validate="one_to_one"
    )
    if merged["gold_label"].isna().any():
        unknown = merged.loc[merged["gold_label"].isna(), "row_id"].tolist()[:5]
        raise ImhiBenchError(f"responses name row ids that are not in the test set: {unknown}")
    table = merged[["row_id", "gold_label"]].copy()
    texts = merged["response"].tolist()
    for labeler in labelers:
        if labeler == "rule":
            table["label_rule"], table["rule_ood"] = rule_labels(task, texts)
        elif labeler == "rule_corrected":
            table["label_rule_corrected"], table["rule_corrected_ood"] = rule_labels(
                task, texts, corrected=True
            )
        elif labeler == "mentalbert":
            if classifier is None:
                raise ImhiBenchError("labeler mentalbert needs a classifier checkpoint")
            table["label_mentalbert"] = classifier.predict(texts)
        else:
            known = "mentalbert, rule, rule_corrected"
            raise ImhiBenchError(f"unknown labeler {labeler!r} (known: {known})")
    table["empty_response"] = [not t.strip() for t in texts]
    return table


def run_label(
    responses_path: str,
    test_set_path: str,
    out_path: str,
    task_name: str,
    labelers: Sequence[str],
    classifier_dir: str | None,
    device: str = "auto",
    batch_size: int = 64,
    dtype: str = "float32",
    classifier: MentalBertLabeler | None = None,
) -> pd.DataFrame:
    """Label stage for one (model, dataset): read, label, write with provenance.
    ``classifier``: the task's classifier already loaded from ``classifier_dir`` (else it is
    loaded here)."""
    from imhibench.common.io import read_provenance, read_table, write_table
    from imhibench.common.provenance import build_provenance, checkpoint_provenance
    from imhibench.common.tasks import get_task

    task = get_task(task_name)
    responses = read_table(responses_path, ["row_id", "response"])
    check_responses(responses, responses_path)
    test_set = read_table(test_set_path, ["row_id", "gold_label"])
    if "mentalbert" not in labelers:
        classifier = None
    elif classifier is None:
        classifier = load_classifier(classifier_dir, task, device, batch_size, dtype)
    table = label_responses(responses, test_set, task, labelers, classifier)
    provenance = build_provenance(
        "label",
        task=task_name,
        labelers=list(labelers),
        classifier_dtype=dtype if classifier is not None else None,
        classifier=checkpoint_provenance(classifier_dir) if classifier_dir else None,
        generation=read_provenance(responses_path),
        device=device,
        batch_size=batch_size,
    )
    write_table(table, out_path, provenance)
    log.info("%s: labelled %d rows", out_path, len(table))
    return table


def load_classifier(
    classifier_dir: str | None, task: Task, device: str, batch_size: int, dtype: str
) -> MentalBertLabeler:
    """The MentalBERT classifier of ``task`` (labeler mentalbert)."""
    if not classifier_dir:
        raise ImhiBenchError(f"labeler mentalbert needs a classifier for task {task.name}")
    log.info("loading MentalBERT classifier from %s", classifier_dir)
    return MentalBertLabeler(classifier_dir, task, device, batch_size, dtype)


@dataclass(frozen=True)
class LabelJob:
    """One dataset of a model's label job: its inputs, task and output file."""

    dataset: str
    task: str
    responses: str
    test_set: str
    out: str
    classifier: str | None = None


#: The file of a dataset's entry in the label job's reuse store.
LABEL_FILE = "labels.parquet"


def label_code_sha256() -> str:
    """sha256 of the code that writes a label file: this module and the shared sources
    (the tasks' keyword rules and classifier label maps among them)."""
    from imhibench.common.reuse import common_sources, sources_sha256

    return sources_sha256([Path(__file__), *common_sources()])


def label_key(
    job: LabelJob, labelers: Sequence[str], device: str, batch_size: int, dtype: str
) -> dict:
    """Everything a dataset's label file depends on: its inputs' content (responses, test
    set, classifier files), the settings, the packages and the label code."""
    from imhibench.common.checkpoint_hashes import local_checkpoint_sha256
    from imhibench.common.hashing import sha256_file
    from imhibench.common.reuse import stage_versions

    uses_classifier = "mentalbert" in labelers and job.classifier
    return {
        "stage": "label",
        "task": job.task,
        "labelers": list(labelers),
        "responses_sha256": sha256_file(job.responses),
        "test_set_sha256": sha256_file(job.test_set),
        "classifier_sha256": local_checkpoint_sha256(job.classifier) if uses_classifier else None,
        "batch_size": batch_size,
        "dtype": dtype,
        "device": resolve_device(device).split(":")[0],
        **stage_versions(label_code_sha256()),
    }


def run_label_model(
    jobs: Sequence[LabelJob],
    labelers: Sequence[str],
    reuse_dir: str | Path,
    device: str = "auto",
    batch_size: int = 64,
    dtype: str = "float32",
) -> None:
    """A model's label job: every dataset of ``jobs``, each copied from the reuse store
    (``reuse_dir``) when its key matches, else labelled and put in the store at once. Datasets
    sharing a classifier share one load; one classifier is held at a time."""
    from imhibench.common.reuse import ReuseStore, key_sha256
    from imhibench.common.tasks import get_task

    store = ReuseStore(reuse_dir)
    loaded: tuple[tuple[str | None, str], MentalBertLabeler] | None = None
    for job in sorted(jobs, key=lambda j: (j.classifier or "", j.task)):
        key = key_sha256(label_key(job, labelers, device, batch_size, dtype))
        if store.fetch(job.dataset, key, {LABEL_FILE: job.out}):
            log.info("%s: reused %s (key %s)", job.dataset, job.out, key[:16])
            continue
        classifier = None
        if "mentalbert" in labelers:
            if loaded is None or loaded[0] != (job.classifier, job.task):
                loaded = None  # free the previous classifier before loading the next
                task = get_task(job.task)
                labeler = load_classifier(job.classifier, task, device, batch_size, dtype)
                loaded = ((job.classifier, job.task), labeler)
            classifier = loaded[1]

        def write(folder: Path, job: LabelJob = job, classifier=classifier) -> None:
            run_label(job.responses, job.test_set, str(folder / LABEL_FILE), job.task, labelers,
                      job.classifier, device, batch_size, dtype, classifier=classifier)  # fmt: skip

        store.put(job.dataset, key, write, [LABEL_FILE])
        store.fetch(job.dataset, key, {LABEL_FILE: job.out})
        log.info("%s: computed %s (key %s)", job.dataset, job.out, key[:16])
