"""The demo scores upstream's real MentaLLaMA answers (examples/response_generation_examples)
as an imported model on the expert-written sets, fetched from the pinned source by sha256."""

import hashlib

import pandas as pd
import pytest
from support import require_mirror
from test_config import SCHEMA, load, merged

from imhibench.common.errors import ImhiBenchError
from imhibench.config.plan import Plan
from imhibench.config.validation import validate_config
from imhibench.fetch.test_sets import download
from imhibench.generate import import_responses

EXAMPLES = ["DR-expert", "dreaddit-expert", "SAD-expert", "MultiWD-expert", "Irf-expert"]


@pytest.fixture
def demo():
    return merged(load("config.yaml"), load("demo.yaml"))


def test_the_demo_plans_the_real_answers_on_all_rows_of_the_expert_sets_only(demo):
    validate_config(demo, SCHEMA)
    plan = Plan(demo)
    assert [d for m, d in plan.jobs if m == "MentaLLaMA-examples"] == EXAMPLES
    skipped = {s.dataset: s.reason for s in plan.skipped if s.model == "MentaLLaMA-examples"}
    assert set(skipped) == {"DR", "SAD"}
    assert "model_catalog.MentaLLaMA-examples.datasets" in skipped["DR"]
    assert plan.rows_of("MentaLLaMA-examples") is None and plan.rows_of("demo-llama") == 4
    assert demo["labelers"][0] == "rule"  # the demo's classifiers are random


def test_unknown_dataset_of_a_model_is_named(demo):
    demo["model_catalog"]["MentaLLaMA-examples"]["datasets"] = ["DR-expert", "XX"]
    with pytest.raises(ImhiBenchError, match=r"MentaLLaMA-examples.datasets: 'XX' is not in"):
        validate_config(demo, SCHEMA)


def test_example_files_are_pinned_to_the_mirror_checksums(demo, tmp_path):
    mirror = require_mirror()
    lines = (mirror / "SHA256SUMS").read_text().splitlines()
    sums = {path.removeprefix("./"): digest for digest, path in map(str.split, lines)}
    plan = Plan(demo)
    for dataset in EXAMPLES:
        spec = demo["imhi_example_responses"][dataset]
        assert sums[spec["path"]] == spec["sha256"]
        out = tmp_path / f"{dataset}.csv"
        assert download(plan.example_responses_source(dataset), out, spec["sha256"]) == (
            hashlib.sha256(out.read_bytes()).hexdigest()
        )
        # each answers its expert set row for row: the import checks every `goldens` cell
        expert = demo["dataset_catalog"][dataset]["files"]["instruction"]["path"]
        gold = pd.read_csv(mirror / expert, dtype=str, keep_default_na=False)["gpt-3.5-turbo"]
        ids = [f"{dataset}-{i:05d}" for i in range(len(gold))]
        assert len(import_responses(str(out), ids, gold.tolist())) == 35
    with pytest.raises(ImhiBenchError, match="sha256 mismatch"):
        download(plan.example_responses_source("DR-expert"), tmp_path / "x.csv", "0" * 64)
