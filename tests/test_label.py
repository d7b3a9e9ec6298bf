import pandas as pd
import pytest

from imhibench.common.errors import ImhiBenchError
from imhibench.common.io import read_provenance, read_table, write_table
from imhibench.common.tasks import get_task
from imhibench.label import MentalBertLabeler, label_responses, rule_labels, run_label


def test_rule_labels_and_ood():
    labels, ood = rule_labels(get_task("CAMS"), ["It is about medication.", "unclear", ""])
    assert labels == ["medication", "none", "none"]
    assert ood == [False, True, True]


def test_mentalbert_maps_classifier_indices_to_task_labels(demo_models):
    task = get_task("t-sid")
    labeler = MentalBertLabeler(demo_models["classifiers/t-sid"], task, device="cpu", batch_size=2)
    texts = ["short", "a much longer response " * 50, "medium length response here", "x"]
    predicted = labeler.predict(texts)
    assert set(predicted) <= set(task.labels)
    # same answers one at a time: sorting by length and batching do not change the labels
    assert predicted == [labeler.predict([t])[0] for t in texts]
    # the label name comes from the classifier index through t-sid's own index order
    import torch

    encoded = labeler.tokenizer(texts[2], return_tensors="pt")
    with torch.inference_mode():
        index = int(labeler.model(**encoded).logits.argmax())
    assert predicted[2] == ("depression", "suicide or self-harm tendency", "ptsd",
                            "no mental disorders")[index]  # fmt: skip


def test_classifier_with_wrong_label_count_is_refused(demo_models):
    with pytest.raises(ImhiBenchError, match="classifier has 2 labels but task SAD needs 9"):
        MentalBertLabeler(demo_models["classifiers/DR"], get_task("SAD"), device="cpu")


def test_label_responses_rejects_unknown_row_ids():
    responses = pd.DataFrame({"row_id": ["DR-00000", "XX-1"], "response": ["yes", "no"]})
    test_set = pd.DataFrame({"row_id": ["DR-00000"], "gold_label": ["yes"]})
    with pytest.raises(ImhiBenchError, match="not in the test set: \\['XX-1'\\]"):
        label_responses(responses, test_set, get_task("DR"), ["rule"], None)


def test_run_label_end_to_end(tmp_path, demo_models):
    responses = tmp_path / "gen.parquet"
    test_set = tmp_path / "test.parquet"
    write_table(
        pd.DataFrame({"row_id": ["DR-00000", "DR-00001"], "response": ["Yes, sure.", ""]}),
        responses,
        {"stage": "generate"},
    )
    write_table(pd.DataFrame({"row_id": ["DR-00000", "DR-00001"], "gold_label": ["yes", "no"]}),
                test_set)  # fmt: skip
    out = tmp_path / "labels.parquet"
    run_label(str(responses), str(test_set), str(out), "DR", ["mentalbert", "rule"],
              demo_models["classifiers/DR"], device="cpu")  # fmt: skip
    table = read_table(out)
    assert table.columns.tolist() == [
        "row_id", "gold_label", "label_mentalbert", "label_rule", "rule_ood", "empty_response",
    ]  # fmt: skip
    assert table["label_rule"].tolist() == ["yes", "no"]
    assert table["empty_response"].tolist() == [False, True]
    provenance = read_provenance(out)
    assert provenance["generation"] == {"stage": "generate"}
    assert provenance["classifier"]["local_path"]
    assert provenance["classifier_dtype"] == "float32"


def test_classifier_is_float32_unless_bfloat16_is_asked(demo_models):
    import torch

    task = get_task("SAD")
    full = MentalBertLabeler(demo_models["classifiers/SAD"], task, device="cpu")
    assert full.model.dtype == torch.float32
    half = MentalBertLabeler(demo_models["classifiers/SAD"], task, device="cpu", dtype="bfloat16")
    assert half.model.dtype == torch.bfloat16
    with pytest.raises(ImhiBenchError, match="label_dtype: unknown dtype 'float8'"):
        MentalBertLabeler(demo_models["classifiers/SAD"], task, device="cpu", dtype="float8")


def test_null_response_is_an_error_naming_file_and_row(tmp_path):
    responses = tmp_path / "gen.parquet"
    write_table(pd.DataFrame({"row_id": ["DR-00000"], "response": [None]}), responses)
    with pytest.raises(ImhiBenchError, match=r"gen.parquet: missing \(null\) response.*DR-00000"):
        run_label(str(responses), "unused", str(tmp_path / "o.parquet"), "DR", ["rule"], None)


def test_rule_corrected_fixes_the_sad_emotion_turmoil_quirk():
    """Upstream's rule labeler gives 66 of the 684 SAD instruction gold answers the label
    "other causes" ("emotional" misses "emotion turmoil"); the opt-in corrected rules do not."""
    from support import require_mirror

    from imhibench.fetch.test_sets import prepare_test_set

    task = get_task("SAD")
    csv = require_mirror() / "test_data" / "test_instruction" / "SAD.csv"
    gold = prepare_test_set(csv, "SAD", "SAD", "instruction")
    answers, labels = gold["gold_answer"].tolist(), gold["gold_label"].tolist()
    upstream, ood = rule_labels(task, answers)
    corrected, corrected_ood = rule_labels(task, answers, corrected=True)
    wrong = [(u, g) for u, g in zip(upstream, labels, strict=True) if u != g]
    assert len(answers) == 684 and len(wrong) == 66 and sum(ood) == 66
    assert set(wrong) == {("other causes", "emotional turmoil")}
    assert corrected == labels and not any(corrected_ood)
    # Responses in the completion wording and of other tasks are labelled as upstream does.
    assert task.rule_label("emotional turmoil.", corrected=True) == ("emotional turmoil", False)
    for name in ("DR", "CAMS", "t-sid", "swmh"):
        other = get_task(name)
        assert other.rule_corrections == ()


def test_label_responses_adds_the_corrected_rule_column():
    responses = pd.DataFrame({"row_id": ["a"], "response": ["Related to emotion turmoil."]})
    test_set = pd.DataFrame({"row_id": ["a"], "gold_label": ["emotional turmoil"]})
    table = label_responses(responses, test_set, get_task("SAD"), ["rule", "rule_corrected"], None)
    assert table.loc[0, "label_rule"] == "other causes" and table.loc[0, "rule_ood"]
    assert table.loc[0, "label_rule_corrected"] == "emotional turmoil"
    assert not table.loc[0, "rule_corrected_ood"]
