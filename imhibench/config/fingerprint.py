"""Which configuration made the tables: a fingerprint of the config's answer-affecting parts,
recorded by aggregate in its outputs' provenance, and the check that a report (or anything
else reading the tables) is about to present them under the config they were made with."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from imhibench.common.errors import ImhiBenchError
from imhibench.common.execution import answer_settings
from imhibench.config.plan import Plan

# The aggregate output whose provenance carries the fingerprint.
FINGERPRINTED_TABLE = "all_metrics.parquet"
FINGERPRINT_FIELD = "config_fingerprint"


def answer_config(config: dict) -> dict:
    """The parts of a validated config that can change a number in the tables: the selected
    models (minus resources and execution settings) and datasets in table order, rows, seed,
    labelers with their classifiers, scorers, the published column and the metric validation's
    rating files and resamples. Resources, execution settings, `device` and the IMHI mirror are
    left out (see docs/cluster.md)."""
    plan = Plan(config)
    labelers = list(config["labelers"])
    tasks = sorted({plan.task_of(d) for d in plan.datasets})
    return {
        "models": [
            [
                name,
                {k: v for k, v in plan.model(name).items() if k not in ("resources", "generation")},
                answer_settings(plan.generation_settings(name)),
            ]
            for name in plan.models
        ],
        "datasets": [[name, plan.dataset(name)] for name in plan.datasets],
        "imhi_commit": config["imhi"]["commit"],
        "rows_per_dataset": config["rows_per_dataset"],
        "seed": config["seed"],
        "labelers": labelers,
        "classifiers": (
            {t: config["classifiers"].get(t) for t in tasks} if "mentalbert" in labelers else {}
        ),
        "label_batch_size": config["label_batch_size"],
        "scorers": config["scorers"],
        "published_weighted_f1": config.get("published_weighted_f1"),
        "metric_validation": config["metric_validation"],
    }


def config_fingerprint(config: dict) -> str:
    """sha256 of `answer_config` as canonical JSON (first 16 hex digits)."""
    text = json.dumps(answer_config(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def tables_config_mismatch(tables_dir: str | Path, config: dict) -> str | None:
    """None when the tables in `tables_dir` were made with `config` (or do not exist yet);
    else a message saying plainly that they belong to another configuration."""
    table = Path(tables_dir) / FINGERPRINTED_TABLE
    if not table.is_file():
        return None
    from imhibench.common.io import read_provenance

    recorded = read_provenance(table).get(FINGERPRINT_FIELD)
    current = config_fingerprint(config)
    if recorded == current:
        return None
    made_with = f"config fingerprint {recorded}" if recorded else "no recorded config fingerprint"
    return (
        f"{table.parent}/ was made with {made_with}, but this run's configuration has "
        f"{current}: these tables do not belong to this config. Pass the config they were "
        "made with (e.g. --configfile workflow_config/demo.yaml), or remake them with this "
        "config first (snakemake ... --forcerun aggregate)."
    )


def check_tables_match_config(tables_dir: str | Path, config: dict) -> None:
    """Raise ImhiBenchError when the tables were made with another configuration."""
    if message := tables_config_mismatch(tables_dir, config):
        raise ImhiBenchError(message)
