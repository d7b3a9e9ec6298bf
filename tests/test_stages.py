"""The stage runners that the Snakemake scripts call, outside Snakemake."""

import pandas as pd
import pytest
from support import REPO, mirror_sha256, require_mirror

from imhibench.common.errors import ImhiBenchError
from imhibench.common.io import read_provenance, read_table
from imhibench.common.provenance import build_provenance, git_state
from imhibench.config.sources import source_url
from imhibench.fetch.test_sets import run_fetch_test_set
from imhibench.generate.stage import RESPONSE_COLUMNS, run_generate

EXPERT_DR = "human_evaluation/test_instruction_expert/DR.csv"
SETTINGS = {"max_new_tokens": 8, "batch_tokens": 4096, "max_batch_size": 8,
            "chat_template": False, "dtype": "auto"}  # fmt: skip


@pytest.fixture
def expert_dr(tmp_path):
    mirror = require_mirror()
    parquet = tmp_path / "DR-expert.parquet"
    run_fetch_test_set(
        source_url(str(mirror), EXPERT_DR), mirror_sha256(EXPERT_DR), "DR-expert", "DR",
        "instruction", tmp_path / "DR-expert.csv", parquet,
    )  # fmt: skip
    return parquet


def test_generate_imports_upstream_responses(tmp_path, expert_dr):
    responses = require_mirror() / "examples" / "response_generation_examples" / "DR.csv"
    out = tmp_path / "gen.parquet"
    spec = {"kind": "responses", "split": "instruction", "responses": str(responses)}
    table = run_generate(str(expert_dr), str(out), "mentallama-released", spec, None, None,
                         str(responses), SETTINGS, rows=None)  # fmt: skip
    assert len(table) == 35 and table["row_id"].iloc[0] == "DR-expert-00000"
    assert table["response"].iloc[0] == pd.read_csv(responses)["generated_text"].iloc[0]
    written = read_table(out)
    assert written.columns.tolist() == RESPONSE_COLUMNS
    provenance = read_provenance(out)
    assert provenance["checkpoints"] == {"responses": str(responses)}
    assert provenance["test_set"]["sha256"] == mirror_sha256(EXPERT_DR)
    # nothing was generated: no decoding settings are recorded for imported answers
    assert provenance["generation_settings"] is None


def test_generate_with_a_model_takes_the_first_rows(tmp_path, expert_dr, demo_models):
    out = tmp_path / "gen.parquet"
    spec = {"kind": "causal", "split": "instruction", "path": demo_models["causal"]}
    table = run_generate(str(expert_dr), str(out), "tiny", spec, demo_models["causal"], None,
                         None, SETTINGS, rows=3, device="cpu", seed=7)  # fmt: skip
    assert table["row_id"].tolist() == [f"DR-expert-{i:05d}" for i in range(3)]
    assert (table["n_output_tokens"] <= 8).all()
    provenance = read_provenance(out)
    assert provenance["seed"] == 7 and provenance["generation_settings"] == SETTINGS
    assert provenance["rows"] == 3 and provenance["kind"] == "causal"


def test_generate_rejects_mismatched_upstream_responses(tmp_path, expert_dr):
    wrong = require_mirror() / "examples" / "response_generation_examples" / "SAD.csv"
    spec = {"kind": "responses", "split": "instruction", "responses": str(wrong)}
    with pytest.raises(ImhiBenchError, match="SAD.csv"):
        run_generate(str(expert_dr), str(tmp_path / "o.parquet"), "x", spec, None, None,
                     str(wrong), SETTINGS, rows=None)  # fmt: skip
    assert not (tmp_path / "o.parquet").exists()


def test_provenance_records_the_checkout():
    state = git_state(REPO)
    assert state["git_sha"] is None or len(state["git_sha"]) == 40
    record = build_provenance("x", seed=3)
    assert record["seed"] == 3 and record["packages"]["pandas"] == pd.__version__
