"""The tables record the config that made them; a different config is told so plainly."""

import pandas as pd
import pytest
from test_config import SCHEMA, load, merged

from imhibench.common.errors import ImhiBenchError
from imhibench.common.io import write_table
from imhibench.config.fingerprint import (
    check_tables_match_config,
    config_fingerprint,
    tables_config_mismatch,
)
from imhibench.config.validation import validate_config


@pytest.fixture
def demo() -> dict:
    config = merged(load("config.yaml"), load("demo.yaml"))
    validate_config(config, SCHEMA)
    return config


def write_tables(directory, config):
    table = pd.DataFrame({"metric": ["n"], "value": [1.0]})
    provenance = {"config_fingerprint": config_fingerprint(config)}
    write_table(table, directory / "all_metrics.parquet", provenance)


def test_same_config_matches_and_execution_changes_do_not_count(demo, tmp_path):
    assert tables_config_mismatch(tmp_path, demo) is None  # no tables yet
    write_tables(tmp_path, demo)
    check_tables_match_config(tmp_path, demo)
    demo["generation"]["batch_tokens"] = 1
    demo["device"] = "auto"
    demo["stage_resources"]["label"]["mem_mb"] = 123
    demo["imhi"]["source"] = "upstream"
    check_tables_match_config(tmp_path, demo)


@pytest.mark.parametrize(
    "edit",
    [
        lambda c: c.update(models=["demo-llama"]),
        lambda c: c.update(rows_per_dataset=5),
        lambda c: c["generation"].update(max_new_tokens=3),
        lambda c: c["scorers"]["bert_score"].update(num_layers=2),
        lambda c: c["metric_validation"].update(bootstrap_resamples=7),
    ],
    ids=["models", "rows", "decoding", "scorer", "validation"],
)
def test_other_config_is_refused_naming_both_fingerprints(demo, tmp_path, edit):
    write_tables(tmp_path, demo)
    made_with = config_fingerprint(demo)
    edit(demo)
    with pytest.raises(ImhiBenchError, match=f"made with config fingerprint {made_with}"):
        check_tables_match_config(tmp_path, demo)


def test_paper_config_is_not_the_demo(demo, tmp_path):
    write_tables(tmp_path, demo)
    paper = load("config.yaml")
    validate_config(paper, SCHEMA)
    assert "do not belong to this config" in tables_config_mismatch(tmp_path, paper)
