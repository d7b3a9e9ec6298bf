import json
import logging
import math
import re

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from imhibench.aggregate.build import paper_row_order, pivot
from imhibench.aggregate.specs import table_specs
from imhibench.aggregate.write import write_tables
from imhibench.common.errors import ImhiBenchError
from imhibench.common.io import read_provenance, write_table
from imhibench.common.published import SHIPPED_PUBLISHED, load_published
from imhibench.common.tables import read_table_metadata
from imhibench.score.metrics.paired import paired_weighted_f1_difference


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


# What a score job records of the BARTScore it loaded (the aggregate names the variant from it).
WEIGHTS_SHA = "ab" * 32
PARABANK = (
    "bart-large-cnn + ParaBank2 weights"  # when the config records WEIGHTS_SHA as ParaBank2's
)
UNIDENTIFIED = "bart-large-cnn + unidentified weights file abababababab"


def scored_with(weights_sha256: str | None = WEIGHTS_SHA) -> dict:
    weights = {"sha256": weights_sha256} if weights_sha256 else None
    return {
        "seed": 42,
        "scorer_checkpoints": {"bart_score": {"hub_id": "facebook/bart-large-cnn"}},
        "bart_score_weights": weights,
    }


@pytest.fixture
def summaries(tmp_path):
    paths = []
    for model, dataset, f1, bart in [
        ("m1", "DR", 80.0, -3.0), ("m1", "SAD", 50.5, -4.0),
        ("m2", "DR", 70.25, -3.5), ("m1", "DR-expert", 60.0, -2.5),
    ]:  # fmt: skip
        path = tmp_path / f"{model}-{dataset}.parquet"
        record = {"stage": "score", "model": model, "dataset": dataset}
        record.update(scored_with())
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
        "model", "status", "published_as", "random_weights",
        "SAD", "SAD_n", "SAD_ci_low", "SAD_ci_high", "DR", "DR_n", "DR_ci_low", "DR_ci_high",
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
                 ["m1", "m2"], {"main": ["DR"]}, TASKS, parabank2_sha256=WEIGHTS_SHA)  # fmt: skip
    f1 = read_table_metadata(out / "weighted_f1.parquet")
    assert f1["units"].startswith("weighted F1 x100") and f1["labeler"] == "mentalbert"
    assert f1["provenance"] == "provenance.json" and f1["scorer_variant"] is None
    bart = read_table_metadata(out / "bart_score.parquet")
    assert bart["scorer_variant"] == PARABANK and bart["labeler"] is None
    assert f"[{PARABANK}]" in bart["title"]
    assert PARABANK in (out / "bart_score.tex").read_text()


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
    assert "| m1 - m2 | +100.00 [100.00, 100.00] * (n=20) |" in markdown
    assert "| m1 - m3 | 0.00 [0.00, 0.00] (n=20) |" in markdown


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
    from imhibench.aggregate.build import load_summaries

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
    write_tables(summaries, out, specs, ["m1", "m2"], {"main": ["DR", "SAD"]}, provenance={},
                 parabank2_sha256=WEIGHTS_SHA)  # fmt: skip
    assert PARABANK in (out / "bart_score.md").read_text().splitlines()[0]
    assert PARABANK in (out / "bart_score.html").read_text()
    assert read_provenance(out / "bart_score.parquet")["bart_score_variant"] == PARABANK
    assert "bart_score_variant" not in read_provenance(out / "weighted_f1.parquet")
    sidecar = json.loads((out / "provenance.json").read_text())
    assert sidecar["bart_score_variant"] == PARABANK


