"""Generate stage for one (model, dataset): responses to the test set's queries, or imported.

Generation is resumable: rows are answered shard by shard (``shard_rows`` rows each, longest
prompts first) and every finished shard is saved under ``<out>.shards/`` (see ``shards.py``). A
job killed at any point and run again reuses every saved row and generates only the missing ones;
the output file appears, atomically, only when every row is answered. The shards stay after
the output is written, so an output that Snakemake throws away (a job stopped during the final
write or orphaned, ``--forcerun``, a re-fetched test file) is rebuilt from them by the rerun
without generating anything.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import pandas as pd

from imhibench.common.checkpoint_hashes import local_checkpoint_sha256
from imhibench.common.io import read_provenance, read_table, write_table
from imhibench.common.provenance import (
    build_provenance,
    checkpoint_provenance,
    git_state,
    package_versions,
)
from imhibench.common.reuse import sources_sha256
from imhibench.generate.base import answer_settings, check_model_directories
from imhibench.generate.lock import output_lock
from imhibench.generate.shards import KEY_FIELD, SHARD_COLUMNS, ShardStore, query_sha256
from imhibench.generate.signals import GenerationStopped, StopOnSignal

log = logging.getLogger(__name__)

# Columns of results/generate/<model>/<dataset>.parquet.
RESPONSE_COLUMNS = ["row_id", "response", "n_output_tokens"]
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
    a rerun resumes from the saved shards. The job holds the output's lock (``lock.py``) for
    its whole life: a second job on the same output stops at once, naming this one.
    """
    test_set = read_table(test_set_path, ["row_id", "query", "gold_answer"])
    kind = model_spec["kind"]
    started = time.perf_counter()
    extra: dict = {}
    store: ShardStore | None = None
    with output_lock(out_path), StopOnSignal() as stop:
        if kind == "responses":
            texts = _imported_responses(responses_path, test_set)
            table = pd.DataFrame({"row_id": test_set["row_id"], "response": texts})
            table["n_output_tokens"] = pd.array([None] * len(table), dtype="Int64")
            table = table.head(rows) if rows else table
            checkpoints: dict = {"responses": responses_path}
            extra = _empty_imported(responses_path, table)
        elif kind == "api":
            from imhibench.generate.api_stage import run_api_job

            subset = test_set.head(rows) if rows else test_set
            table, extra = run_api_job(
                subset, out_path, model, model_spec, settings, seed, stop,
                progress_interval_s,
            )  # fmt: skip
            checkpoints = {"endpoint": extra.pop("endpoint")}
        else:
            check_model_directories(model, model_spec, model_dir, base_model_dir)
            subset = test_set.head(rows) if rows else test_set
            job = _ShardedJob(model, kind, model_dir, base_model_dir, settings, seed, device)
            table, store, extra = job.run(subset, out_path, stop, progress_interval_s)
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
            # imported answers were not generated: no decoding settings apply to them
            generation_settings=None if kind == "responses" else settings,
            seed=seed,
            device=device,
            rows=len(table),
            seconds=round(seconds, 3),
            output_tokens=int(table["n_output_tokens"].sum()) if has_tokens else None,
            test_set=read_provenance(test_set_path),
            **extra,
        )
        if store is not None:
            store.check_still_current()
            provenance[KEY_FIELD] = store.key_sha256
        with stop.deferred():  # the shards stay (see shards.py)
            extra_columns = [c for c in table.columns if c not in RESPONSE_COLUMNS]  # api
            write_table(table[RESPONSE_COLUMNS + extra_columns], out_path, provenance)
    log.info("%s: wrote %d responses to %s in %.1f s", model, len(table), out_path, seconds)
    return table


def _imported_responses(responses_path: str | None, test_set: pd.DataFrame) -> list[str]:
    """Kind ``responses``: the answers of every test-set row, from a file made elsewhere."""
    from imhibench.generate import import_responses

    return import_responses(
        responses_path, test_set["row_id"].tolist(), test_set["gold_answer"].tolist()
    )


def _empty_imported(responses_path: str | None, table: pd.DataFrame) -> dict:
    """Kind ``responses``: warn of empty or missing answers (kept as empty text, the rule
    ``imhibench evaluate`` follows too) and count them for provenance."""
    from imhibench.generate.responses import EMPTY_TREATMENT, empty_rows

    empty = empty_rows(table["row_id"].tolist(), table["response"].tolist())
    if empty:
        log.warning(
            "%s: %d empty or missing answer(s) (%s): %s",
            responses_path, len(empty), ", ".join(empty), EMPTY_TREATMENT,
        )  # fmt: skip
    return {"empty_responses": len(empty)}


