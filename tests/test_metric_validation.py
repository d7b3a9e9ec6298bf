"""Metric validation against upstream's human ratings: parsing, the correlations and the
annotator agreement recomputed independently (scipy, rouge-score, sacrebleu, krippendorff on the
raw CSV cells), the bootstrap, the tables, the CLI and the paper config's DAG."""

from __future__ import annotations

import ast
import csv
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from support import REPO, require_mirror

from imhibench.cli import main
from imhibench.common.errors import ImhiBenchError
from imhibench.common.tables import to_latex, to_markdown
from imhibench.score.metrics.correctness import bootstrap_indices
from imhibench.validate_metrics.ratings import ASPECTS, read_ratings
from imhibench.validate_metrics.run import validate_metrics
from imhibench.validate_metrics.scoring import MetricRun, metric_runs
from imhibench.validate_metrics.statistics import POOLED, resampled_statistics

FILES = ("chatgpt_data", "chatgpt_false_data", "gpt3_data")
RESAMPLES = 40


def rating_paths() -> dict[str, str]:
    folder = require_mirror() / "human_evaluation" / "DR_annotation"
    return {name: str(folder / f"{name}.csv") for name in FILES}


@pytest.fixture(scope="module")
def overlap_validation():
    """ROUGE and BLEU (no model) on the three real files."""
    return validate_metrics(
        rating_paths(), {"rouge": {}, "bleu": {}}, seed=7, n_resamples=RESAMPLES
    )


def raw_rows() -> list[dict]:
    """Every data row of the three files, read with the csv module: the cells as written."""
    rows = []
    for name, path in rating_paths().items():
        with open(path, encoding="utf-8-sig", newline="") as fh:
            for row in csv.DictReader(fh):
                explanation = row.get("gpt-3.5-turbo", row.get("curie-instruct-beta"))
                ratings = {a: ast.literal_eval(row[a]) for a in ASPECTS}
                rows.append(
                    {"file": name, "post": row["text"], "explanation": explanation, **ratings}
                )
    return rows


def independent_scores(rows: list[dict]) -> pd.DataFrame:
    """ROUGE-1/2/L F (rouge-score), sentence BLEU (sacrebleu, 13a, unsmoothed) and the mean
    rating per aspect of every row, the post as the reference."""
    import sacrebleu
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    records = []
    for row in rows:
        rouge = scorer.score(row["post"], row["explanation"])
        bleu = sacrebleu.sentence_bleu(
            row["explanation"], [row["post"]], smooth_method="none", tokenize="13a"
        )
        records.append(
            {
                "file": row["file"],
                **{key: rouge[key].fmeasure for key in ("rouge1", "rouge2", "rougeL")},
                "bleu": bleu.score / 100,
                **{f"mean_{a}": float(np.mean(row[a])) for a in ASPECTS},
            }
        )
    return pd.DataFrame(records)


def test_the_three_files_give_285_explanations_and_3420_ratings(overlap_validation):
    ratings = overlap_validation.ratings
    assert len(overlap_validation.scored) == 285
    assert len(ratings) == 285 * 4 * 3
    assert ratings.groupby("file")["row"].nunique().to_dict() == {
        "chatgpt_data": 121, "chatgpt_false_data": 43, "gpt3_data": 121,
    }  # fmt: skip
    systems = ratings.drop_duplicates("file").set_index("file")["system"].to_dict()
    assert systems == {
        "chatgpt_data": "ChatGPT", "chatgpt_false_data": "ChatGPT", "gpt3_data": "InstructGPT-3",
    }  # fmt: skip
    assert set(ratings["rating"]) <= {0, 1, 2, 3}


def test_rouge_and_bleu_correlations_equal_scipy_on_the_same_rows(overlap_validation):
    expected_scores = independent_scores(raw_rows())
    scored = overlap_validation.scored
    for metric in ("rouge1", "rouge2", "rougeL", "bleu"):
        np.testing.assert_allclose(scored[metric], expected_scores[metric], rtol=1e-9, atol=1e-12)
    found = overlap_validation.correlations.set_index(["scope", "metric", "aspect", "statistic"])
    scopes = {
        POOLED: expected_scores,
        **{f: expected_scores[expected_scores.file == f] for f in FILES},
    }
    checked = 0
    for scope, rows in scopes.items():
        for metric in ("rouge1", "rouge2", "rougeL", "bleu"):
            for aspect in ASPECTS:
                x, y = rows[metric], rows[f"mean_{aspect}"]
                for statistic, result in (
                    ("pearson", stats.pearsonr(x, y)),
                    ("spearman", stats.spearmanr(x, y)),
                    ("kendall", stats.kendalltau(x, y)),
                ):
                    cell = found.loc[(scope, metric, aspect, statistic)]
                    assert cell["rows"] == len(rows)
                    if np.isnan(result.statistic):
                        assert np.isnan(cell["value"])
                        continue
                    assert cell["value"] == pytest.approx(result.statistic, abs=1e-12)
                    assert cell["p_value"] == pytest.approx(result.pvalue, rel=1e-9, abs=1e-300)
                    assert cell["ci_low"] <= cell["ci_high"]
                    checked += 1
    assert checked > 150


