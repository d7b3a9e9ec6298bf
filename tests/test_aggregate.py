import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from imhibench.aggregate import (
    SHIPPED_PUBLISHED,
    load_published,
    paper_row_order,
    pivot,
    table_specs,
    write_tables,
)
from imhibench.errors import ImhiBenchError
from imhibench.io import read_provenance, write_table
from imhibench.metrics.paired import paired_weighted_f1_difference
from imhibench.tables import read_table_metadata


def summary(model: str, dataset: str, f1: float, bart: float) -> pd.DataFrame:
    rows = [
        ("weighted_f1", "mentalbert", f1),
        ("weighted_f1_ci_low", "mentalbert", f1 - 5),
        ("weighted_f1_ci_high", "mentalbert", f1 + 4),
        ("weighted_f1", "rule", f1 / 2),
        ("bart_score", None, bart),
    ]
    return pd.DataFrame(
        [(model, dataset, dataset, "instruction", m, lab, v) for m, lab, v in rows],
        columns=["model", "dataset", "task", "split", "metric", "labeler", "value"],
    )


PARABANK = "bart-large-cnn + ParaBank2"


@pytest.fixture
def summaries(tmp_path):
    paths = []
    for model, dataset, f1, bart in [
        ("m1", "DR", 80.0, -3.0), ("m1", "SAD", 50.5, -4.0),
        ("m2", "DR", 70.25, -3.5), ("m1", "DR-expert", 60.0, -2.5),
    ]:  # fmt: skip
        path = tmp_path / f"{model}-{dataset}.parquet"
        record = {"stage": "score", "model": model, "dataset": dataset}
        record["bart_score_variant"] = PARABANK
        write_table(summary(model, dataset, f1, bart), path, record)
        paths.append(path)
    return paths


@pytest.fixture
def published(tmp_path):
    path = tmp_path / "published.csv"
    path.write_text(
        "model,DR,CLP,dreaddit,SAD\n"
        "RoBERTa_base,94.23,69.71,81.76,68.44\n"
        "Paper M1,83.95,51.84,,62.18\n"
        "Paper M2,85.00,52.61,75.79,\n"
    )
    return path


GROUPS = {"main": ["SAD", "DR"], "expert": ["DR-expert"]}
TASKS = {"DR": "DR", "SAD": "SAD", "DR-expert": "DR"}


def test_tables_have_models_as_rows_and_datasets_as_columns(summaries, tmp_path):
    out = tmp_path / "tables"
    specs = table_specs("mentalbert", ["bart_score", "rouge"], ["main", "expert"])
    assert [s.name for s in specs] == [
        "weighted_f1", "bart_score", "expert_weighted_f1", "expert_bart_score",
    ]  # fmt: skip
    written = write_tables(
        summaries, out, specs, ["m1", "m2"], GROUPS, TASKS,
        notes=["m2 on SAD: skipped"], provenance={"stage": "aggregate"},
    )  # fmt: skip
    assert {p.suffix for p in written} == {".parquet", ".md", ".html", ".tex"}
    f1 = pd.read_parquet(out / "weighted_f1.parquet")
    # no published file: no published columns; config order SAD, DR kept (no paper order known)
    assert f1.columns.tolist() == [
        "model", "status", "published_as",
        "SAD", "SAD_ci_low", "SAD_ci_high", "DR", "DR_ci_low", "DR_ci_high",
    ]  # fmt: skip
    assert f1.loc[0, "DR"] == 80.0 and f1.loc[1, "DR"] == 70.25 and f1.loc[0, "DR_ci_low"] == 75
    assert math.isnan(f1.loc[1, "SAD"])  # m2 has no SAD job
    markdown = (out / "weighted_f1.md").read_text()
    assert "| m2 | - | 70.25 [65.25, 74.25] |" in markdown
    assert "- m2 on SAD: skipped" in markdown
    assert pd.read_parquet(out / "bart_score.parquet").loc[0, "SAD"] == -4.0
    assert "| m1 | -4.00 | -3.00 |" in (out / "bart_score.md").read_text()
    assert pd.read_parquet(out / "expert_weighted_f1.parquet").loc[0, "DR-expert"] == 60.0
    assert read_provenance(out / "weighted_f1.parquet") == {"stage": "aggregate"}
    assert len(pd.read_parquet(out / "all_metrics.parquet")) == 20