class _ShardedJob:
    """One model's generation over a test set, shard by shard, resuming from saved shards."""

    def __init__(self, model, kind, model_dir, base_model_dir, settings, seed, device):
        from imhibench.common.devices import resolve_device
        from imhibench.generate.engines import job_settings

        self.model, self.kind = model, kind
        self.model_dir, self.base_model_dir = model_dir, base_model_dir
        self.settings, self.seed = settings, seed
        self.device = resolve_device(device)
        self.generation, self.shard_rows = job_settings(kind, settings, seed, self.device)
        self._label: str | None = None

    def run(self, subset, out_path, stop: StopOnSignal, interval_s: float):
        """(responses table in test-set order, the shard store, provenance fields)."""
        from imhibench.common.progress import Progress

        queries, row_ids = subset["query"].tolist(), subset["row_id"].tolist()
        basis = self._row_basis(row_ids, queries)
        store = ShardStore(out_path)
        stored = store.open(self._resume_key(), {"git": git_state()["git_sha"]})
        saved = _reusable(stored, basis)
        have = set(saved["row_id"])
        if redo := (set(stored["row_id"]) & set(row_ids)) - have:
            log.warning(
                "%s: %d saved row(s) were made for another query (the test set changed) or, "
                "engine upstream, in a batch a fresh run would not form (e.g. other "
                "rows_per_dataset); they are generated again",
                self.model, len(redo),
            )  # fmt: skip
        missing = [i for i, row_id in enumerate(row_ids) if row_id not in have]
        resumed = len(row_ids) - len(missing)
        if resumed:
            log.info(
                "%s: resuming: %d of %d rows already saved in %s",
                self.model, resumed, len(row_ids), store.dir,
            )  # fmt: skip
        if missing:
            backend = self._load_backend()
            record = _backend_record(backend)
            progress = Progress(self.model, len(row_ids), resumed, interval_s)
            tables = [saved] if len(saved) else []
            try:
                self._fill(backend, record, queries, basis, missing, store, stop, progress,
                           tables)  # fmt: skip
            except GenerationStopped as err:
                log.warning(
                    "%s: stopped by %s; %d of %d rows saved under %s; run the job again to "
                    "resume", self.model, err.signal_name, sum(len(t) for t in tables),
                    len(row_ids), store.dir,
                )  # fmt: skip
                raise
            saved = pd.concat(tables, ignore_index=True)
        else:
            log.info(
                "%s: every row is saved in %s; building the output without generating",
                self.model, store.dir,
            )  # fmt: skip
            record = {
                k: next((p[k] for p in store.provenances if p.get(k)), None)
                for k in _BACKEND_RECORD
            }
        extra = {
            "device_name": self.device_label(),
            "shard_rows": self.shard_rows,
            "resumed_rows": resumed,
            "generated_rows": len(missing),
            **record,
            "generation_seconds": round(sum(p.get("seconds", 0.0) for p in store.provenances), 3),
        }
        return _in_order(saved, row_ids), store, extra

    def device_label(self) -> str:
        """``_device_label`` of the job's device, read once (before any backend is loaded)."""
        if self._label is None:
            self._label = _device_label(self.device)
        return self._label

    def _load_backend(self):
        from imhibench.generate import load_backend

        log.info("%s: loading %s backend from %s", self.model, self.kind, self.model_dir)
        return load_backend(
            self.kind,
            model_dir=self.model_dir,
            base_model_dir=self.base_model_dir,
            settings=self.generation,
            device=self.device,
        )

    def _row_basis(self, row_ids: list[str], queries: list[str]) -> pd.DataFrame:
        """Per row (test-set order) what decides its answer besides the resume key: its query,
        and for the ``upstream`` engine the batch a fresh run of these rows puts it in (8 rows
        in file order; the padded width of the batch enters upstream's ``max_length``), as
        ``row_id, query_sha256, batch_sha256`` (None for the other engines, whose answers do
        not depend on the batch)."""
        from imhibench.generate.base import resolve_engine
        from imhibench.generate.upstream import UPSTREAM_BATCH_SIZE

        basis = pd.DataFrame(
            {"row_id": row_ids, "query_sha256": [query_sha256(q) for q in queries]}
        )
        basis["batch_sha256"] = None
        if resolve_engine(self.generation.engine, self.device) == "upstream":
            for start in range(0, len(basis), UPSTREAM_BATCH_SIZE):
                batch = basis.iloc[start : start + UPSTREAM_BATCH_SIZE]
                members = json.dumps(batch[["row_id", "query_sha256"]].values.tolist())
                digest = hashlib.sha256(members.encode()).hexdigest()
                basis.loc[batch.index, "batch_sha256"] = digest
        return basis

    def _fill(
        self, backend, record, queries, basis, missing, store, stop, progress, tables
    ) -> None:
        """Generate the rows at indices ``missing``, shard by shard, saving each shard's table
        (with the backend's ``record``) and adding it to ``tables``."""
        from imhibench.generate.batching import plan_shards

        lengths = backend.prompt_lengths([queries[i] for i in missing])
        shards = [[missing[j] for j in shard] for shard in plan_shards(lengths, self.shard_rows)]
        _check_upstream_batches(shards, basis)
        log.info(
            "%s: generating %d responses in %d shard(s) of up to %d rows",
            self.model, len(missing), len(shards), self.shard_rows,
        )  # fmt: skip
        for shard in shards:
            started = time.perf_counter()
            result = backend.generate([queries[i] for i in shard], on_batch=progress.batch)
            seconds = time.perf_counter() - started
            table = basis.iloc[shard].reset_index(drop=True)
            table["response"] = result.texts
            table["n_output_tokens"] = pd.array(result.n_output_tokens, dtype="Int64")
            with stop.deferred():
                path = store.write(table, {"seconds": round(seconds, 3), **record})
            tables.append(table)
            progress.log(f"saved {path.name} ({len(shard)} rows, {seconds:.1f} s); ")

    def _resume_key(self) -> dict:
        """Everything a saved answer depends on besides its row (``_row_basis``); rows saved
        under another key are discarded.

        Content only, never when or where a file was written: the checkpoints are the sha256
        of their weight, tokenizer and config files (a byte-identical re-fetch keeps the key),
        the test set enters row by row (``query_sha256``). Execution settings (shard size,
        batching, a reference engine) are left out: saved rows are reused whatever they are
        (``answer_settings``; the ``upstream`` and ``vllm`` engines stay in, they can change
        answers). Our own generation code is in, as the sha256 of the modules that can change
        an answer (``ANSWER_MODULES``). The GPU model and package versions are in (answers can
        differ across GPUs and library versions): a change sets saved rows aside (``shards``),
        it never deletes them.
        """
        checkpoints = {"model": self.model_dir, "base": self.base_model_dir}
        versions = package_versions()
        key = {
            "kind": self.kind,
            "checkpoints": {
                name: local_checkpoint_sha256(path) for name, path in checkpoints.items() if path
            },
            "settings": answer_settings(self.settings),
            "seed": self.seed,
            "device": self.device_label(),
            "packages": {name: versions.get(name) for name in _OUTPUT_PACKAGES},
            "generate_code_sha256": generate_code_sha256(),
        }
        return json.loads(json.dumps(key, sort_keys=True, default=str))  # as stored in JSON


