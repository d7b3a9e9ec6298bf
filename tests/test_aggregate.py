import json
import math

import pandas as pd
import pytest

from imhibench.aggregate import pivot, table_specs, to_markdown, write_tables
from imhibench.errors import ImhiBenchError
from imhibench.io import read_provenance, write_table


def summary(model: str, dataset: str, f1: float, bart: float) -> pd.DataFrame:
    rows = [
        ("weighted_f1", "mentalbert", f1),
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
        record = {"stage": "score", "model": model, "bart_score_variant": PARABANK}
        write_table(summary(model, dataset, f1, bart), path, record)
        paths.append(path)
    return paths


def test_tables_have_models_as_rows_and_datasets_as_columns(summaries, tmp_path):
    out = tmp_path / "tables"
    specs = table_specs("mentalbert", ["bart_score", "rouge"], ["main", "expert"])
    assert [s.name for s in specs] == [
        "weighted_f1", "bart_score", "expert_weighted_f1", "expert_bart_score",
    ]  # fmt: skip
    write_tables(
        summaries, out, specs, ["m1", "m2"],
        {"main": ["DR", "SAD"], "expert": ["DR-expert"]},
        notes=["m2 on SAD: skipped"], provenance={"stage": "aggregate"},
    )  # fmt: skip
    f1 = pd.read_parquet(out / "weighted_f1.parquet")
    assert f1.columns.tolist() == ["model", "DR", "SAD"]
    assert f1.loc[0, "DR"] == 80.0 and f1.loc[1, "DR"] == 70.25
    assert math.isnan(f1.loc[1, "SAD"])  # m2 has no SAD job
    markdown = (out / "weighted_f1.md").read_text()
    assert "| m2 | 70.25 | - |" in markdown and "- m2 on SAD: skipped" in markdown
    assert pd.read_parquet(out / "bart_score.parquet").loc[0, "SAD"] == -4.0
    assert pd.read_parquet(out / "expert_weighted_f1.parquet").loc[0, "DR-expert"] == 60.0
    assert read_provenance(out / "weighted_f1.parquet") == {"stage": "aggregate"}
    assert len(pd.read_parquet(out / "all_metrics.parquet")) == 12


def test_rule_labeler_table_picks_rule_rows(summaries):
    from imhibench.aggregate import load_summaries

    (spec,) = [s for s in table_specs("rule", [], ["main"])]
    table = pivot(load_summaries(summaries), spec, ["m1"], ["DR"])
    assert table.loc[0, "DR"] == 40.0


def test_published_rows_are_marked(summaries, tmp_path):
    published = tmp_path / "published.csv"
    published.write_text("model,DR,CLP,SAD\nMentaLLaMA-chat-7B,83.95,51.84,62.18\n")
    out = tmp_path / "tables"
    specs = table_specs("mentalbert", [], ["main"])
    write_tables(summaries, out, specs, ["m1"], {"main": ["DR", "SAD"]}, published=published)
    markdown = (out / "weighted_f1.md").read_text()
    assert "| MentaLLaMA-chat-7B (published) | 83.95 | 62.18 |" in markdown
    assert f"come from {published}" in markdown
    # the Parquet table holds this run only
    assert pd.read_parquet(out / "weighted_f1.parquet")["model"].tolist() == ["m1"]


def test_markdown_rounds_and_marks_missing():
    table = pd.DataFrame({"model": ["a"], "DR": [1.005], "SAD": [float("nan")]})
    text = to_markdown(table, "T")
    assert text.splitlines()[2:5] == ["| model | DR | SAD |", "|---|---:|---:|", "| a | 1.00 | - |"]


def test_nothing_to_aggregate(tmp_path):
    with pytest.raises(ImhiBenchError, match="nothing to aggregate"):
        write_tables([], tmp_path, [], [], {})


def test_bad_summary_file_is_named(tmp_path):
    bad = tmp_path / "bad.parquet"
    write_table(pd.DataFrame({"x": [1]}), bad)
    with pytest.raises(ImhiBenchError, match=r"bad.parquet: missing column"):
        write_tables([bad], tmp_path / "t", [], [], {})


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
