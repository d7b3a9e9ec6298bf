"""GPTScore and the LLM judge in the workflow: the preset's configuration and plan, the job of
one model metric, the score job merging its columns, and the tables naming the judge."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from test_config import SCHEMA, load, merged

from imhibench.aggregate.specs import table_specs
from imhibench.aggregate.write import write_tables
from imhibench.common.errors import ImhiBenchError
from imhibench.common.io import read_provenance, read_table, write_table
from imhibench.config.plan import Plan
from imhibench.config.validation import validate_config
from imhibench.score.stage import run_model_metric, run_score

YES = "Yes, the poster suffers from depression. Reasoning: The poster describes a low mood."
NO = "No, the poster does not suffer from depression. Reasoning: The post asks for advice."


@pytest.fixture
def preset(monkeypatch) -> dict:
    # the judge asks its endpoint from this host (run_on: local): validation wants its key set
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-used")
    return merged(load("config.yaml"), load("llm_metrics.yaml"))


def test_paper_config_has_them_off_and_the_preset_on(preset):
    paper = load("config.yaml")
    assert not {"gpt_score", "llm_judge"} & set(paper["scorers"])
    validate_config(preset, SCHEMA)
    plan = Plan(preset)
    assert plan.model_metrics() == ["gpt_score", "llm_judge"]
    assert plan.model_metric_rule("gpt_score") == "score_metric"  # hf: a GPU job
    assert plan.model_metric_rule("llm_judge") == "score_metric_local"  # api, run_on local
    assert not {"gpt_score", "llm_judge"} & set(plan.scorer_settings())  # not in the score job
    assert plan.model_metric_settings("gpt_score")["checkpoint"].endswith(
        "meta-llama--Llama-2-7b-hf@main"
    )
    assert "resources" not in plan.model_metric_settings("llm_judge")
    assert "meta-llama--Llama-2-7b-hf@main" in plan.hub_checkpoints()
    paths = plan.model_metric_paths("MentalBART", "DR")
    assert paths == {
        "gpt_score": "results/model_metrics/gpt_score/MentalBART/DR.parquet",
        "llm_judge": "results/model_metrics/llm_judge/MentalBART/DR.parquet",
    }
    specs = table_specs("rule", plan.scorers_of_group("main"), ["main"])
    assert [s.name for s in specs][-2:] == ["gpt_score", "llm_judge"]


def test_models_limit_which_answers_a_metric_scores(preset):
    """`models` (like `datasets`) limits a metric's jobs; a group none of whose jobs it scores
    gets no table of it."""
    config = merged(preset, {"scorers": {"gpt_score": {"models": ["MentalBART"]},
                                         "llm_judge": {"models": ["MentaLLaMA-chat-7B"],
                                                       "datasets": ["DR-expert"]}}})  # fmt: skip
    validate_config(config, SCHEMA)
    plan = Plan(config)
    assert list(plan.model_metric_paths("MentalBART", "DR")) == ["gpt_score"]
    assert plan.model_metric_paths("MentaLLaMA-chat-7B", "DR") == {}
    assert list(plan.model_metric_paths("MentaLLaMA-chat-7B", "DR-expert")) == ["llm_judge"]
    assert "gpt_score" in plan.scorers_of_group("main")
    assert "llm_judge" not in plan.scorers_of_group("main")
    assert "llm_judge" in plan.scorers_of_group("expert")
    # MentalBART answers no expert set (completion split): no GPTScore table there
    assert "gpt_score" not in plan.scorers_of_group("expert")
    # which models it scores is no option of the metric (no rerun of the jobs it keeps)
    assert "models" not in plan.model_metric_settings("gpt_score")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"llm_judge": {"run_on": None}}, "run_on"),
        ({"llm_judge": {"run_on": "cluster"}}, "slurm_partition"),
        ({"gpt_score": {"api": {"base_url": "http://x/v1", "model": "m"}}}, "api"),
        ({"llm_judge": {"path": "somewhere"}}, "path"),
        ({"gpt_score": {"datasets": ["nope"]}}, "nope"),
        ({"gpt_score": {"models": ["nobody"]}}, "scorers.gpt_score.models: 'nobody'"),
        ({"gpt_score": {"backend": "gpu"}}, "backend"),
    ],
)
def test_bad_metric_settings_name_the_key(preset, change, message):
    config = merged(preset, {"scorers": change})
    for metric in change:
        config["scorers"][metric] = {
            k: v for k, v in config["scorers"][metric].items() if v is not None
        }
    with pytest.raises(ImhiBenchError, match=message):
        validate_config(config, SCHEMA)


def _inputs(tmp_path):
    ids = ["DR-0", "DR-1", "DR-2"]
    test = pd.DataFrame(
        {
            "row_id": ids,
            "query": [f'Consider this post: "post {n}" Question: Depressed?' for n in range(3)],
            "gold_answer": [YES, NO, YES],
            "gold_label": ["yes", "no", "yes"],
            "gold_explanation": "x",
        }
    )  # fmt: skip
    responses = pd.DataFrame(
        {"row_id": ids, "response": [YES, "No. Reasoning: The poster is asking.", ""]}
    )
    labels = pd.DataFrame(
        {"row_id": ids, "gold_label": ["yes", "no", "yes"], "label_rule": ["yes", "no", "no"],
         "rule_ood": [False, False, True], "empty_response": [False, False, True]}
    )  # fmt: skip
    write_table(test, tmp_path / "test.parquet", {"split": "instruction"})
    write_table(responses, tmp_path / "responses.parquet", {"stage": "generate"})
    write_table(labels, tmp_path / "labels.parquet", {"stage": "label"})


def _metric_job(tmp_path, metric: str, options: dict, out) -> pd.DataFrame:
    return run_model_metric(
        metric, options, str(tmp_path / "responses.parquet"), str(tmp_path / "test.parquet"),
        str(out), "m", "DR", device="cpu",
    )  # fmt: skip


def _score_job(tmp_path, name: str, scorers: dict, paths: dict) -> pd.DataFrame:
    """The score job of (m, DR) writing <name>rows.parquet and <name>summary.parquet."""
    return run_score(
        str(tmp_path / "responses.parquet"), str(tmp_path / "labels.parquet"),
        str(tmp_path / "test.parquet"), str(tmp_path / f"{name}rows.parquet"),
        str(tmp_path / f"{name}summary.parquet"), "m", "DR", "DR", ["rule"], scorers,
        device="cpu", model_metric_paths=paths,
    )  # fmt: skip


def _table_markdown(tmp_path, scorer: str) -> str:
    specs = table_specs("rule", [scorer], ["main"])
    written = write_tables(
        [tmp_path / "summary.parquet"], tmp_path / "tables", specs, ["m"], {"main": ["DR"]}
    )
    return next(p for p in written if p.name == f"{scorer}.md").read_text()


def test_metric_job_then_score_job_merges_it(tmp_path, demo_models, one_torch_thread):
    _inputs(tmp_path)
    out = tmp_path / "model_metrics" / "gpt_score.parquet"
    options = {"backend": "hf", "checkpoint": demo_models["causal"]}
    table = _metric_job(tmp_path, "gpt_score", options, out)
    assert math.isnan(table["gpt_score"][2])  # empty response
    record = read_provenance(out)
    assert record["metric_summary"]["gpt_score_unscored"] == 1.0
    assert record["checkpoint"]["local_path"]
    summary = _score_job(tmp_path, "", {"rouge": {}}, {"gpt_score": str(out)})
    values = dict(zip(summary["metric"], summary["value"], strict=True))
    assert values["gpt_score"] == pytest.approx(table["gpt_score"][:2].mean())
    rows = read_table(tmp_path / "rows.parquet")
    assert rows["gpt_score"].tolist()[:2] == pytest.approx(table["gpt_score"][:2].tolist())
    assert "rouge1" in rows.columns
    provenance = read_provenance(tmp_path / "summary.parquet")
    assert provenance["model_metrics"]["gpt_score"]["metric_provenance"]["arithmetic"] == "clean"

    # a metric file of other rows (stale) is refused, not merged
    stale = table.iloc[:2]
    write_table(stale, tmp_path / "stale.parquet", read_provenance(out))
    with pytest.raises(ImhiBenchError, match="not the responses' rows"):
        _score_job(tmp_path, "2", {}, {"gpt_score": str(tmp_path / "stale.parquet")})

    # the tables: a GPTScore table whose caption names the scorer
    markdown = _table_markdown(tmp_path, "gpt_score")
    assert "GPTScore" in markdown and "causal (hf, clean arithmetic)" in markdown


def test_a_metric_table_has_rows_for_the_models_it_scored_only(tmp_path):
    """Both models answered DR; GPTScore scored one: its table has that row only, the
    weighted-F1 table both."""
    summaries = pd.DataFrame(
        {"model": ["a", "b", "a", "b", "a"], "dataset": "DR", "task": "DR", "split": "x",
         "metric": ["weighted_f1", "weighted_f1", "n", "n", "gpt_score"],
         "labeler": ["rule", "rule", None, None, None], "value": [50.0, 60.0, 3, 3, -2.5]}
    )  # fmt: skip
    write_table(summaries, tmp_path / "summary.parquet", {"stage": "score"})
    specs = table_specs("rule", ["gpt_score"], ["main"])
    write_tables([tmp_path / "summary.parquet"], tmp_path / "tables", specs, ["a", "b"],
                 {"main": ["DR"]})  # fmt: skip
    f1 = pd.read_parquet(tmp_path / "tables" / "weighted_f1.parquet")
    gpt = pd.read_parquet(tmp_path / "tables" / "gpt_score.parquet")
    assert f1["model"].tolist() == ["a", "b"] and gpt["model"].tolist() == ["a"]
    assert gpt["DR"].tolist() == [-2.5]


def test_judge_job_names_judge_and_rubric_in_table(tmp_path, demo_models, one_torch_thread):
    _inputs(tmp_path)
    out = tmp_path / "judge.parquet"
    options = {"backend": "hf", "checkpoint": demo_models["causal"], "max_new_tokens": 8,
               "parse_attempts": 1}  # fmt: skip
    _metric_job(tmp_path, "llm_judge", options, out)
    _score_job(tmp_path, "", {}, {"llm_judge": str(out)})
    markdown = _table_markdown(tmp_path, "llm_judge")
    assert "LLM judge" in markdown and "(hf), rubric" in markdown
    assert "Judge rubric" in markdown and "never parsed" in markdown


def test_evaluate_cli_with_both_metrics(tmp_path, demo_models, one_torch_thread, capsys):
    import json

    import yaml

    from imhibench.cli import main

    rows = pd.DataFrame(
        {
            "query": ['Consider this post: "sad" Question: Does the poster suffer?'] * 2,
            "goldens": [YES, NO],
            "generated_text": [YES, "No. Reasoning: The poster is asking."],
        }
    )
    rows.to_csv(tmp_path / "DR.csv", index=False)
    config = {
        "gpt_score": {"backend": "hf", "checkpoint": demo_models["causal"]},
        "llm_judge": {"backend": "hf", "checkpoint": demo_models["causal"],
                      "max_new_tokens": 8, "parse_attempts": 1},
    }  # fmt: skip
    (tmp_path / "metrics.yaml").write_text(yaml.safe_dump(config))
    code = main(
        ["evaluate", "DR", str(tmp_path / "DR.csv"), "--metrics-config",
         str(tmp_path / "metrics.yaml"), "--device", "cpu", "--json"]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    direct = run_gpt_score_hf(demo_models["causal"])
    assert result["gpt_score"] == pytest.approx(direct, abs=1e-5)
    assert result["llm_judge_unparsed"] == 2
    assert result["llm_judge_overall"] is None  # nothing parsed: no mean, not 0
    assert "rubric" in result["metric_provenance"]["llm_judge"]
    (tmp_path / "bad.yaml").write_text("bleu: {}\n")
    code = main(["evaluate", "DR", str(tmp_path / "DR.csv"), "--metrics-config",
                 str(tmp_path / "bad.yaml")])  # fmt: skip
    assert code == 2 and "unknown metric" in capsys.readouterr().err


def run_gpt_score_hf(checkpoint: str) -> float:
    from imhibench.score.metrics.gptscore import gpt_score_hf

    scores = gpt_score_hf([YES, NO], [YES, "No. Reasoning: The poster is asking."], checkpoint)
    return sum(scores) / 2