#: The modules of ``imhibench/generate`` whose code can change a generated answer: their
#: sha256 is part of the resume key, so an edit of one sets saved rows aside.
ANSWER_MODULES = (
    "base.py",  # GenerationSettings defaults, cut_at_eos, resolve_dtype
    "engines.py",  # which generator runs, the dtype a model is loaded in, device map
    "causal.py",  # tokenizer loading (pad token, padding side), model loading
    "seq2seq.py",  # encoder-decoder model loading
    "lora.py",  # adapter loading and merging
    "hf.py",  # prompts (chat template), the generate calls, decoding of the answer
    "rounds.py",  # the static engine's decoding rounds and KV cache
    "continuous.py",  # the continuous engine
    "upstream.py",  # the upstream engine (batches of 8, max_length, decoding)
    "vllm_engine.py",  # the vllm engine (dtype, sampling parameters, prompts, decoding)
    "decoding.py",  # the generation config: greedy or the checkpoint's
    "batching.py",  # which rows form a batch, and how an out-of-memory batch is split and
    # its answers put back in order (a bug here gives a row another row's answer)
)
#: Modules that cannot change an answer, left out so that editing them keeps GPU work:
NOT_ANSWER_MODULES = (
    "__init__.py",  # re-exports only
    "memory.py",  # the batch token budget from free GPU memory: the same as batch_tokens,
    # an execution setting (batching among the reference engines leaves answers unchanged)
    "stage.py",  # resume bookkeeping, provenance and output writing
    "shards.py",  # shard files
    "signals.py",  # stopping on SIGTERM / SIGINT
    "lock.py",  # the output lock
    "responses.py",  # kind responses: imported answers, never sharded
    "api.py",  # kind api: journaled (journal.py), not sharded
    "api_stage.py",
    "journal.py",
)


