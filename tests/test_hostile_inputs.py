"""Hostile inputs: unsafe names, unusual characters, wrong encodings."""

from __future__ import annotations

import pandas as pd
import pytest
from test_config import SCHEMA, load

from imhibench.common.errors import ImhiBenchError
from imhibench.common.io import read_table, write_table
from imhibench.config.validation import validate_config
from imhibench.fetch.test_sets import read_test_csv
from imhibench.generate.stage import run_generate
from imhibench.label import run_label
from imhibench.score.stage import run_score

NASTY = [
    "Yes 😢🧠, the poster suffers from depression. Reasoning: «tired» — 👩‍👩‍👧",
    "No. Reasoning: \u05d4\u05d5\u05d0 \u05e2\u05d9\u05d9\u05e3 \u0645\u062a\u0639\u0628"
    " (RTL override: \u202eabc\u202c)",
    "Yes.\u200b Reasoning:\u200d zero\ufeffwidth\u2060 joiners",
    "No. Reasoning: bell\x07 escape\x1b[31m tab\t del\x7f form\x0c feed",
    "Yes. Reasoning: windows\r\nline\r\nendings\rand a lone CR\n",
    'No, "quoted", \'single\', ""doubled"", a,b,,c; and \\backslash\\ "',
    "  leading and trailing spaces  ",
    "=cmd|' /C calc'!A0 (a spreadsheet formula, kept as text)",
]


@pytest.mark.parametrize(
    ("catalog", "name"),
    [
        ("model_catalog", "../evil"),
        ("model_catalog", "a/b"),
        ("model_catalog", "my model"),
        ("model_catalog", ".hidden"),
        ("dataset_catalog", "../../etc"),
        ("dataset_catalog", "DR v2"),
        ("dataset_catalog", "x/y"),
    ],
)
def test_unsafe_names_are_refused_with_the_key_and_the_rule(catalog, name):
    config = load("config.yaml")
    first = next(iter(config[catalog]))
    config[catalog][name] = config[catalog][first]
    with pytest.raises(ImhiBenchError) as error:
        validate_config(config, SCHEMA)
    message = str(error.value)
    assert f"{catalog}: {name!r} does not match" in message
    assert "letters, digits" in message


def test_unusual_characters_survive_every_stage_byte_for_byte(tmp_path):
    ids = [f"DR-{n:05d}" for n in range(len(NASTY))]
    test_set = tmp_path / "DR.parquet"
    gold = 'Yes, the poster suffers from depression. Reasoning: a, "quoted" gold 😢.'
    write_table(
        pd.DataFrame(
            {"row_id": ids, "query": NASTY, "gold_answer": gold, "gold_label": "yes",
             "gold_explanation": "x"}
        ),
        test_set,
    )  # fmt: skip
    responses_csv = tmp_path / "DR.csv"
    pd.DataFrame({"row_id": ids, "response": NASTY}).to_csv(responses_csv, index=False)
    spec = {"kind": "responses", "split": "instruction", "responses": str(responses_csv)}
    generated = tmp_path / "generate.parquet"
    run_generate(str(test_set), str(generated), "imported", spec, None, None, str(responses_csv),
                 {}, rows=None)  # fmt: skip
    written = read_table(generated)
    assert [t.encode("utf-8") for t in written["response"]] == [t.encode("utf-8") for t in NASTY]

    labels = tmp_path / "labels.parquet"
    run_label(str(generated), str(test_set), str(labels), "DR", ["rule"], None)
    labelled = read_table(labels)
    assert labelled["row_id"].tolist() == ids
    assert labelled["label_rule"].tolist() == ["yes", "no", "yes", "no", "yes", "no", "no", "no"]
    rows, summary = tmp_path / "rows.parquet", tmp_path / "summary.parquet"
    run_score(str(generated), str(labels), str(test_set), str(rows), str(summary), "imported",
              "DR", "DR", ["rule"], {"rouge": {}, "bleu": {}}, device="cpu")  # fmt: skip
    scored = read_table(rows)
    assert scored["row_id"].tolist() == ids and scored["rouge1"].notna().all()
    assert read_table(summary).set_index("metric").loc["n", "value"] == len(NASTY)
    # the upstream layout (goldens,generated_text, written with IMHI.py's escapechar) too
    upstream = tmp_path / "upstream.csv"
    pd.DataFrame({"goldens": gold, "generated_text": NASTY}).to_csv(
        upstream, index=False, escapechar="\\"
    )
    spec["responses"] = str(upstream)
    run_generate(str(test_set), str(generated), "imported", spec, None, None, str(upstream), {},
                 rows=None)  # fmt: skip
    assert read_table(generated)["response"].tolist() == NASTY


def _latin1_csv(path, header: str, row: str):
    path.write_bytes(f"{header}\n{row}\n".encode("latin-1"))
    return path


def test_non_utf8_responses_file_says_how_to_convert(tmp_path):
    test_set = tmp_path / "DR.parquet"
    write_table(pd.DataFrame({"row_id": ["DR-00000"], "query": ["q"], "gold_answer": ["g"]}),
                test_set)  # fmt: skip
    csv = _latin1_csv(tmp_path / "DR.csv", "row_id,response", "DR-00000,Très fatigué, déprimé")
    spec = {"kind": "responses", "split": "instruction", "responses": str(csv)}
    with pytest.raises(ImhiBenchError) as error:
        run_generate(str(test_set), str(tmp_path / "out.parquet"), "m", spec, None, None,
                     str(csv), {}, rows=None)  # fmt: skip
    message = str(error.value)
    assert f"{csv}: not UTF-8 text" in message
    assert f"iconv -f latin1 -t utf-8 {csv} > {tmp_path / 'DR.utf8.csv'}" in message
    assert not (tmp_path / "out.parquet").exists()


def test_non_utf8_test_file_says_how_to_convert(tmp_path):
    csv = _latin1_csv(tmp_path / "DR.csv", "query,gpt-3.5-turbo", "Très,No. Reasoning: café")
    with pytest.raises(ImhiBenchError, match=r"DR.csv: not UTF-8 text .*iconv -f latin1 -t utf-8"):
        read_test_csv(csv)
