"""`snakemake --report` carries the tables, and the tables' sidecar says what made every cell."""

from __future__ import annotations

import base64
import json
import re

import pandas as pd
import pytest
from demo_commands import COMMIT, mirror_config, run, snakemake_command

from imhibench.aggregate.notes import cell_provenance
from imhibench.common.io import read_provenance
from imhibench.common.tables import DisplayRow, Table, to_html

DATA_URI = re.compile(r'"data:([\w/+.-]+);charset=[\w-]+;filename=([^;"]+);base64,([\w+/=]+)"')


@pytest.fixture(scope="module")
def demo(finished_demo):
    return finished_demo  # conftest.py: the session's demo run, read-only here (reports)


def test_html_table_escapes_names_title_and_notes():
    rows = [DisplayRow("m1", ("12.35",)), DisplayRow("m2 <b>", ("-",), "published-only")]
    table = Table("t", "F1 & co", ["DR"], rows, pd.DataFrame(), ["note <i>"])
    page = to_html(table)
    assert "<td>12.35</td>" in page and "<td>-</td>" in page
    assert "m2 &lt;b&gt;" in page and "F1 &amp; co" in page and "note &lt;i&gt;" in page
    assert '<tr class="published-only">' in page


def test_every_table_has_a_report_caption():
    """`snakemake --report` stops at a table without its caption file (rules/common.smk
    `get_report_outputs`: report/<table>.rst, the expert_ twin sharing it)."""
    from support import REPO

    from imhibench.aggregate.specs import MODEL_METRIC_TABLES, paired_table_names, table_specs

    scorers = ["bart_score", *MODEL_METRIC_TABLES]
    specs = table_specs("mentalbert", scorers, ["main", "expert"])
    names = {spec.name for spec in specs} | set(paired_table_names(["main", "expert"]))
    assert {"gpt_score", "expert_llm_judge", "weighted_f1_paired"} <= names
    missing = [
        n for n in names if not (REPO / "report" / f"{n.removeprefix('expert_')}.rst").is_file()
    ]
    assert not missing


@pytest.mark.slow
def test_report_html_contains_every_table_plot_and_answer_page(demo, tmp_path):
    workdir, config = demo
    report = tmp_path / "report.html"
    result = run(snakemake_command(workdir, "--report", str(report), configs=(config,)))
    assert result.returncode == 0, result.stderr[-3000:]
    embedded = [
        (mime, name, base64.b64decode(data))
        for mime, name, data in DATA_URI.findall(report.read_text())
    ]
    pages = {name: data.decode() for mime, name, data in embedded if mime == "text/html"}
    tables = {"weighted_f1.html", "bart_score.html", "weighted_f1_paired.html"}
    assert tables <= set(pages)
    for name in tables - {"weighted_f1_paired.html"}:
        table = pd.read_parquet(workdir / "results" / "tables" / name.replace(".html", ".parquet"))
        for row in table[table["status"] == "reproduced"].itertuples(index=False):
            row = row._asdict()
            shown = row["model"] + (" (random weights)" if row.get("random_weights") else "")
            for dataset in ("DR", "SAD"):
                if pd.isna(row[dataset]):  # a model not answering the test set: "-"
                    continue
                assert re.search(f"<td>{re.escape(shown)}</td>.*<td>{row[dataset]:.2f}[ <]",
                                 pages[name]), (name, row)  # fmt: skip
    # one answer page per job, worst rows first
    samples = {p.name for p in (workdir / "results" / "samples").glob("*/*.html")}
    answer_pages = [p for n, p in pages.items() if n in samples]
    jobs = len(list((workdir / "results" / "generate").glob("*/*.parquet")))
    assert len([n for _, n, _ in embedded if n in samples]) == jobs
    assert answer_pages and all("worst first" in p for p in answer_pages)
    # every figure: a chart per table, the labeler chart, a confusion matrix per job and the
    # metric validation's heat map
    pngs = [data for mime, _, data in embedded if mime == "image/png"]
    drawn = list((workdir / "results" / "plots").rglob("*.png"))
    assert len(pngs) == len(drawn) and all(p.startswith(b"\x89PNG") for p in pngs)
    assert len(list((workdir / "results" / "plots" / "confusion").glob("*/*.png"))) == jobs
    validation = {f"metric_validation_{s}.html" for s in ("spearman", "pearson", "kendall")}
    assert validation <= set(pages)
    assert "reference = the post" in pages["metric_validation_spearman.html"]
    assert "provenance.json" in report.read_text()


