"""Generate stage for one (model, dataset): responses to the test set's queries, or imported.

Generation is resumable: rows are answered shard by shard (``shard_rows`` rows each, longest
prompts first) and every finished shard is saved under ``<out>.shards/`` (see ``shards.py``). A
job killed at any point and run again skips the saved shards; the output file appears, atomically,
only when every row is answered, and the shard directory is removed after it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time

import pandas as pd

from imhibench.generate.shards import ShardStore, dir_fingerprint
from imhibench.generate.signals import GenerationStopped, StopOnSignal
from imhibench.io import read_provenance, read_table, write_table
from imhibench.provenance import (
    build_provenance,
    checkpoint_provenance,
    package_versions,
    sha256_file,
)

log = logging.getLogger(__name__)

# Columns of results/generate/<model>/<dataset>.parquet.
RESPONSE_COLUMNS = ["row_id", "response", "n_output_tokens"]
# Rows per shard when the settings give no ``shard_rows``: minutes of GPU work for a 7B model.
DEFAULT_SHARD_ROWS = 256
# Package versions that can change generated text; a resumed job must match them.
_OUTPUT_PACKAGES = ("torch", "transformers", "peft", "tokenizers", "imhibench")


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
    progress_interval_s: float = 30.0,
) -> pd.DataFrame:
    """Write one response per test-set row (the first `rows` rows when set).

    ``settings`` are GenerationSettings fields plus an optional ``shard_rows``. SIGTERM or
    SIGINT stops the job within one decoding step (never mid-write) with exit status 128 + signal;
    a rerun resumes from the saved shards.
    """
    test_set = read_table(test_set_path, ["row_id", "query", "gold_answer"])
    kind = model_spec["kind"]
    started = time.perf_counter()
    extra: dict = {}
    store: ShardStore | None = None
    with StopOnSignal() as stop:
        if kind == "responses":
            texts = _imported_responses(responses_path, test_set)
            table = pd.DataFrame({"row_id": test_set["row_id"], "response": texts})
            table["n_output_tokens"] = pd.array([None] * len(table), dtype="Int64")
            table = table.head(rows) if rows else table
            checkpoints: dict = {"responses": responses_path}
        else:
            subset = test_set.head(rows) if rows else test_set
            job = _ShardedJob(model, kind, model_dir, base_model_dir, settings, seed, device)
            table, store, extra = job.run(
                subset, test_set_path, out_path, stop, progress_interval_s
            )
            checkpoints = {"model": checkpoint_provenance(model_dir)}
            if base_model_dir:
                checkpoints["base"] = checkpoint_provenance(base_model_dir)
        seconds = time.perf_counter() - started
        has_tokens = table["n_output_tokens"].notna().any()
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
            output_tokens=int(table["n_output_tokens"].sum()) if has_tokens else None,
            test_set=read_provenance(test_set_path),
            **extra,
        )
        with stop.deferred():
            write_table(table[RESPONSE_COLUMNS], out_path, provenance)
            if store is not None:
                store.remove()
    log.info("%s: wrote %d responses to %s in %.1f s", model, len(table), out_path, seconds)
    return table


def _imported_responses(responses_path: str | None, test_set: pd.DataFrame) -> list[str]:
    """Kind ``responses``: the answers of every test-set row, from a file made elsewhere."""
    from imhibench.generate import import_responses

    return import_responses(
        responses_path, test_set["row_id"].tolist(), test_set["gold_answer"].tolist()
    )


class _ShardedJob:
    """One model's generation over a test set, shard by shard, resuming from saved shards."""

    def __init__(self, model, kind, model_dir, base_model_dir, settings, seed, device):
        from imhibench.devices import resolve_device
        from imhibench.errors import ImhiBenchError
        from imhibench.generate import GenerationSettings

        self.model, self.kind = model, kind
        self.model_dir, self.base_model_dir = model_dir, base_model_dir
        self.settings, self.seed = settings, seed
        self.shard_rows = settings.get("shard_rows", DEFAULT_SHARD_ROWS)
        if type(self.shard_rows) is not int or self.shard_rows < 1:
            raise ImhiBenchError(
                f"generation settings: shard_rows must be an integer >= 1: {settings}"
            )
        fields = {k: v for k, v in settings.items() if k != "shard_rows"}
        try:
            self.generation = GenerationSettings(**fields, seed=seed)
        except TypeError as err:
            raise ImhiBenchError(f"generation settings {settings}: {err}") from err
        self.device = resolve_device(device)
        _check_upstream_shards(self.generation, self.device, self.shard_rows)

    def run(self, subset, test_set_path, out_path, stop: StopOnSignal, interval_s: float):
        """(responses table in test-set order, the shard store, provenance fields)."""
        from imhibench.generate import load_backend
        from imhibench.generate.batching import plan_shards
        from imhibench.generate.progress import Progress

        log.info("%s: loading %s backend from %s", self.model, self.kind, self.model_dir)
        backend = load_backend(
            self.kind,
            model_dir=self.model_dir,
            base_model_dir=self.base_model_dir,
            settings=self.generation,
            device=self.device,
        )
        queries, row_ids = subset["query"].tolist(), subset["row_id"].tolist()
        shards = plan_shards(backend.prompt_lengths(queries), self.shard_rows)
        plan = [[row_ids[i] for i in shard] for shard in shards]
        store = ShardStore(out_path)
        done = store.open(self._resume_key(test_set_path, len(subset), plan), plan)
        resumed = sum(len(t) for t in done.values())
        if done:
            log.info(
                "%s: resuming: %d of %d shards (%d of %d rows) already saved in %s",
                self.model, len(done), len(plan), resumed, len(subset), store.dir,
            )  # fmt: skip
        log.info(
            "%s: generating %d responses in %d shard(s) of up to %d rows",
            self.model, len(subset) - resumed, len(plan) - len(done), self.shard_rows,
        )  # fmt: skip
        progress = Progress(self.model, len(subset), resumed, interval_s)
        try:
            self._fill(backend, queries, shards, plan, done, store, stop, progress)
        except GenerationStopped as err:
            saved = sum(len(t) for t in done.values())
            log.warning(
                "%s: stopped by %s; %d of %d rows saved in %d shard(s) under %s; run the job "
                "again to resume", self.model, err.signal_name, saved, len(subset), len(done),
                store.dir,
            )  # fmt: skip
            raise
        extra = {
            "device_name": _device_label(self.device),
            "shard_rows": self.shard_rows,
            "resumed_rows": resumed,
            "decoding": getattr(backend, "decoding_provenance", None),
            "generation_seconds": round(
                sum(read_provenance(store.path(k)).get("seconds", 0.0) for k in done), 3
            ),
        }
        return _in_order(done, row_ids), store, extra

    @staticmethod
    def _fill(backend, queries, shards, plan, done, store, stop, progress) -> None:
        """Generate and save every shard not in ``done`` (index -> table), adding it there."""
        for k, shard in enumerate(shards):
            if k in done:
                continue
            started = time.perf_counter()
            result = backend.generate([queries[i] for i in shard], on_batch=progress.batch)
            seconds = time.perf_counter() - started
            table = pd.DataFrame(
                {
                    "row_id": plan[k],
                    "response": result.texts,
                    "n_output_tokens": pd.array(result.n_output_tokens, dtype="Int64"),
                }
            )
            with stop.deferred():
                path = store.write(k, table, {"shard": k, "seconds": round(seconds, 3)})
            done[k] = table
            progress.log(f"saved {path.name} ({len(shard)} rows, {seconds:.1f} s); ")

    def _resume_key(self, test_set_path: str, n_rows: int, plan: list[list[str]]) -> dict:
        """Everything saved shards depend on; shards saved under another key are discarded."""
        checkpoints = {"model": self.model_dir, "base": self.base_model_dir}
        versions = package_versions()
        key = {
            "test_set_sha256": sha256_file(test_set_path),
            "rows": n_rows,
            "kind": self.kind,
            "checkpoints": {
                name: {"provenance": checkpoint_provenance(path), "files": dir_fingerprint(path)}
                for name, path in checkpoints.items()
                if path
            },
            "settings": self.settings,
            "seed": self.seed,
            "shard_rows": self.shard_rows,
            "device": _device_label(self.device),
            "packages": {name: versions.get(name) for name in _OUTPUT_PACKAGES},
            "plan_sha256": hashlib.sha256(json.dumps(plan).encode()).hexdigest(),
        }
        return json.loads(json.dumps(key, sort_keys=True, default=str))  # as stored in JSON