def test_notes_given_per_group_stay_under_that_groups_tables(summaries, tmp_path):
    out = tmp_path / "tables"
    specs = table_specs("mentalbert", ["bart_score"], ["main", "expert"])
    notes = {"main": ["Skipping SAD for m2: main note"], "expert": ["Skipping X: expert note"]}
    write_tables(summaries, out, specs, ["m1", "m2"], GROUPS, TASKS, notes=notes)
    for name in ("weighted_f1", "bart_score"):
        text = (out / f"{name}.md").read_text()
        assert "main note" in text and "expert note" not in text
    for name in ("expert_weighted_f1", "expert_bart_score"):
        text = (out / f"{name}.md").read_text()
        assert "expert note" in text and "main note" not in text


def test_parquet_metadata_says_units_labeler_variant_and_provenance(summaries, tmp_path):
    out = tmp_path / "tables"
    write_tables(summaries, out, table_specs("mentalbert", ["bart_score"], ["main"]),
                 ["m1", "m2"], {"main": ["DR"]}, TASKS)  # fmt: skip
    f1 = read_table_metadata(out / "weighted_f1.parquet")
    assert f1["units"].startswith("weighted F1 x100") and f1["labeler"] == "mentalbert"
    assert f1["provenance"] == "provenance.json" and f1["scorer_variant"] is None
    bart = read_table_metadata(out / "bart_score.parquet")
    assert bart["scorer_variant"] == "bart-large-cnn + ParaBank2" and bart["labeler"] is None
    assert "[bart-large-cnn + ParaBank2]" in bart["title"]
    assert "bart-large-cnn + ParaBank2" in (out / "bart_score.tex").read_text()


def test_rows_follow_the_paper_with_published_values_and_differences(
    summaries, published, tmp_path
):
    out = tmp_path / "tables"
    specs = table_specs("mentalbert", [], ["main"])
    write_tables(
        summaries, out, specs, ["m1", "m2"], {"main": ["SAD", "DR"]}, TASKS,
        published=published, published_as={"m1": "Paper M1", "m2": None},
    )  # fmt: skip
    table = pd.read_parquet(out / "weighted_f1.parquet")
    # paper order: published rows in file order (m1 in place of "Paper M1"), then m2
    assert table["model"].tolist() == ["RoBERTa_base", "m1", "Paper M2", "m2"]
    assert table["status"].tolist() == [
        "published only", "reproduced", "published only", "reproduced",
    ]  # fmt: skip
    # columns in the published file's (= the paper's) order: DR before SAD
    assert [c for c in table.columns if "_" not in c and c not in ("model", "status")] == [
        "DR", "SAD",
    ]  # fmt: skip
    m1 = table.set_index("model").loc["m1"]
    assert m1["DR_published"] == 83.95 and m1["DR_difference"] == pytest.approx(80.0 - 83.95)
    assert m1["SAD_difference"] == pytest.approx(50.5 - 62.18)
    assert math.isnan(table.set_index("model").loc["m2", "DR_published"])
    markdown = (out / "weighted_f1.md").read_text()
    assert "| RoBERTa\\_base (published only) | 94.23 | 68.44 |" not in markdown  # not escaped
    assert "| RoBERTa_base (published only) | 94.23 | 68.44 |" in markdown
    assert "| m1 | 80.00 [75.00, 84.00] | 50.50 [45.50, 54.50] |" in markdown
    assert "| &nbsp;&nbsp;published (Paper M1) | 83.95 | 62.18 |" in markdown
    assert "| &nbsp;&nbsp;difference | -3.95 | -11.68 |" in markdown
    assert "| Paper M2 (published only) | 85.00 | - |" in markdown
    assert f"Published values: {published}." in markdown