@pytest.mark.slow
def test_sidecar_names_every_input_of_a_cell(demo):
    workdir, _ = demo
    tables = workdir / "results" / "tables"
    sidecar = json.loads((tables / "provenance.json").read_text())
    cell = sidecar["cells"]["demo-llama"]["SAD"]
    # the model checkpoint (a local demo model: its path; a hub model: hub_id + resolved revision)
    assert cell["model"]["checkpoints"]["model"]["local_path"].endswith("demo_models/causal")
    assert "resolved_revision" in cell["model"]["checkpoints"]["model"]
    # the test file, by checksum and source
    fetched = read_provenance(workdir / "resources" / "imhi" / "instruction" / "SAD.parquet")
    assert cell["test_set"]["sha256"] == fetched["sha256"] and len(fetched["sha256"]) == 64
    assert cell["test_set"]["source"].endswith("test_data/test_instruction/SAD.csv")
    assert COMMIT not in cell["test_set"]["source"]  # a mirror, recorded as such
    # decoding settings, seed, classifier, scorers and their checkpoints, the code
    assert cell["generation_settings"]["max_new_tokens"] == 16 and cell["seed"] == 42
    assert cell["rows"] == 4 and cell["labelers"] == ["rule", "mentalbert"]
    assert cell["classifier"]["local_path"].endswith("classifiers/SAD")
    assert cell["scorers"]["bert_score"]["num_layers"] == 6
    assert set(cell["scorer_checkpoints"]) == {"bart_score", "bert_score"}
    assert set(cell["git_sha"]) == {"generate", "label", "score"}
    assert cell["summary"] == "results/metrics/demo-llama/SAD.parquet"
    # every stage's file records its own inputs' sha256 and the seed
    for stage in ("label", "score"):
        record = read_provenance(workdir / "results" / stage / "demo-llama" / "SAD.parquet")
        assert record["seed"] == 42 and record["job"]["rule"] == stage
        digests = record["job"]["inputs_sha256"]
        assert digests["results/generate/demo-llama/SAD.parquet"]
        assert digests["resources/imhi/instruction/SAD.parquet"]
    # a summary and a label file (paired tests) per job, and the published file
    jobs = [p.relative_to(workdir / "results" / "generate").with_suffix("").as_posix()
            for p in (workdir / "results" / "generate").glob("*/*.parquet")]  # fmt: skip
    assert len(sidecar["aggregate"]["job"]["inputs_sha256"]) == 2 * len(jobs) + 1
    assert set(sidecar["inputs"]) == {f"results/metrics/{job}.parquet" for job in jobs}


def test_cell_provenance_of_a_hub_model():
    record = {
        "model": "m", "dataset": "DR", "seed": 1, "scorers": {"rouge": {}},
        "scorer_checkpoints": {}, "git_sha": "c",
        "labels": {
            "classifier": {"hub_id": "Tianlin668/DR", "resolved_revision": "b" * 40},
            "labelers": ["mentalbert"], "git_sha": "b",
            "generation": {
                "model": "m", "kind": "causal", "hub_id": "o/m", "requested_revision": "main",
                "checkpoints": {"model": {"hub_id": "o/m", "resolved_revision": "a" * 40}},
                "generation_settings": {"max_new_tokens": 4}, "seed": 1, "git_sha": "a",
                "test_set": {"dataset": "DR", "split": "instruction", "sha256": "f" * 64},
            },
        },
    }  # fmt: skip
    cell = cell_provenance(record)
    assert cell["model"]["checkpoints"]["model"]["resolved_revision"] == "a" * 40
    assert cell["test_set"]["sha256"] == "f" * 64 and cell["test_set"]["source"] is None
    assert cell["classifier"]["resolved_revision"] == "b" * 40
    assert cell["git_sha"] == {"generate": "a", "label": "b", "score": "c"}


def test_a_workflow_job_records_its_inputs_seed_and_slurm_job(tmp_path, monkeypatch):
    import sys
    from types import SimpleNamespace

    from imhibench.common.provenance import build_provenance

    data = tmp_path / "in.parquet"
    data.write_bytes(b"abc")
    checkpoint, labels = tmp_path / "checkpoint", tmp_path / "label"  # a per-model job's output
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    labels.mkdir()
    (labels / "DR.parquet").write_bytes(b"abc")
    job = SimpleNamespace(
        rule="label", input=[str(data), str(checkpoint), str(labels)], wildcards={"model": "m"},
        config={"seed": 7},
    )  # fmt: skip
    monkeypatch.setattr(sys.modules["__main__"], "snakemake", job, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    record = build_provenance("label")
    assert record["seed"] == 7 and record["job"]["slurm_job_id"] == "123"
    abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert record["job"]["inputs_sha256"] == {
        str(data): abc,
        str(checkpoint): None,  # described by its fetch manifest
        str(labels / "DR.parquet"): abc,  # a directory's Parquet files, each
    }
    assert build_provenance("score", seed=1)["seed"] == 1


@pytest.mark.slow
def test_report_with_another_config_fails_and_says_why(demo, tmp_path):
    workdir, _ = demo
    other = mirror_config(tmp_path / "other.yaml", {"generation": {"max_new_tokens": 8}})
    report = tmp_path / "report.html"
    result = run(snakemake_command(workdir, "--report", str(report), configs=(other,)))
    assert result.returncode != 0
    assert "do not belong to this config" in result.stderr, result.stderr[-3000:]
    assert not report.exists()
