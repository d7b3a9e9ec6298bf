"""`imhibench evaluate`: input layouts, labelers, explanation scorers and error exits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from support import REPO, require_mirror

from imhibench.cli import main
from imhibench.common.io import write_table
from imhibench.demo_models import extract_minilm

YES = "Yes, the poster suffers from depression."
NO = "No, the poster does not suffer from depression."
ROWS = [
    (YES, "Yes, the poster suffers from depression. Reasoning: hopeless and tired."),
    (NO, "No, the poster does not suffer from depression. Reasoning: asks about a phone."),
    (YES, "Reasoning: the poster feels empty every day."),  # no keyword: OOD, "no"
    (NO, "Yes, the poster suffers from depression. Reasoning: mentions sadness."),
    (YES, "Yes. Reasoning: the poster cannot sleep and cries."),
    (NO, "No. Reasoning: a cheerful post about a holiday."),
]


def _upstream(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "goldens": [
                f"{gold} Reasoning: the gold explanation {n}." for n, (gold, _) in enumerate(rows)
            ],
            "generated_text": [text for _, text in rows],
        }
    )


@pytest.fixture
def upstream_csv(tmp_path: Path) -> Path:
    path = tmp_path / "DR.csv"
    _upstream(ROWS).to_csv(path, index=False)
    return path


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["evaluate", *args])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *args: str) -> dict:
    code, out, err = run(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_upstream_csv_hand_counted(upstream_csv, capsys):
    result = run_json(capsys, "DR", str(upstream_csv))
    # rule labels: yes, no, no (OOD), yes, yes, no; gold: yes, no, yes, no, yes, no
    assert result["n"] == result["n_correctness"] == 6
    assert result["accuracy"] == pytest.approx(100 * 4 / 6)
    assert result["ood"] == 1
    assert result["unparsed_gold"] == 0
    assert result["confusion_matrix"] == {"labels": ["no", "yes"], "matrix": [[2, 1], [1, 2]]}
    assert result["per_class"]["yes"] == pytest.approx(
        {"precision": 100 * 2 / 3, "recall": 100 * 2 / 3, "f1": 100 * 2 / 3, "support": 3}
    )
    low, high = result["weighted_f1_ci95"]
    assert 0 <= low <= high <= 100
    assert {"bleu", "rouge1", "rouge2", "rougeL"} <= set(result)
    assert "bert_score" not in result and "bart_score" not in result
    reseeded = run_json(capsys, "DR", str(upstream_csv), "--seed", "3")
    assert reseeded["bootstrap"] == {"resamples": 1000, "seed": 3, "level": 95}


def test_readable_report(upstream_csv, capsys):
    code, out, _ = run(capsys, "DR", str(upstream_csv))
    assert code == 0
    assert "accuracy 66.67" in out and "confusion matrix" in out and "per class" in out


def test_unparsed_gold_rows_are_counted_and_left_out(tmp_path, capsys):
    rows = [*ROWS, ("Maybe the poster is sad.", "Yes. Reasoning: sad.")]
    path = tmp_path / "DR.csv"
    _upstream(rows).to_csv(path, index=False)
    result = run_json(capsys, "DR", str(path))
    assert (result["n"], result["n_correctness"], result["unparsed_gold"]) == (7, 6, 1)
    assert result["unparsed_gold_rows"] == ["DR-6"]
    assert result["accuracy"] == pytest.approx(100 * 4 / 6)
    code, out, _ = run(capsys, "DR", str(path))
    assert code == 0 and "left out of correctness: 1 (DR-6)" in out


def test_wrong_split_parses_no_gold(upstream_csv, capsys):
    code, _, err = run(capsys, "DR", str(upstream_csv), "--split", "completion")
    assert code == 2
    assert str(upstream_csv) in err and "wrong --split" in err


def test_row_id_file_with_test_set_matches_upstream_csv(capsys, tmp_path):
    path = require_mirror() / "examples" / "label_data_examples" / "DR.csv"
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    direct = run_json(capsys, "DR", str(path), "--labels-column", "labels")
    ids = [f"DR-{n}" for n in range(len(table))]
    golds = table["goldens"].tolist()
    labels = ["yes" if g.startswith("Yes") else "no" for g in golds]
    test_set = tmp_path / "test_set.parquet"
    frame = pd.DataFrame({"row_id": ids, "gold_answer": golds, "gold_label": labels})
    write_table(frame, test_set, {"split": "instruction"})
    shuffled = pd.DataFrame(
        {"row_id": ids, "response": table["generated_text"], "labels": table["labels"]}
    ).sample(frac=1, random_state=0)
    responses = tmp_path / "responses.parquet"
    shuffled.to_parquet(responses)
    result = run_json(
        capsys, "DR", str(responses), "--test-set", str(test_set), "--labels-column", "labels"
    )
    for key in ("n", "accuracy", "weighted_f1", "weighted_f1_ci95", "confusion_matrix", "bleu"):
        assert result[key] == direct[key], key
    assert result["split"] == "instruction"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["XYZ", "{csv}"], "unknown IMHI task 'XYZ'; known tasks: ['CAMS', 'CLP', 'DR'"),
        (["DR", "{csv}", "--labels-column", "labels"], "{csv}: no labels column 'labels'"),
        (["DR", "{csv}", "--labels-column", "x", "--labeler", "rule"], "either --labeler"),
        (["DR", "{csv}", "--classifier", "/c"], "--classifier only applies"),
        (["DR", "{csv}", "--labeler", "mentalbert"], "needs --classifier"),
        (["DR", "{csv}", "--bertscore-layers", "6"], "--bertscore-layers needs"),
        (["DR", "{csv}", "--split", "expert"], "invalid choice: 'expert'"),
        (["DR", "/no/such.csv"], "responses file /no/such.csv: not found"),
    ],
)
def test_bad_input_exits_2_with_message(upstream_csv, capsys, args, message):
    code, out, err = run(capsys, *(a.format(csv=upstream_csv) for a in args))
    assert code == 2
    assert out == ""
    assert message.format(csv=upstream_csv) in err


def test_missing_columns_name_the_file(tmp_path, capsys):
    path = tmp_path / "answers.csv"
    pd.DataFrame({"goldens": [YES], "text": ["Yes."]}).to_csv(path, index=False)
    code, _, err = run(capsys, "DR", str(path))
    assert code == 2
    assert f"{path}: columns ['goldens', 'text']" in err and "generated_text" in err


def test_empty_and_nan_answers_are_counted_and_labelled_as_the_pipeline_does(tmp_path, capsys):
    table = _upstream(ROWS)
    table.loc[1, "generated_text"] = ""  # an empty CSV cell: NaN once read
    table.loc[3, "generated_text"] = "   "
    path = tmp_path / "DR.csv"
    table.to_csv(path, index=False)
    code, out, err = run(capsys, "DR", str(path), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["n"] == 6 and result["empty_responses"] == 2
    assert result["empty_response_rows"] == ["DR-1", "DR-3"]
    assert "2 empty or missing answer(s) (DR-1, DR-3): kept as empty text" in err
    # as the pipeline's rule labeler: no keyword -> default label "no", out-of-domain
    clean = run_json(capsys, "DR", str(_write(tmp_path, _upstream(ROWS))))
    assert result["ood"] == clean["ood"] + 2
    # gold of row 2 is "no" (default label: still right), gold of row 4 is "no" too; the
    # answer of row 4 was a wrong "yes", now the default "no": accuracy goes up by one row
    assert result["accuracy"] == pytest.approx(clean["accuracy"] + 100 / 6)


def _write(tmp_path: Path, table: pd.DataFrame) -> Path:
    path = tmp_path / "clean.csv"
    table.to_csv(path, index=False)
    return path


def test_every_bad_row_is_named_in_one_message(tmp_path, capsys):
    path = tmp_path / "DR.csv"
    table = _upstream(ROWS).assign(labels=["yes", "no", "maybe", "no", "sure", "no"])
    table.to_csv(path, index=False)
    code, _, err = run(capsys, "DR", str(path), "--labels-column", "labels")
    assert code == 2 and f"{path}: 2 label(s) that are not DR labels" in err
    assert (
        "row 3 (row_id DR-2): label 'maybe'" in err and "row 5 (row_id DR-4): label 'sure'" in err
    )

    table = _upstream(ROWS)
    table.loc[[0, 4], "goldens"] = "No, something else. Reasoning: x."
    table.to_csv(path, index=False)
    code, _, err = run(capsys, "DR", str(path), "--test-set", str(_test_set(tmp_path)))
    assert code == 2 and "'goldens' differs from the test file's gold answer in 2 row(s)" in err
    assert "row 1 (row_id DR-0)" in err and "row 5 (row_id DR-4)" in err


def _test_set(tmp_path: Path) -> Path:
    rows = _upstream(ROWS)
    gold_labels = ["yes" if g.startswith("Yes") else "no" for g, _ in ROWS]
    table = pd.DataFrame(
        {
            "row_id": [f"DR-{n}" for n in range(len(ROWS))],
            "gold_answer": rows["goldens"],
            "gold_label": gold_labels,
        }
    )
    path = tmp_path / "test.parquet"
    write_table(table, path)
    return path


def test_pipeline_import_keeps_empty_answers_as_evaluate_does(tmp_path, capsys, caplog):
    """Issue 18 item 6: one rule. An upstream CSV with an empty (a content-filtered answer) and
    a missing answer: `imhibench evaluate` keeps both as empty text and counts them; the
    pipeline's `kind: responses` import does the same, and records the count."""
    from imhibench.common.io import read_provenance, read_table
    from imhibench.fetch.test_sets import TEST_SET_COLUMNS
    from imhibench.generate.stage import run_generate

    table = _upstream(ROWS)
    table.loc[1, "generated_text"] = ""  # an empty CSV cell: missing (NaN) once read
    table.loc[4, "generated_text"] = "  "
    path = _write(tmp_path, table)
    result = run_json(capsys, "DR", str(path))
    assert result["empty_response_rows"] == ["DR-1", "DR-4"]
    test_set = tmp_path / "DR.parquet"
    ids = [f"DR-{n:05d}" for n in range(len(ROWS))]
    write_table(
        pd.DataFrame(
            {
                "row_id": ids,
                "query": "q",
                "gold_answer": table["goldens"],
                "gold_label": None,
                "gold_explanation": None,
            }
        )[TEST_SET_COLUMNS],
        test_set,
    )
    out = tmp_path / "out.parquet"
    spec = {"kind": "responses", "split": "instruction"}
    run_generate(str(test_set), str(out), "m", spec, None, None, str(path), {}, rows=None)
    answers = read_table(out)["response"].tolist()
    assert answers[1] == answers[4] == ""
    assert answers[0] == ROWS[0][1]
    assert read_provenance(out)["empty_responses"] == result["empty_responses"] == 2
    assert "2 empty or missing answer(s) (row 2 (row_id DR-00001), row 5" in caplog.text