def generate_code_sha256(directory: Path = Path(__file__).parent) -> str:
    """sha256 over the sources of the ``ANSWER_MODULES`` of ``imhibench/generate``."""
    return sources_sha256([directory / name for name in ANSWER_MODULES])


#: What a backend reports for provenance (field -> backend attribute: the length cap of seq2seq
#: models, the decoding record); saved with every shard, so an output rebuilt from shards alone
#: (no backend loaded) still records it.
_BACKEND_RECORD = {"max_new_tokens_cap": "max_new_tokens_cap", "decoding": "decoding_provenance"}


def _backend_record(backend) -> dict:
    """The ``_BACKEND_RECORD`` fields of a backend, None where it has none."""
    return {field: getattr(backend, name, None) for field, name in _BACKEND_RECORD.items()}


def _reusable(saved: pd.DataFrame, basis: pd.DataFrame) -> pd.DataFrame:
    """The saved rows made for ``basis`` (same row id, query and, for ``upstream``, batch),
    one per row; an ``upstream`` batch only if every one of its rows is saved, as a fresh run
    would generate it together."""
    keys = ["row_id", "query_sha256", "batch_sha256"]
    fits = (
        saved.fillna({"batch_sha256": ""})
        .merge(basis[keys].fillna({"batch_sha256": ""}), on=keys)
        .drop_duplicates("row_id")
    )
    if basis["batch_sha256"].notna().any():
        have = basis["row_id"].isin(set(fits["row_id"]))
        whole = have.groupby(basis["batch_sha256"]).all()
        fits = fits[fits["batch_sha256"].map(whole).astype(bool)]
    return fits[SHARD_COLUMNS].reset_index(drop=True)


def _check_upstream_batches(shards: list[list[int]], basis: pd.DataFrame) -> None:
    """Every 8 rows the ``upstream`` engine will batch together are one batch of a fresh run
    (missing rows are whole batches, shards a multiple of 8 in file order)."""
    from imhibench.common.errors import ImhiBenchError
    from imhibench.generate.upstream import UPSTREAM_BATCH_SIZE

    if basis["batch_sha256"].isna().all():
        return
    members = {k: list(v) for k, v in basis.groupby("batch_sha256").indices.items()}
    for shard in shards:
        for start in range(0, len(shard), UPSTREAM_BATCH_SIZE):
            chunk = shard[start : start + UPSTREAM_BATCH_SIZE]
            if members[basis["batch_sha256"].iloc[chunk[0]]] != chunk:
                raise ImhiBenchError(
                    f"engine 'upstream': rows {chunk} would be batched unlike a fresh run "
                    "(a bug: answers would differ); nothing was generated"
                )


#: Prints the name of a CUDA device (``sys.argv[1]``) as torch names it.
_DEVICE_NAME_SCRIPT = (
    "import sys, torch; print(torch.cuda.get_device_name(torch.device(sys.argv[1])))"
)


def _device_label(device: str) -> str:
    """``cpu``, or ``cuda:0 NVIDIA H100 80GB HBM3``: kernels (and bf16 rounding) differ by GPU.

    The name is asked in a child process: ``torch.cuda.get_device_name`` initialises CUDA, and
    a job whose process has initialised CUDA before vLLM starts makes vLLM start its engine
    core with ``spawn`` instead of ``fork`` (vLLM docs, design/multiprocessing.md). The child
    sees the same ``CUDA_VISIBLE_DEVICES`` and device order, so the name is torch's own.
    """
    import subprocess
    import sys

    from imhibench.common.errors import ImhiBenchError

    if not device.startswith("cuda"):
        return device
    command = [sys.executable, "-c", _DEVICE_NAME_SCRIPT, device]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ImhiBenchError(f"could not read the name of GPU {device}: {err}") from err
    name = done.stdout.strip()
    if done.returncode != 0 or not name:
        raise ImhiBenchError(
            f"could not read the name of GPU {device} (exit status {done.returncode}): "
            f"{done.stderr.strip()[-2000:]}"
        )
    return f"{device} {name}"


def _in_order(saved: pd.DataFrame, row_ids: list[str]) -> pd.DataFrame:
    """The saved rows as one table in test-set row order."""
    table = saved.drop_duplicates("row_id").set_index("row_id").loc[row_ids].reset_index()
    table["n_output_tokens"] = table["n_output_tokens"].astype("Int64")
    return table[RESPONSE_COLUMNS]