def test_writing_the_tables_loads_no_model_library(summaries, tmp_path):
    """The aggregate job names the BART-score variant from provenance: it imports neither
    torch nor transformers (seconds in every job; issue 22) nor scikit-learn."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from imhibench.aggregate.specs import table_specs\n"
        "from imhibench.aggregate.write import write_tables\n"
        f"write_tables({[str(p) for p in summaries]!r}, {str(tmp_path / 'tables')!r}, "
        "table_specs('mentalbert', ['bart_score'], ['main']), ['m1', 'm2'], "
        f"{{'main': ['DR', 'SAD']}}, provenance={{}}, parabank2_sha256={WEIGHTS_SHA!r})\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'torch', 'transformers', 'sklearn'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
    assert PARABANK in (tmp_path / "tables" / "bart_score.md").read_text()


def test_run_without_weights_says_so_in_the_note(tmp_path):
    path = tmp_path / "m1-DR.parquet"
    plain = "bart-large-cnn, no ParaBank2 weights"
    write_table(summary("m1", "DR", 80.0, -3.0), path, {"model": "m1", **scored_with(None)})
    out = tmp_path / "tables"
    specs = table_specs("mentalbert", ["bart_score"], ["main"])
    write_tables([path], out, specs, ["m1"], {"main": ["DR"]})
    markdown = (out / "bart_score.md").read_text()
    assert plain in markdown.splitlines()[0]
    assert "not comparable with the paper's BART-scores" in markdown


def test_mixed_bart_score_variants_are_refused(summaries, tmp_path):
    plain = summaries[0].with_name("m3-DR.parquet")
    record = {"model": "m3", **scored_with(None)}
    write_table(summary("m3", "DR", 1.0, -9.0), plain, record)
    specs = table_specs("mentalbert", ["bart_score"], ["main"])
    with pytest.raises(ImhiBenchError, match="different variants.*m3-DR.parquet"):
        write_tables([*summaries, plain], tmp_path / "t", specs, ["m1", "m3"], {"main": ["DR"]})
    unnamed = summaries[0].with_name("old.parquet")
    write_table(summary("m4", "DR", 1.0, -9.0), unnamed, {"model": "m4"})
    with pytest.raises(ImhiBenchError, match="old.parquet.*names no BARTScore checkpoint"):
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
    from imhibench.common.tables import number, with_interval

    assert [number(v, signed=True) for v in (-0.004, 0.004, 0.0, -0.0, 0.006)] == [
        "0.00", "0.00", "0.00", "0.00", "+0.01",
    ]  # fmt: skip
    assert number(-0.001) == "0.00" and number(-0.01) == "-0.01"
    assert with_interval(0.001, -0.002, 0.3, signed=True) == "0.00 [0.00, 0.30]"


def summary_with_n(model: str, dataset: str, f1: float, n: int) -> pd.DataFrame:
    frame = summary(model, dataset, f1, -3.0)
    extra = pd.DataFrame([(model, dataset, dataset, "instruction", "n", None, float(n))],
                         columns=frame.columns)  # fmt: skip
    return pd.concat([frame, extra], ignore_index=True)


@pytest.fixture
def demo_like(tmp_path):
    """A random-weights model on 4 rows per test set and a real one on 35 rows, as the demo."""
    paths = []
    cells = [("demo-llama", "DR", 64.29, 4), ("demo-llama", "SAD", 20.0, 4),
             ("examples", "DR", 56.23, 35), ("examples", "SAD", 60.0, 35)]  # fmt: skip
    for model, dataset, f1, n in cells:
        path = tmp_path / f"{model}-{dataset}.parquet"
        record = {"model": model, "dataset": dataset, **scored_with()}
        write_table(summary_with_n(model, dataset, f1, n), path, record)
        paths.append(path)
    return paths


def test_random_weight_rows_are_marked_and_rows_per_cell_are_given(demo_like, tmp_path):
    out = tmp_path / "tables"
    write_tables(demo_like, out, table_specs("mentalbert", [], ["main"]),
                 ["demo-llama", "examples"], {"main": ["DR", "SAD"]}, TASKS,
                 random_weights=["demo-llama"])  # fmt: skip
    markdown = (out / "weighted_f1.md").read_text()
    assert "| demo-llama (random weights) | 64.29 [59.29, 68.29] | 20.00 [15.00, 24.00] |" in (
        markdown
    )
    assert "| examples | 56.23 [51.23, 60.23] | 60.00 [55.00, 64.00] |" in markdown
    assert "- Rows per cell: 4 (demo-llama); 35 (examples).\n" in markdown
    assert (
        "- (random weights): a tiny model with untrained weights (the demo's stand-ins); its "
        "numbers only show that the pipeline runs and say nothing about any real model.\n"
    ) in markdown
    frame = pd.read_parquet(out / "weighted_f1.parquet").set_index("model")
    assert frame["random_weights"].tolist() == [True, False]
    assert frame["DR_n"].tolist() == [4, 35]


def test_rows_per_cell_name_test_sets_when_they_differ():
    from imhibench.aggregate.notes import rows_per_cell_note

    counts = pd.DataFrame({"DR": [405.0, 405.0], "SAD": [684.0, math.nan]}, index=["a", "b"])
    assert rows_per_cell_note(counts) == "Rows per cell: DR 405, SAD 684 (a); 405 (b)."


def test_published_values_of_another_labeller_are_said_so(summaries, published, tmp_path):
    out = tmp_path / "tables"
    args = (summaries, out, table_specs("rule", [], ["main"]), ["m1"], {"main": ["DR"]}, TASKS)
    write_tables(*args, published=published, published_as={"m1": "Paper M1"})
    markdown = (out / "weighted_f1.md").read_text()
    assert "| &nbsp;&nbsp;published (Paper M1, MentalBERT labels) | 83.95 |" in markdown
    assert "| Paper M2 (published only, MentalBERT labels) | 85.00 |" in markdown
    assert (
        "- Labelling differs: the reproduced rows are scored on rule labels, the published rows "
        "on the paper's MentalBERT classifier labels; a difference mixes the model with the "
        "labeller.\n"
    ) in markdown
    write_tables(summaries, out, table_specs("mentalbert", [], ["main"]), ["m1"],
                 {"main": ["DR"]}, TASKS, published=published,
                 published_as={"m1": "Paper M1"})  # fmt: skip
    markdown = (out / "weighted_f1.md").read_text()
    assert "Labelling differs" not in markdown
    assert "| &nbsp;&nbsp;published (Paper M1) | 83.95 |" in markdown
    # published-only rows (the demo's case: no model of ours is published) say so too
    write_tables(*args, published=published, published_as={})
    markdown = (out / "weighted_f1.md").read_text()
    assert "| Paper M1 (published only, MentalBERT labels) | 83.95 |" in markdown
    assert "- Labelling differs: the reproduced rows are scored on rule labels" in markdown


def test_skipped_jobs_are_one_line_in_tables_and_listed_in_report_log_and_sidecar(
    summaries, tmp_path, caplog
):
    skipped = [f"Skipping SAD for m2 and demo-{i}: not in its datasets" for i in range(13)]
    out = tmp_path / "tables"
    specs = table_specs("mentalbert", ["bart_score"], ["main", "expert"])
    with caplog.at_level(logging.INFO, logger="imhibench.aggregate.write"):
        write_tables(summaries, out, specs, ["m1", "m2"], GROUPS, TASKS,
                     skipped={"main": skipped, "expert": []})  # fmt: skip
    for name in ("weighted_f1", "bart_score"):  # m2 has no SAD cell: "-"
        markdown = (out / f"{name}.md").read_text()
        assert "| m2 | - |" in markdown
        assert markdown.count("- -: not run; details in provenance.json\n") == 1
        assert "Skipping" not in markdown
        tex = (out / f"{name}.tex").read_text()
        assert "-: not run; details in provenance.json" in tex and "Skipping" not in tex
        page = (out / f"{name}.html").read_text()
        assert "<summary>Not run (13)</summary>" in page
        assert all(f"<li>{message}</li>" in page for message in skipped)
        assert read_table_metadata(out / f"{name}.parquet")["not_run"] == skipped
    assert "not run" not in (out / "expert_weighted_f1.md").read_text()
    assert json.loads((out / "provenance.json").read_text())["skipped"] == {"main": skipped}
    assert all(message in caplog.text for message in skipped)
    # skipped jobs of a model without a row in the table (no "-" cell): no note, the list stays
    write_tables(summaries, out, specs, ["m1", "m2"], GROUPS, TASKS,
                 skipped={"expert": ["Skipping DR-expert for m3: no such split"]})  # fmt: skip
    assert "not run" not in (out / "expert_weighted_f1.md").read_text()
    assert "<summary>Not run (1)</summary>" in (out / "expert_weighted_f1.html").read_text()


def test_interval_note_names_the_bootstrap_seed(summaries, tmp_path):
    out = tmp_path / "tables"
    write_tables(summaries, out, table_specs("mentalbert", [], ["main"]), ["m1"],
                 {"main": ["DR"]}, TASKS)  # fmt: skip
    assert (
        "- Brackets: seeded percentile bootstrap 95% interval (1000 resamples of the rows, "
        "seed 42).\n"
    ) in (out / "weighted_f1.md").read_text()
    assert read_table_metadata(out / "weighted_f1.parquet")["bootstrap_seeds"] == [42]


def test_paired_tables_of_two_groups_have_distinct_titles_and_show_shared_rows(tmp_path):
    gold = ["yes", "no"] * 5
    labels = {
        ("a", "DR"): label_file(tmp_path / "a.parquet", gold, gold),
        ("b", "DR"): label_file(tmp_path / "b.parquet", gold[:4], gold[:4]),
        ("a", "DR-expert"): label_file(tmp_path / "c.parquet", gold, gold),
        ("b", "DR-expert"): label_file(tmp_path / "d.parquet", gold, ["yes"] * 10),
    }
    paths = []
    for (model, dataset), n in {("a", "DR"): 10, ("b", "DR"): 4, ("a", "DR-expert"): 10,
                                ("b", "DR-expert"): 10}.items():  # fmt: skip
        path = tmp_path / f"s-{model}-{dataset}.parquet"
        write_table(summary_with_n(model, dataset, 50.0, n), path, {"seed": 42})
        paths.append(path)
    out = tmp_path / "tables"
    write_tables(paths, out, table_specs("mentalbert", [], ["main", "expert"]), ["a", "b"],
                 {"main": ["DR"], "expert": ["DR-expert"]}, TASKS, label_paths=labels)  # fmt: skip
    main = (out / "weighted_f1_paired.md").read_text().splitlines()[0]
    expert = (out / "expert_weighted_f1_paired.md").read_text().splitlines()[0]
    assert main == (
        "## Paired test: weighted-F1 differences between models (mentalbert labels), IMHI test sets"
    )
    assert expert == (
        "## Paired test: weighted-F1 differences between models (mentalbert labels), "
        "expert-written explanation sets"
    )
    assert "| a - b | 0.00 [0.00, 0.00] (n=4) |" in (out / "weighted_f1_paired.md").read_text()
    assert "(n=10) |" in (out / "expert_weighted_f1_paired.md").read_text()


def test_demo_weights_are_never_called_parabank2_without_the_recorded_digest(tmp_path):
    """The demo's stand-in weights: with no ParaBank2 digest recorded (the demo config) or
    another one, the table names the file by its digest and says it is not comparable."""
    path = tmp_path / "m1-DR.parquet"
    write_table(summary("m1", "DR", 80.0, -3.0), path, {"model": "m1", **scored_with()})
    specs = table_specs("mentalbert", ["bart_score"], ["main"])
    for recorded in (None, "cd" * 32):
        out = tmp_path / f"tables-{recorded}"
        write_tables([path], out, specs, ["m1"], {"main": ["DR"]}, parabank2_sha256=recorded)
        markdown = (out / "bart_score.md").read_text()
        assert markdown.splitlines()[0].endswith(f"[{UNIDENTIFIED}]")
        assert "ParaBank2" not in markdown.splitlines()[0]  # the title
        assert (
            f"- BART-scores from {UNIDENTIFIED}: the weights file loaded has sha256 "
            f"{WEIGHTS_SHA}, not the ParaBank2 digest recorded in "
            f"scorers.bart_score.parabank2_sha256 ({recorded or 'null: none recorded'}); these "
            "scores are not known to use upstream's ParaBank2 weights and are not comparable "
            "with the paper's BART-scores.\n"
        ) in markdown
        assert read_table_metadata(out / "bart_score.parquet")["scorer_variant"] == UNIDENTIFIED