def test_the_shipped_published_file_carries_its_caveat(summaries, tmp_path):
    shipped = load_published(SHIPPED_PUBLISHED)
    assert list(shipped.columns) == [
        "DR", "CLP", "dreaddit", "swmh", "t-sid", "SAD", "CAMS", "loneliness", "MultiWD", "Irf",
    ]  # fmt: skip
    assert shipped.at["MentaLLaMA-chat-7B", "DR"] == 83.95
    assert shipped.index[0] == "MentalRoBERTa"
    out = tmp_path / "tables"
    write_tables(summaries, out, table_specs("mentalbert", [], ["main"]), ["m1"],
                 {"main": ["DR"]}, TASKS, published=SHIPPED_PUBLISHED,
                 published_as={"m1": "MentaLLaMA-chat-7B"})  # fmt: skip
    markdown = (out / "weighted_f1.md").read_text()
    assert "not yet checked against the paper's PDF" in markdown
    assert "| MentalRoBERTa (published only) | 94.23 |" in markdown
    assert "| &nbsp;&nbsp;difference | -3.95 |" in markdown


def test_published_as_must_name_a_published_row():
    with pytest.raises(ImhiBenchError, match=r"published_as names \['Nope'\]"):
        paper_row_order(["m1"], {"m1": "Nope"}, ["A"])


def test_a_model_listed_twice_is_refused_by_name():
    with pytest.raises(ImhiBenchError, match=r"models listed more than once: \['m1'\]"):
        paper_row_order(["m1", "m2", "m1"], {}, ["A"])


def test_bad_published_file_is_named(tmp_path):
    bad = tmp_path / "pub.csv"
    bad.write_text("model,DR\nA,high\n")
    with pytest.raises(ImhiBenchError, match=r"pub.csv: column 'DR' is not numeric"):
        load_published(bad)
    bad.write_text("name,DR\nA,1\n")
    with pytest.raises(ImhiBenchError, match=r"pub.csv: published results need a 'model'"):
        load_published(bad)


def test_latex_is_booktabs_balanced_and_escaped(summaries, tmp_path):
    out = tmp_path / "tables"
    write_tables(summaries, out, table_specs("mentalbert", [], ["main"]), ["m1", "m2"],
                 {"main": ["DR"]}, TASKS, notes=["50% of rows & more_notes"])  # fmt: skip
    tex = (out / "weighted_f1.tex").read_text()
    assert tex.count("\\begin{table}") == tex.count("\\end{table}") == 1
    assert tex.count("\\begin{tabular}{lr}") == tex.count("\\end{tabular}") == 1
    assert tex.index("\\toprule") < tex.index("\\midrule") < tex.index("\\bottomrule")
    assert "50\\% of rows \\& more\\_notes" in tex
    body = tex[tex.index("\\midrule") : tex.index("\\bottomrule")]
    assert [line.count("&") for line in body.splitlines()[1:]] == [1, 1]
    assert "m1 & 80.00 [75.00, 84.00] \\\\" in body
    assert tex.count("{") == tex.count("}")


def label_file(path, gold, predicted, labeler="mentalbert"):
    frame = pd.DataFrame({
        "row_id": [f"DR-{i:05d}" for i in range(len(gold))],
        "gold_label": gold, f"label_{labeler}": predicted,
    })  # fmt: skip
    write_table(frame, path)
    return path


def test_paired_table_marks_significant_differences(summaries, tmp_path):
    gold = ["yes", "no"] * 10
    wrong = ["no", "yes"] * 10
    labels = {
        ("m1", "DR"): label_file(tmp_path / "a.parquet", gold, gold),
        ("m2", "DR"): label_file(tmp_path / "b.parquet", gold, wrong),
        ("m3", "DR"): label_file(tmp_path / "c.parquet", gold, gold),
    }
    m3 = tmp_path / "m3-DR.parquet"
    write_table(summary("m3", "DR", 100.0, -1.0), m3)
    out = tmp_path / "tables"
    written = write_tables([*summaries, m3], out, table_specs("mentalbert", [], ["main"]),
                           ["m1", "m2", "m3"], {"main": ["DR"], "expert": []}, TASKS,
                           label_paths=labels, seed=3)  # fmt: skip
    assert out / "weighted_f1_paired.tex" in written
    paired = pd.read_parquet(out / "weighted_f1_paired.parquet").set_index(["model_a", "model_b"])
    # perfect vs all wrong: +100 in every resample; identical predictions: 0 in every resample
    assert paired.loc[("m1", "m2"), ["difference", "ci_low", "ci_high"]].tolist() == [100] * 3
    assert paired.loc[("m1", "m2"), "significant"] and paired.loc[("m1", "m2"), "p_value"] == 0
    assert (
        paired.loc[("m1", "m3"), "difference"] == 0 and not paired.loc[("m1", "m3"), "significant"]
    )
    assert paired.loc[("m2", "m3"), "difference"] == -100
    assert paired["n_rows"].tolist() == [20, 20, 20]
    markdown = (out / "weighted_f1_paired.md").read_text()
    assert "| m1 - m2 | +100.00 [100.00, 100.00] * |" in markdown
    assert "| m1 - m3 | 0.00 [0.00, 0.00] |" in markdown