def test_annotator_agreement_equals_the_krippendorff_package(overlap_validation):
    import krippendorff

    rows = raw_rows()
    agreement = overlap_validation.agreement.set_index(["scope", "aspect"])["alpha"]
    for scope in (POOLED, *FILES):
        chosen = [r for r in rows if scope in (POOLED, r["file"])]
        for aspect in ASPECTS:
            data = np.array([r[aspect] for r in chosen], dtype=float).T  # annotators x units
            expected = krippendorff.alpha(
                reliability_data=data, level_of_measurement="ordinal", value_domain=[0, 1, 2, 3]
            )
            assert agreement[(scope, aspect)] == pytest.approx(expected, abs=1e-12)


def test_bootstrap_statistics_equal_scipy_on_every_resample():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 6, 60).astype(float)  # ties, as in the ratings
    y = x + rng.integers(0, 4, 60)
    rows = bootstrap_indices(60, 25, seed=11)
    found = resampled_statistics(x, y, rows)
    for i, sample in enumerate(rows):
        xs, ys = x[sample], y[sample]
        assert found["pearson"][i] == pytest.approx(stats.pearsonr(xs, ys).statistic, abs=1e-12)
        assert found["spearman"][i] == pytest.approx(stats.spearmanr(xs, ys).statistic, abs=1e-12)
        assert found["kendall"][i] == pytest.approx(stats.kendalltau(xs, ys).statistic, abs=1e-12)


def test_intervals_are_seeded(overlap_validation):
    again = validate_metrics(rating_paths(), {"rouge": {}}, seed=7, n_resamples=RESAMPLES)
    other = validate_metrics(rating_paths(), {"rouge": {}}, seed=8, n_resamples=RESAMPLES)
    keys = ["scope", "metric", "aspect", "statistic"]
    first = overlap_validation.correlations.merge(again.correlations[[*keys, "ci_low"]], on=keys)
    assert (first["ci_low_x"] == first["ci_low_y"]).all()
    moved = again.correlations["ci_low"].to_numpy() != other.correlations["ci_low"].to_numpy()
    assert moved.any()


def test_best_metric_per_aspect_is_bold_and_ranked_first(overlap_validation):
    spearman = overlap_validation.tables[0]
    assert spearman.name == "metric_validation_spearman"
    pooled = overlap_validation.correlations.query("scope == @POOLED and statistic == 'spearman'")
    best = pooled.loc[pooled.groupby("aspect")["value"].idxmax()].set_index("aspect")["metric"]
    assert (pooled.set_index(["aspect", "metric"]).loc[list(best.items()), "rank"] == 1).all()
    for column, aspect in enumerate(ASPECTS):
        bold_rows = [
            r.label for r in spearman.rows if column in r.bold and r.label.startswith(POOLED)
        ]
        assert bold_rows == [f"pooled (285 rows): {best[aspect]}"]
    markdown, latex = to_markdown(spearman), to_latex(spearman)
    assert markdown.count("| **") >= 1 and "\\textbf{" in latex
    assert "$\\rho$" in latex and "$\\alpha$" in latex and "ρ" not in latex  # pdflatex-safe
    assert "reference = the post" in spearman.title
    assert any("Krippendorff" in row.label for row in spearman.rows)
    assert any("not found in a citable source" in note for note in spearman.notes)


def test_registered_metric_appears_without_touching_the_stage():
    from imhibench.score.metrics import explanation
    from imhibench.score.metrics.explanation import MetricOutput, register_explanation_metric

    @register_explanation_metric("test_length_ratio")
    def length_ratio(predictions, references, options, device):
        column = [len(p) / max(len(r), 1) for p, r in zip(predictions, references, strict=True)]
        constant = [1.0] * len(column)  # a correlation with it is undefined
        return MetricOutput({"length_ratio": column, "constant": constant}, {})

    try:
        paths = {"gpt3_data": rating_paths()["gpt3_data"]}
        result = validate_metrics(paths, {"test_length_ratio": {}}, n_resamples=10)
    finally:
        del explanation._REGISTRY["test_length_ratio"]
    assert result.metrics == ["length_ratio", "constant"]
    assert set(result.correlations["scope"]) == {"gpt3_data"}  # one file: no pooled scope
    rows = {row.label.split(": ")[-1]: row for row in result.tables[0].rows}
    assert rows["length_ratio"].bold == (0, 1, 2, 3)
    assert rows["constant"].cells == ("-",) * 4 and rows["constant"].bold == ()