def _check_upstream_shards(generation, device: str, shard_rows: int) -> None:
    """The ``upstream`` engine batches 8 rows in file order: shards must not cut a batch."""
    from imhibench.errors import ImhiBenchError
    from imhibench.generate.base import resolve_engine
    from imhibench.generate.upstream import UPSTREAM_BATCH_SIZE

    engine = resolve_engine(generation.engine, device)
    if engine == "upstream" and shard_rows % UPSTREAM_BATCH_SIZE:
        raise ImhiBenchError(
            f"generation settings: engine 'upstream' needs shard_rows a multiple of "
            f"{UPSTREAM_BATCH_SIZE} (upstream's batches), not {shard_rows}"
        )


def _device_label(device: str) -> str:
    """``cpu``, or ``cuda:0 NVIDIA H100 80GB HBM3``: kernels (and bf16 rounding) differ by GPU."""
    import torch

    if device.startswith("cuda"):
        return f"{device} {torch.cuda.get_device_name(torch.device(device))}"
    return device


def _in_order(done: dict[int, pd.DataFrame], row_ids: list[str]) -> pd.DataFrame:
    """The saved shards as one table in test-set row order."""
    if not done:
        return pd.DataFrame(
            {"row_id": [], "response": [], "n_output_tokens": pd.array([], dtype="Int64")}
        )
    table = pd.concat([done[k] for k in sorted(done)], ignore_index=True)
    table = table.set_index("row_id").loc[row_ids].reset_index()
    table["n_output_tokens"] = table["n_output_tokens"].astype("Int64")
    return table[RESPONSE_COLUMNS]