def test_long_answers_are_reported_with_how_metrics_treat_them(tmp_path, capsys):
    table = _upstream(ROWS)
    table.loc[2, "generated_text"] = "No. Reasoning: " + "word " * 60
    path = _write(tmp_path, table)
    result = run_json(capsys, "DR", str(path), "--max-answer-tokens", "50")
    assert result["long_answers"] == 1 and result["long_answer_rows"] == ["DR-2 (62 tokens)"]
    _, _, err = run(capsys, "DR", str(path), "--max-answer-tokens", "50")
    assert "1 answer(s) longer than 50 tokens (DR-2 (62 tokens)): scored in full" in err
    assert "corpus BLEU" in err
    assert run_json(capsys, "DR", str(path))["long_answers"] == 0  # default limit 2048


def test_labels_column_accepts_our_names_too(upstream_csv, capsys, tmp_path):
    table = _upstream(ROWS).assign(labels=["yes", "no", "yes", "no", " Yes", "no"])
    path = tmp_path / "DR.csv"
    table.to_csv(path, index=False)
    result = run_json(capsys, "DR", str(path), "--labels-column", "labels")
    assert result["accuracy"] == 100.0
    assert result["weighted_f1_ci95"] == [100.0, 100.0]


def test_unexpected_errors_propagate(upstream_csv, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("imhibench.evaluate.evaluate", broken)
    with pytest.raises(RuntimeError, match="boom"):
        main(["evaluate", "DR", str(upstream_csv)])


def test_module_entry_point_prints_one_json_object(upstream_csv):
    command = [sys.executable, "-m", "imhibench.cli", "evaluate", "DR", str(upstream_csv)]
    done = subprocess.run([*command, "--json"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["n"] == 6
    bad = subprocess.run([*command[:4], "NOPE", str(upstream_csv)], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "imhibench: error: unknown IMHI task 'NOPE'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_bert_and_bart_scores(upstream_csv, demo_models, tmp_path, capsys):
    minilm = extract_minilm(tmp_path / "minilm")
    args = ["--bertscore-model", str(minilm), "--bertscore-layers", "6"]
    args += ["--bartscore-model", demo_models["bart-score"], "--device", "cpu"]
    result = run_json(capsys, "DR", str(upstream_csv), *args)
    assert 0 < result["bert_score"] <= 1
    assert result["bart_score"] < 0  # a mean log-likelihood


def test_mentalbert_labeler(upstream_csv, demo_models, capsys):
    classifier = demo_models["classifiers/DR"]
    args = ["--labeler", "mentalbert", "--classifier", classifier, "--device", "cpu"]
    result = run_json(capsys, "DR", str(upstream_csv), *args)
    assert result["labeler"] == "mentalbert"
    assert sum(map(sum, result["confusion_matrix"]["matrix"])) == 6
    assert result["confusion_matrix"]["labels"] == ["no", "yes"]
    assert result["ood"] == 1  # always from the rule labeler
    assert 0 <= result["rule_agreement"] <= 100


def test_partial_pipeline_output_scores_the_rows_present(tmp_path, capsys):
    """With rows_per_dataset the pipeline's results/generate/<m>/<d>.parquet answers the first
    N rows: evaluate scores those and says how many of the test set's rows they are."""
    responses = tmp_path / "partial.parquet"
    answered = [f"DR-{n}" for n in range(4)]
    frame = pd.DataFrame({"row_id": answered, "response": [text for _, text in ROWS[:4]]})
    write_table(frame, responses)
    code, out, err = run(capsys, "DR", str(responses), "--test-set", str(_test_set(tmp_path)))
    assert code == 0, err
    assert "4 responses from" in out and "(4 of the test set's 6 rows;" in out
    assert "answers 4 of the 6 rows of the test set" in err and "not comparable" in err
    result = run_json(capsys, "DR", str(responses), "--test-set", str(_test_set(tmp_path)))
    assert result["n"] == 4 and result["test_set_rows"] == 6
    assert "answers 4 of the 6 rows" in result["warnings"][0]
    # the same numbers as the first four rows in upstream's layout
    first_four = run_json(capsys, "DR", str(_write(tmp_path, _upstream(ROWS[:4]))))
    for key in ("accuracy", "weighted_f1", "confusion_matrix", "ood", "bleu", "rougeL"):
        assert result[key] == first_four[key], key
    assert first_four["test_set_rows"] == 4 and first_four["warnings"] == []


def test_responses_of_another_test_set_are_refused(tmp_path, capsys):
    responses = tmp_path / "other.parquet"
    write_table(pd.DataFrame({"row_id": ["SAD-0"], "response": ["x"]}), responses)
    code, _, err = run(capsys, "DR", str(responses), "--test-set", str(_test_set(tmp_path)))
    assert code == 2 and "none of its row_ids is a row of the test set" in err


def test_header_only_csv_says_the_file_has_no_rows(tmp_path, capsys):
    path = tmp_path / "DR.csv"
    path.write_text("goldens,generated_text\n")
    code, _, err = run(capsys, "DR", str(path))
    assert (code, err) == (2, f"imhibench: error: {path}: the file has no rows\n")
    ids = tmp_path / "ids.csv"
    ids.write_text("row_id,response\n")
    test_set = tmp_path / "test_set.parquet"
    write_table(pd.DataFrame({"row_id": ["DR-0"], "gold_answer": [YES], "gold_label": ["yes"]}),
                test_set)  # fmt: skip
    code, _, err = run(capsys, "DR", str(ids), "--test-set", str(test_set))
    assert (code, err) == (2, f"imhibench: error: {ids}: the file has no rows\n")


def test_one_default_seed_for_the_command_and_the_pipeline_printed_beside_the_interval(
    upstream_csv, capsys
):
    """The same answers get the same interval from `imhibench evaluate` and the pipeline."""
    from imhibench.score.metrics.correctness import weighted_f1_ci

    config = yaml.safe_load((REPO / "workflow_config" / "config.yaml").read_text())
    result = run_json(capsys, "DR", str(upstream_csv))
    assert result["bootstrap"]["seed"] == config["seed"] == 42
    gold = ["yes", "no", "yes", "no", "yes", "no"]
    rule = ["yes", "no", "no", "yes", "yes", "no"]
    assert result["weighted_f1_ci95"] == list(weighted_f1_ci(gold, rule, seed=config["seed"]))
    code, out, _ = run(capsys, "DR", str(upstream_csv))
    low, high = result["weighted_f1_ci95"]
    assert code == 0 and f"(95% CI {low:.2f}-{high:.2f}, seed 42)" in out