def test_bart_score_is_compared_with_and_without_the_parabank_weights():
    names = {True: "bart-large-cnn + ParaBank2", False: "bart-large-cnn, no ParaBank2 weights"}
    options = {"checkpoint": "ckpt", "weights_file": "w.pth", "batch_size": 4}
    runs = metric_runs({"bart_score": options, "rouge": {}}, names)
    assert runs == [
        MetricRun("bart_score", options, names[True]),
        MetricRun("bart_score", {**options, "weights_file": None}, names[False]),
        MetricRun("rouge", {}),
    ]
    plain = metric_runs({"bart_score": {**options, "weights_file": None}}, names)
    assert plain == [MetricRun("bart_score", {**options, "weights_file": None}, names[False])]


def test_bart_score_variants_are_named_as_the_bart_score_table_names_them(tmp_path):
    from imhibench.common.provenance import sha256_file
    from imhibench.validate_metrics.scoring import bart_variant_names

    checkpoint = tmp_path / "bart-large-cnn"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    weights = tmp_path / "bart_score.pth"
    weights.write_bytes(b"weights")
    options = {"checkpoint": str(checkpoint), "weights_file": str(weights)}
    names = bart_variant_names({"bart_score": options}, parabank2_sha256=sha256_file(weights))
    assert names == {
        True: "bart-large-cnn + ParaBank2 weights", False: "bart-large-cnn, no ParaBank2 weights",
    }  # fmt: skip
    unknown = bart_variant_names({"bart_score": options}, parabank2_sha256=None)
    assert unknown[True].startswith("bart-large-cnn + unidentified weights file")


# ---- bad input -----------------------------------------------------------------------------

HEADER = "text,label,gpt-3.5-turbo,fluency,completeness,reliability,overall\n"


def write(tmp_path, body: str, header: str = HEADER, name: str = "mine.csv"):
    path = tmp_path / name
    path.write_text(header + body, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("cell", "problem"),
    [
        ('"[3, 3]"', "holds 2 rating(s); expected one per annotator (3)"),
        ('"[3, 3, 3, 1]"', "holds 4 rating(s)"),
        ('"[3, 4, 2]"', "rating 4 in '[3, 4, 2]' is outside 0-3"),
        ('"[3, -1, 2]"', "rating -1"),
        ('"[3, 2.5, 2]"', "2.5 in '[3, 2.5, 2]' is not an integer rating"),
        ("three", "'three' is not a list of ratings"),
        ('""', "'' is not a list of ratings"),
    ],
)
def test_a_bad_rating_cell_names_file_row_and_column(tmp_path, cell, problem):
    good = '"[3, 3, 3]"'
    body = f"post one,0,expl one,{good},{good},{good},{good}\n"
    body += f"post two,1,expl two,{good},{good},{cell},{good}\n"
    path = write(tmp_path, body)
    with pytest.raises(ImhiBenchError) as error:
        read_ratings(path)
    message = str(error.value)
    assert f"{path}: data row 2, column 'reliability'" in message
    assert problem in message


def test_missing_columns_a_bad_label_and_an_empty_file_are_named(tmp_path):
    good = '"[3, 3, 3]"'
    no_system = write(tmp_path, "", header="text,label,fluency,completeness,reliability,overall\n")
    with pytest.raises(ImhiBenchError, match="one explanation column"):
        read_ratings(no_system)
    label = write(tmp_path, f"post,yes,expl,{good},{good},{good},{good}\n", name="label.csv")
    with pytest.raises(ImhiBenchError, match=r"data row 1, column 'label': 'yes' is not a DR"):
        read_ratings(label)
    empty = write(tmp_path, "", name="empty.csv")
    with pytest.raises(ImhiBenchError, match="header but no rows"):
        read_ratings(empty)


def test_a_byte_order_mark_before_the_header_is_read(tmp_path):
    good = '"[3, 2, 1]"'
    path = tmp_path / "bom.csv"
    path.write_bytes(("\ufeff" + HEADER + f"p,1,e,{good},{good},{good},{good}\n").encode())
    table = read_ratings(path)
    assert table["post"].unique().tolist() == ["p"]
    assert table["rating"].tolist()[:3] == [3, 2, 1]