def test_paired_bootstrap_matches_scikit_learn_and_is_seeded():
    rng = np.random.default_rng(0)
    gold = rng.choice(["a", "b", "c"], 60).tolist()
    first = [g if rng.random() < 0.8 else "a" for g in gold]
    second = [g if rng.random() < 0.5 else "b" for g in gold]
    test = paired_weighted_f1_difference(gold, first, second, seed=7)
    expected = 100 * (f1_score(gold, first, average="weighted")
                      - f1_score(gold, second, average="weighted"))  # fmt: skip
    assert test.difference == pytest.approx(expected)
    assert test.ci_low < test.difference < test.ci_high and test.significant
    assert paired_weighted_f1_difference(gold, first, second, seed=7) == test
    assert paired_weighted_f1_difference(gold, first, second, seed=8) != test
    with pytest.raises(ImhiBenchError, match="equal rows"):
        paired_weighted_f1_difference(gold, first, second[:-1])


def test_rule_labeler_table_picks_rule_rows(summaries):
    from imhibench.aggregate import load_summaries

    table = pivot(load_summaries(summaries), "weighted_f1", "rule", ["m1"], ["DR"])
    assert table.loc["m1", "DR"] == 40.0


def test_nothing_to_aggregate(tmp_path):
    with pytest.raises(ImhiBenchError, match="nothing to aggregate"):
        write_tables([], tmp_path, [], [], {})


def test_bad_summary_file_is_named(tmp_path):
    bad = tmp_path / "bad.parquet"
    write_table(pd.DataFrame({"x": [1]}), bad)
    with pytest.raises(ImhiBenchError, match=r"bad.parquet: missing column"):
        write_tables([bad], tmp_path / "t", [], [], {})


def test_html_escapes_names(summaries, tmp_path):
    out = tmp_path / "tables"
    write_tables(summaries, out, table_specs("mentalbert", [], ["main"]), ["m1"],
                 {"main": ["DR"]}, TASKS, notes=["a <b> note"])  # fmt: skip
    page = (out / "weighted_f1.html").read_text()
    assert "a &lt;b&gt; note" in page
    assert re.search(r"<td>m1</td><td>80.00 \[75.00, 84.00\]</td>", page)


def test_bart_score_table_names_its_variant(summaries, tmp_path):
    out = tmp_path / "tables"
    specs = table_specs("mentalbert", ["bart_score"], ["main"])
    write_tables(summaries, out, specs, ["m1", "m2"], {"main": ["DR", "SAD"]}, provenance={})
    assert PARABANK in (out / "bart_score.md").read_text().splitlines()[0]
    assert PARABANK in (out / "bart_score.html").read_text()
    assert read_provenance(out / "bart_score.parquet")["bart_score_variant"] == PARABANK
    assert "bart_score_variant" not in read_provenance(out / "weighted_f1.parquet")
    sidecar = json.loads((out / "provenance.json").read_text())
    assert sidecar["bart_score_variant"] == PARABANK


def test_run_without_weights_says_so_in_the_note(tmp_path):
    path = tmp_path / "m1-DR.parquet"
    plain = "bart-large-cnn, no ParaBank2 weights"
    write_table(summary("m1", "DR", 80.0, -3.0), path, {"model": "m1", "bart_score_variant": plain})
    out = tmp_path / "tables"
    specs = table_specs("mentalbert", ["bart_score"], ["main"])
    write_tables([path], out, specs, ["m1"], {"main": ["DR"]})
    markdown = (out / "bart_score.md").read_text()
    assert plain in markdown.splitlines()[0]
    assert "not comparable with the paper's BART-scores" in markdown


