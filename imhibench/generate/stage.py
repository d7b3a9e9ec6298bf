"""Generate stage for one (model, dataset): responses to the test set's queries, or imported."""

from __future__ import annotations

import logging
import time

import pandas as pd

from imhibench.io import read_provenance, read_table, write_table
from imhibench.provenance import build_provenance, checkpoint_provenance

log = logging.getLogger(__name__)

# Columns of results/generate/<model>/<dataset>.parquet.
RESPONSE_COLUMNS = ["row_id", "response", "n_output_tokens"]


def run_generate(
    test_set_path: str,
    out_path: str,
    model: str,
    model_spec: dict,
    model_dir: str | None,
    base_model_dir: str | None,
    responses_path: str | None,
    settings: dict,
    rows: int | None,
    device: str = "auto",
    seed: int = 0,
) -> pd.DataFrame:
    """Write one response per test-set row (the first `rows` rows when set)."""
    from imhibench.generate import GenerationSettings, import_responses, load_backend

    test_set = read_table(test_set_path, ["row_id", "query", "gold_answer"])
    kind = model_spec["kind"]
    started = time.perf_counter()
    if kind == "responses":
        texts = import_responses(
            responses_path, test_set["row_id"].tolist(), test_set["gold_answer"].tolist()
        )
        table = pd.DataFrame({"row_id": test_set["row_id"], "response": texts})
        table["n_output_tokens"] = pd.array([None] * len(table), dtype="Int64")
        table = table.head(rows) if rows else table
        checkpoints = {"responses": responses_path}
    else:
        subset = test_set.head(rows) if rows else test_set
        generation = GenerationSettings(**settings, seed=seed)
        log.info("%s: loading %s backend from %s", model, kind, model_dir)
        backend = load_backend(
            kind,
            model_dir=model_dir,
            base_model_dir=base_model_dir,
            settings=generation,
            device=None if device == "auto" else device,
        )
        log.info("%s: generating %d responses", model, len(subset))
        result = backend.generate(subset["query"].tolist())
        table = pd.DataFrame(
            {
                "row_id": subset["row_id"].to_numpy(),
                "response": result.texts,
                "n_output_tokens": pd.array(result.n_output_tokens, dtype="Int64"),
            }
        )
        checkpoints = {"model": checkpoint_provenance(model_dir)}
        if base_model_dir:
            checkpoints["base"] = checkpoint_provenance(base_model_dir)
    seconds = time.perf_counter() - started
    tokens = int(table["n_output_tokens"].sum()) if table["n_output_tokens"].notna().any() else None
    provenance = build_provenance(
        "generate",
        model=model,
        kind=kind,
        split=model_spec["split"],
        hub_id=model_spec.get("hub_id"),
        requested_revision=model_spec.get("revision"),
        checkpoints=checkpoints,
        generation_settings=settings,
        seed=seed,
        device=device,
        rows=len(table),
        seconds=round(seconds, 3),
        output_tokens=tokens,
        test_set=read_provenance(test_set_path),
    )
    write_table(table[RESPONSE_COLUMNS], out_path, provenance)
    log.info("%s: wrote %d responses to %s in %.1f s", model, len(table), out_path, seconds)
    return table