# ---- command line --------------------------------------------------------------------------


def test_cli_prints_the_tables_of_a_users_own_ratings_file(tmp_path, capsys):
    source = pd.read_csv(rating_paths()["gpt3_data"], dtype=str, keep_default_na=False)
    mine = tmp_path / "my_ratings.csv"
    source.head(30).to_csv(mine, index=False)
    code = main(
        [
            "validate-metrics",
            str(mine),
            "--bootstrap-resamples",
            "20",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "## Explanation metrics vs human ratings (Spearman ρ; reference = the post)" in out
    assert "my_ratings (30 rows, InstructGPT-3): rouge1" in out
    assert "Kendall τb" in out and "Pearson r" in out
    assert (tmp_path / "out" / "tables" / "metric_validation_kendall.tex").is_file()
    assert (tmp_path / "out" / "plots" / "metric_validation.png").is_file()


def test_cli_reports_a_bad_file_with_exit_status_2(tmp_path, capsys):
    good = '"[3, 3, 3]"'
    path = write(tmp_path, f"post,0,expl,{good},[3; 3; 3],{good},{good}\n")
    assert main(["validate-metrics", str(path)]) == 2
    assert "data row 1, column 'completeness'" in capsys.readouterr().err


# ---- the workflow --------------------------------------------------------------------------


def test_the_paper_config_dry_run_includes_the_stage_with_its_resources(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
         "--directory", str(tmp_path), "--dry-run", "--cores", "4"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    block = output[output.index("rule validate_metrics:") :].split("\n\n")[0]
    assert "gpu=1" in block and "mem_mb=24000" in block and "cpus_per_task=4" in block
    inputs = next(line for line in block.splitlines() if line.strip().startswith("input:"))
    assert "resources/imhi/human_ratings/chatgpt_false_data.csv" in inputs
    assert "resources/checkpoints/facebook--bart-large-cnn@main" in inputs
    assert "results/" not in inputs  # no model's answers: a model change reruns none of it
    assert output.count("rule fetch_human_ratings:") == 3
    assert json.dumps("metric_validation_spearman")[1:-1] in output


# ---- model metrics (jobs of their own) -----------------------------------------------------


def test_model_metrics_jobs_over_the_rated_explanations_are_merged(
    tmp_path, demo_models, one_torch_thread
):
    """The rated explanations go through a model metric's own job (`run_model_metric`, as in
    the workflow): its columns are correlated and tabulated beside the scorers', unscored rows
    (NaN) left out, and the judge's identity and rubric are in the provenance."""
    from imhibench.common.io import read_provenance, read_table
    from imhibench.score.stage import run_model_metric
    from imhibench.validate_metrics.ratings import write_rated_explanations
    from imhibench.validate_metrics.run import run_validate_metrics

    source = pd.read_csv(rating_paths()["gpt3_data"], dtype=str, keep_default_na=False)
    mine = tmp_path / "few.csv"
    source.head(12).to_csv(mine, index=False)
    paths = {"few": str(mine)}
    responses, posts = tmp_path / "explanations.parquet", tmp_path / "posts.parquet"
    explained = write_rated_explanations(paths, responses, posts)
    assert read_table(posts)["query"].tolist() == explained["post"].tolist()  # judge's context
    options = {
        "gpt_score": {"backend": "hf", "checkpoint": demo_models["causal"]},
        "llm_judge": {"backend": "hf", "checkpoint": demo_models["causal"],
                      "max_new_tokens": 4, "parse_attempts": 1},
    }  # fmt: skip
    outputs = {}
    for metric, settings in options.items():
        outputs[metric] = str(tmp_path / f"{metric}.parquet")
        run_model_metric(
            metric, settings, str(responses), str(posts), outputs[metric], "_human_ratings",
            "rated_explanations", device="cpu",
        )  # fmt: skip
    result = run_validate_metrics(
        paths, {"rouge": {}}, tmp_path / "tables", tmp_path / "plots" / "mv", n_resamples=10,
        model_metric_paths=outputs,
    )  # fmt: skip
    assert result.metrics[:3] == ["rouge1", "rouge2", "rougeL"]
    assert "gpt_score" in result.metrics and "llm_judge_overall" in result.metrics
    scores = read_table(tmp_path / "tables" / "metric_validation_scores.parquet")
    gpt = read_table(outputs["gpt_score"])
    assert scores["gpt_score"].tolist() == pytest.approx(gpt["gpt_score"].tolist())
    x, y = scores["gpt_score"], scores["mean_overall"]
    expected = stats.spearmanr(x, y).statistic
    found = result.correlations.set_index(["metric", "aspect", "statistic"])
    assert found.loc[("gpt_score", "overall", "spearman"), "value"] == pytest.approx(expected)
    # the random judge rarely answers in the format: its statistics use its scored rows only
    judged = scores["llm_judge_overall"].notna().sum()
    assert found.loc[("llm_judge_overall", "overall", "spearman"), "scored_rows"] == judged
    markdown = (tmp_path / "tables" / "metric_validation_spearman.md").read_text()
    assert "few (12 rows, InstructGPT-3): gpt_score |" in markdown
    assert "few (12 rows, InstructGPT-3): llm_judge_overall |" in markdown
    provenance = read_provenance(tmp_path / "tables" / "metric_validation_spearman.parquet")
    judge = provenance["model_metrics"]["llm_judge"]
    assert judge["file"] == outputs["llm_judge"] and "rubric" in judge["metric_provenance"]
    assert judge["settings"]["checkpoint"] == demo_models["causal"]


def test_the_llm_metrics_preset_plans_a_validation_job_per_model_metric(tmp_path, monkeypatch):
    """`snakemake -n --configfile workflow_config/llm_metrics.yaml`: GPTScore (hf) and the judge
    (api, run_on local) each score the rated explanations in a job of the model-metric rules,
    with the metric's resources; validate_metrics reads those files and no model's answers."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-used")  # the judge's key (run_on: local)
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
         "--directory", str(tmp_path), "--dry-run", "--cores", "4", "--configfile",
         str(REPO / "workflow_config" / "llm_metrics.yaml")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    output = result.stdout + result.stderr

    def block(rule: str, output_path: str) -> str:
        start = output.index(f"    output: {output_path}")
        start = output.rindex(f"rule {rule}:", 0, start)
        return output[start : output.index("\n[", start)]

    assert result.returncode == 0, output[-3000:]
    rated = "results/metric_validation/rated_explanations.parquet"
    gpt = block("score_metric", "results/model_metrics/gpt_score/_human_ratings/")
    assert rated in gpt and "gpu=1" in gpt and "mem_mb=48000" in gpt
    judge = block("score_metric_local", "results/model_metrics/llm_judge/_human_ratings/")
    assert rated in judge and "rated_posts.parquet" in judge
    validation = output[output.index("rule validate_metrics:") :]
    inputs = next(line for line in validation.splitlines() if line.strip().startswith("input:"))
    for metric in ("gpt_score", "llm_judge"):
        assert f"results/model_metrics/{metric}/_human_ratings/rated_explanations.parquet" in inputs
    assert "results/generate" not in inputs and "results/score" not in inputs
    assert output.count("rule rated_explanations:") == 1


def test_unscored_rows_are_left_out_of_that_metric_only():
    from imhibench.validate_metrics.statistics import correlations
    from imhibench.validate_metrics.tables import validation_table

    rng = np.random.default_rng(3)
    scored = pd.DataFrame({"file": "f", "full": rng.normal(size=20), "some": rng.normal(size=20)})
    for aspect in ASPECTS:
        scored[f"mean_{aspect}"] = rng.integers(0, 4, size=20).astype(float)
    scored.loc[[1, 4, 9], "some"] = np.nan
    scored["none"] = np.nan
    found = correlations(scored, ["full", "some", "none"], n_resamples=20)
    by = found.set_index(["metric", "aspect", "statistic"])
    kept = scored["some"].notna()
    expected = stats.spearmanr(scored["some"][kept], scored["mean_overall"][kept]).statistic
    assert by.loc[("some", "overall", "spearman"), "value"] == pytest.approx(expected)
    assert by.loc[("some", "overall", "spearman"), "scored_rows"] == 17
    assert by.loc[("full", "overall", "spearman"), "scored_rows"] == 20
    assert np.isnan(by.loc[("none", "overall", "spearman"), "value"])
    assert by.loc[("none", "overall", "spearman"), "undefined_resamples"] == 20
    agreement = pd.DataFrame({"scope": "f", "aspect": list(ASPECTS), "alpha": 0.5})
    table = validation_table("spearman", found, agreement, ["full", "some", "none"], {}, 20, 0)
    cells = {row.label.split(": ")[-1]: row.cells for row in table.rows}
    assert cells["some"][3].endswith("(n=17)") and "(n=" not in cells["full"][3]
    assert cells["none"] == ("-",) * 4
    scored.loc[0, "full"] = np.inf
    with pytest.raises(ImhiBenchError, match="full gave an infinite score"):
        correlations(scored, ["full"], n_resamples=20)