def test_mixed_bart_score_variants_are_refused(summaries, tmp_path):
    plain = summaries[0].with_name("m3-DR.parquet")
    record = {"model": "m3", "bart_score_variant": "bart-large-cnn, no ParaBank2 weights"}
    write_table(summary("m3", "DR", 1.0, -9.0), plain, record)
    specs = table_specs("mentalbert", ["bart_score"], ["main"])
    with pytest.raises(ImhiBenchError, match="different variants.*m3-DR.parquet"):
        write_tables([*summaries, plain], tmp_path / "t", specs, ["m1", "m3"], {"main": ["DR"]})
    unnamed = summaries[0].with_name("old.parquet")
    write_table(summary("m4", "DR", 1.0, -9.0), unnamed, {"model": "m4"})
    with pytest.raises(ImhiBenchError, match="old.parquet.*names no BARTScore variant"):
        write_tables([*summaries, unnamed], tmp_path / "t", specs, ["m1"], {"main": ["DR"]})


def test_two_models_published_as_the_same_row_both_get_the_comparison(tmp_path, published):
    """E.g. a float32 and a bfloat16 run of one checkpoint: both compared, in config order."""
    paths = []
    for model, f1 in [("m-fp32", 80.0), ("m-bf16", 79.0)]:
        path = tmp_path / f"{model}.parquet"
        write_table(summary(model, "DR", f1, -3.0), path, {"model": model})
        paths.append(path)
    out = tmp_path / "tables"
    write_tables(paths, out, table_specs("mentalbert", [], ["main"]), ["m-fp32", "m-bf16"],
                 {"main": ["DR"]}, TASKS, published=published,
                 published_as={"m-fp32": "Paper M1", "m-bf16": "Paper M1"})  # fmt: skip
    table = pd.read_parquet(out / "weighted_f1.parquet")
    assert table["model"].tolist() == ["RoBERTa_base", "m-fp32", "m-bf16", "Paper M2"]
    assert table.set_index("model").loc[["m-fp32", "m-bf16"], "DR_difference"].tolist() == [
        pytest.approx(80.0 - 83.95), pytest.approx(79.0 - 83.95),
    ]  # fmt: skip
    markdown = (out / "weighted_f1.md").read_text()
    assert markdown.count("| &nbsp;&nbsp;published (Paper M1) | 83.95 |") == 2
    assert "| &nbsp;&nbsp;difference | -3.95 |" in markdown
    assert "| &nbsp;&nbsp;difference | -4.95 |" in markdown


@pytest.mark.parametrize(
    ("ours", "theirs", "shown"),
    [
        (83.946, "83.95", "0.00"),  # was -0.00
        (83.954, "83.95", "0.00"),  # was +0.00
        (83.946, "83.954", "0.00"),  # 83.95 - 83.95 as shown (unrounded: -0.008, was -0.01)
        (83.944, "83.95", "-0.01"),
    ],
)
def test_differences_are_of_the_values_as_shown_without_signed_zero(tmp_path, ours, theirs, shown):
    path = tmp_path / "m1.parquet"
    write_table(summary("m1", "DR", ours, -3.0), path, {"model": "m1"})
    published = tmp_path / "published.csv"
    published.write_text(f"model,DR\nPaper M1,{theirs}\n")
    out = tmp_path / "tables"
    write_tables([path], out, table_specs("mentalbert", [], ["main"]), ["m1"], {"main": ["DR"]},
                 TASKS, published=published, published_as={"m1": "Paper M1"})  # fmt: skip
    markdown = (out / "weighted_f1.md").read_text()
    assert f"| &nbsp;&nbsp;difference | {shown} |" in markdown
    assert "of the values as shown" in markdown
    unrounded = pd.read_parquet(out / "weighted_f1.parquet").loc[0, "DR_difference"]
    assert unrounded == pytest.approx(ours - float(theirs))


def test_numbers_never_show_a_signed_zero():
    from imhibench.tables import number, with_interval

    assert [number(v, signed=True) for v in (-0.004, 0.004, 0.0, -0.0, 0.006)] == [
        "0.00", "0.00", "0.00", "0.00", "+0.01",
    ]  # fmt: skip
    assert number(-0.001) == "0.00" and number(-0.01) == "-0.01"
    assert with_interval(0.001, -0.002, 0.3, signed=True) == "0.00 [0.00, 0.30]"
