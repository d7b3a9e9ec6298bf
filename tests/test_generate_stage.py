"""The generate stage's shards, resume rules, progress lines and stop signals (in process)."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from imhibench.common.errors import ImhiBenchError
from imhibench.common.io import read_provenance, read_table, write_json, write_table
from imhibench.common.progress import Progress
from imhibench.common.provenance import sha256_file
from imhibench.generate import GenerationSettings, load_backend
from imhibench.generate.base import EXECUTION_SETTINGS
from imhibench.generate.batching import plan_shards
from imhibench.generate.shards import ShardStore, shard_dir
from imhibench.generate.signals import GenerationStopped, StopOnSignal
from imhibench.generate.stage import generate_code_sha256, run_generate

ROWS = 14
SETTINGS = {"max_new_tokens": 8, "batch_tokens": 4096, "max_batch_size": 4,
            "chat_template": False, "dtype": "float32", "shard_rows": 4}  # fmt: skip
N_SHARDS = 4  # ceil(14 / 4)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _queries(n: int, salt: str = "") -> list[str]:
    words = ("sad", "tired", "alone", "work", "sleep", "boss", "family", "money", "school")
    return [
        f'Post: "{salt}{" ".join(words[(3 * i + j) % len(words)] for j in range(i * 5 % 23))}" '
        "Question: Does the poster suffer from stress?"
        for i in range(n)
    ]


@pytest.fixture
def test_set(tmp_path):
    path = tmp_path / "T.parquet"
    ids = [f"T-{i:05d}" for i in range(ROWS)]
    write_table(pd.DataFrame({"row_id": ids, "query": _queries(ROWS), "gold_answer": "x"}), path)
    return path


def _generate(test_set, out, demo_models, settings=SETTINGS, rows=None, **kw) -> pd.DataFrame:
    spec = {"kind": "causal", "split": "instruction"}
    return run_generate(str(test_set), str(out), "tiny", spec, demo_models["causal"], None, None,
                        settings, rows=rows, device="cpu", **kw)  # fmt: skip


@pytest.fixture
def writes(monkeypatch) -> list[list[str]]:
    """Row ids of each shard written, in order."""
    written: list[list[str]] = []
    write = ShardStore.write
    monkeypatch.setattr(
        ShardStore,
        "write",
        lambda self, table, *a: (written.append(table["row_id"].tolist()), write(self, table, *a))[
            1
        ],
    )
    return written


def _rows(writes: list[list[str]]) -> list[str]:
    return sorted(r for shard in writes for r in shard)


def _shards(out) -> list:
    return sorted(shard_dir(out).glob("shard-*.parquet"))


def test_plan_shards_longest_first_in_chunks():
    assert plan_shards([3, 9, 1, 9, 5], 2) == [[1, 3], [4, 0], [2]]
    assert plan_shards([], 4) == []
    with pytest.raises(ImhiBenchError, match="shard_rows"):
        plan_shards([1], 0)


def test_sharded_run_equals_one_pass_and_keeps_its_shards(test_set, tmp_path, demo_models, caplog):
    out = tmp_path / "out.parquet"
    with caplog.at_level(logging.INFO, logger="imhibench"):
        table = _generate(test_set, out, demo_models, progress_interval_s=0)
    settings = GenerationSettings(**{k: v for k, v in SETTINGS.items() if k != "shard_rows"})
    backend = load_backend("causal", model_dir=demo_models["causal"], settings=settings,
                           device="cpu")  # fmt: skip
    whole = backend.generate(_queries(ROWS))
    assert table["row_id"].tolist() == [f"T-{i:05d}" for i in range(ROWS)]
    assert table["response"].tolist() == whole.texts
    assert table["n_output_tokens"].tolist() == whole.n_output_tokens
    pd.testing.assert_frame_equal(read_table(out), table)
    provenance = read_provenance(out)
    assert provenance["shard_rows"] == 4 and provenance["resumed_rows"] == 0
    assert provenance["generated_rows"] == ROWS and provenance["max_new_tokens_cap"] is None
    assert provenance["generation_settings"] == SETTINGS
    assert caplog.text.count("saved shard-") == N_SHARDS
    assert "14/14 rows (100.0%)" in caplog.text and "output tokens/s" in caplog.text
    assert "rows/s" in caplog.text and "left" in caplog.text
    # The job leaves its shards, and they stay (see the next test).
    assert len(_shards(out)) == N_SHARDS


def test_complete_shards_rebuild_the_output_without_generating(
    test_set, tmp_path, demo_models, writes, caplog, monkeypatch
):
    """Snakemake deletes the output of a job it reruns (stopped during or orphaned after its
    final write, --forcerun, --forceall, a re-fetched test file): the rerun rebuilds it from
    the shards, without even loading the model."""
    out = tmp_path / "out.parquet"
    first = _generate(test_set, out, demo_models)
    out.unlink()
    writes.clear()
    monkeypatch.setattr("imhibench.generate.load_backend", lambda *a, **k: pytest.fail("loaded"))
    with caplog.at_level(logging.INFO, logger="imhibench"):
        again = _generate(test_set, out, demo_models)
    assert writes == []
    assert "every row is saved" in caplog.text
    pd.testing.assert_frame_equal(again, first)
    assert read_provenance(out)["resumed_rows"] == ROWS
    assert read_provenance(out)["generated_rows"] == 0


def test_restart_keeps_saved_rows(test_set, tmp_path, demo_models, writes, caplog):
    out = tmp_path / "out.parquet"
    first = _generate(test_set, out, demo_models)
    out.unlink()  # as if killed after the last shard, before the output
    lost = _shards(out)[2]  # ... or while this shard was in flight
    lost_rows = sorted(read_table(lost)["row_id"])
    lost.unlink()
    partial = shard_dir(out) / f".{lost.name}.tmp-1"
    partial.write_text("partial")
    os.utime(partial, (time.time() - 3600, time.time() - 3600))  # cut short an hour ago
    in_progress = shard_dir(out) / ".shard-0123456789abcdef.parquet.tmp-2"
    in_progress.write_text("another job's write, now")
    writes.clear()
    with caplog.at_level(logging.INFO, logger="imhibench"):
        again = _generate(test_set, out, demo_models)
    assert _rows(writes) == lost_rows
    assert f"resuming: {ROWS - len(lost_rows)} of {ROWS} rows already saved" in caplog.text
    pd.testing.assert_frame_equal(again, first)
    assert read_provenance(out)["resumed_rows"] == ROWS - len(lost_rows)
    assert list(shard_dir(out).glob(".*tmp*")) == [in_progress]


def _stale(out) -> list:
    """The shards set aside in ``stale-<time>/`` directories."""
    return sorted(shard_dir(out).glob("stale-*/shard-*.parquet"))


def test_broken_shards_are_set_aside_and_recomputed(
    test_set, tmp_path, demo_models, writes, caplog
):
    out = tmp_path / "out.parquet"
    first = _generate(test_set, out, demo_models)
    shards = _shards(out)
    broken_rows = sorted(read_table(shards[1])["row_id"])
    shards[1].write_text("not parquet")
    foreign = read_table(shards[3])
    foreign_rows = sorted(foreign["row_id"])
    write_table(foreign, shards[3], {"resume_key_sha256": "0" * 64})  # another key's shard
    writes.clear()
    with caplog.at_level(logging.WARNING, logger="imhibench"):
        again = _generate(test_set, out, demo_models)
    assert _rows(writes) == sorted(broken_rows + foreign_rows)
    assert f"set aside {len(foreign_rows)} saved row(s) in 2 shard(s)" in caplog.text
    assert "1 shard(s) unreadable (" in caplog.text
    assert "1 shard(s) changed: resume key unknown" in caplog.text
    assert [p.name for p in _stale(out)] == sorted([shards[1].name, shards[3].name])
    pd.testing.assert_frame_equal(again, first)


def _edited_generate_code(tmp_path, module: str = "hf.py", old: str = "skip_special_tokens=True",
                          new: str = "skip_special_tokens=False"):  # fmt: skip
    """The hash of a copy of imhibench/generate with one line of ``module`` changed."""

    import imhibench.generate

    copy = tmp_path / "generate_copy"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(Path(imhibench.generate.__file__).parent, copy)
    source = copy / module
    assert old in source.read_text()
    source.write_text(source.read_text().replace(old, new))
    return generate_code_sha256(copy)


@pytest.mark.parametrize(
    ("change", "changed"),
    [
        (
            {"settings": {**SETTINGS, "max_new_tokens": 6}},
            'settings {"chat_template": false, "dtype": "float32", "max_new_tokens": 8} -> ',
        ),
        ({"seed": 3}, "seed 0 -> 3"),
        ({"edit_code": True}, "generate_code_sha256"),
        ({"device_name": "cuda:0 NVIDIA H100 80GB HBM3"}, 'device "cpu" -> "cuda:0 NVIDIA H100'),
    ],
)
def test_stale_shards_are_set_aside_not_deleted(
    test_set, tmp_path, demo_models, writes, caplog, monkeypatch, change, changed
):
    """A SLURM rerun on another GPU model, an edit of an engine, other settings: the saved
    shards are moved to stale-<time>/ (GPU hours: never deleted) and the output regenerated."""
    out = tmp_path / "out.parquet"
    first = _generate(test_set, out, demo_models)
    saved = {p.name: p.read_bytes() for p in _shards(out)}
    if change.pop("edit_code", False):
        edited = _edited_generate_code(tmp_path)
        assert edited != generate_code_sha256()
        monkeypatch.setattr("imhibench.generate.stage.generate_code_sha256", lambda: edited)
    if name := change.pop("device_name", None):
        monkeypatch.setattr("imhibench.generate.stage._device_label", lambda device: name)
    writes.clear()
    with caplog.at_level(logging.INFO, logger="imhibench"):
        again = _generate(test_set, out, demo_models, **change)
    assert f"set aside {ROWS} saved row(s) in {N_SHARDS} shard(s) as stale-" in caplog.text
    assert f"{N_SHARDS} shard(s) changed: {changed}" in caplog.text
    assert "resuming" not in caplog.text
    assert _rows(writes) == [f"T-{i:05d}" for i in range(ROWS)]
    assert len(_shards(out)) == N_SHARDS  # only the new ones
    assert {p.name: p.read_bytes() for p in _stale(out)} == saved  # every old shard kept
    assert len(again) == len(first) == ROWS


def test_a_lost_manifest_reuses_every_shard(test_set, tmp_path, demo_models, writes, caplog):
    """Each shard carries its own key digest: a deleted or corrupt manifest drops nothing."""
    out = tmp_path / "out.parquet"
    first = _generate(test_set, out, demo_models)
    out.unlink()
    for manifest in (None, "{not json"):
        if manifest is None:
            (shard_dir(out) / "manifest.json").unlink()
        else:
            (shard_dir(out) / "manifest.json").write_text(manifest)
        writes.clear()
        with caplog.at_level(logging.INFO, logger="imhibench"):
            again = _generate(test_set, out, demo_models)
        assert writes == []
        assert "set aside" not in caplog.text
        assert "every row is saved" in caplog.text
        assert _stale(out) == []
        pd.testing.assert_frame_equal(again, first)


def test_identical_refetch_reuses_every_shard_and_a_changed_query_only_its_row(
    test_set, tmp_path, demo_models, writes, caplog, monkeypatch
):
    """Issue 18 item 1: the test set is rewritten with the same content but another file
    digest (its provenance records when it was written, as the fetch stage's once did) and the
    checkpoint re-fetched byte for byte (new mtimes): every shard of a killed job is reused.
    Then two queries change: those two rows, and only they, are generated again."""
    out = tmp_path / "out.parquet"
    demo_models = {"causal": str(shutil.copytree(demo_models["causal"], tmp_path / "model"))}
    write = ShardStore.write  # the `writes` spy

    def stop_after_three(self, table, *args):
        path = write(self, table, *args)
        if len(writes) == 3:
            raise GenerationStopped(signal.SIGTERM)  # as a kill after the third shard
        return path

    with monkeypatch.context() as patch, pytest.raises(GenerationStopped):
        patch.setattr(ShardStore, "write", stop_after_three)
        _generate(test_set, out, demo_models)
    first = _rows(writes)
    assert len(first) == 3 * SETTINGS["shard_rows"]
    table = read_table(test_set)
    before = sha256_file(test_set)
    write_table(table, test_set, {"created_at": "a later fetch"})  # same rows, other bytes
    assert sha256_file(test_set) != before
    for file in Path(demo_models["causal"]).iterdir():
        os.utime(file, (time.time() + 60, time.time() + 60))
    writes.clear()
    with caplog.at_level(logging.INFO, logger="imhibench"):
        fresh = _generate(test_set, out, demo_models)
    assert "discarding" not in caplog.text
    assert f"resuming: {len(first)} of {ROWS} rows already saved" in caplog.text
    assert sorted(_rows(writes)) == sorted(set(table["row_id"]) - set(first))
    edited = [first[0], table["row_id"].iloc[-1]]
    table.loc[table["row_id"].isin(edited), "query"] = "Post: edited. Question: stressed?"
    write_table(table, test_set)
    writes.clear()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="imhibench"):
        again = _generate(test_set, out, demo_models)
    assert sorted(_rows(writes)) == sorted(edited)
    assert "2 saved row(s) were made for another query" in caplog.text
    kept = ~fresh["row_id"].isin(edited)
    assert again[kept].equals(fresh[kept])


def test_generate_code_hash_follows_the_sources(tmp_path):
    assert _edited_generate_code(tmp_path) != generate_code_sha256()
    assert generate_code_sha256() == generate_code_sha256()


@pytest.mark.parametrize(
    ("module", "old"),
    [
        ("api.py", '"""'),
        ("api_stage.py", '"""'),
        ("journal.py", '"""'),
        ("lock.py", '"""'),
        ("shards.py", '"""'),
        ("stage.py", '"""'),
        ("signals.py", '"""'),
        ("memory.py", '"""'),
    ],
)
def test_an_edit_of_a_module_that_cannot_change_an_answer_keeps_the_key(tmp_path, module, old):
    """API path, lock, journal, shard bookkeeping, progress: editing them keeps GPU work."""
    assert _edited_generate_code(tmp_path, module, old, '"""Edited. ') == generate_code_sha256()


def test_every_generate_module_is_classified_for_the_code_digest():
    """A new module of imhibench/generate must be put in ANSWER_MODULES or NOT_ANSWER_MODULES
    (with the reason), so that none is left out of the resume key unnoticed."""
    import imhibench.generate
    from imhibench.generate.stage import ANSWER_MODULES, NOT_ANSWER_MODULES

    present = {p.name for p in Path(imhibench.generate.__file__).parent.glob("*.py")}
    assert not set(ANSWER_MODULES) & set(NOT_ANSWER_MODULES)
    assert sorted(ANSWER_MODULES + NOT_ANSWER_MODULES) == sorted(present)


@pytest.mark.parametrize(
    "execution",
    [{"shard_rows": 5}, {"batch_tokens": 2048}, {"max_batch_size": 2}],
)
def test_execution_settings_keep_saved_rows(
    test_set, tmp_path, demo_models, writes, caplog, execution
):
    assert set(execution) <= EXECUTION_SETTINGS
    out = tmp_path / "out.parquet"
    first = _generate(test_set, out, demo_models, rows=10)
    out.unlink()
    writes.clear()
    with caplog.at_level(logging.INFO, logger="imhibench"):
        again = _generate(test_set, out, demo_models, {**SETTINGS, **execution})
    assert "stale" not in caplog.text
    assert "resuming: 10 of 14 rows already saved" in caplog.text
    assert _rows(writes) == [f"T-{i:05d}" for i in range(10, ROWS)]  # only the new rows
    pd.testing.assert_frame_equal(again.head(10), first)


def test_bad_shard_settings(test_set, tmp_path, demo_models):
    with pytest.raises(ImhiBenchError, match="shard_rows must be an integer >= 1"):
        _generate(test_set, tmp_path / "o.parquet", demo_models, {**SETTINGS, "shard_rows": 0})
    with pytest.raises(ImhiBenchError, match="generation settings .*top_k"):
        _generate(test_set, tmp_path / "o.parquet", demo_models, {**SETTINGS, "top_k": 5})
    assert not (tmp_path / "o.parquet").exists()


def test_rows_subset_and_default_shard_size(test_set, tmp_path, demo_models, writes):
    settings = {k: v for k, v in SETTINGS.items() if k != "shard_rows"}
    table = _generate(test_set, tmp_path / "o.parquet", demo_models, settings, rows=5)
    assert table["row_id"].tolist() == [f"T-{i:05d}" for i in range(5)]
    assert len(writes) == 1
    assert read_provenance(tmp_path / "o.parquet")["shard_rows"] == 256


def test_progress_line():
    now = [0.0]
    progress = Progress("m", total=100, done=20, interval_s=10, clock=lambda: now[0])
    now[0] = 5.0
    progress.batch(10, 500)
    assert progress.last == 0.0  # not logged yet
    now[0] = 12.0
    progress.batch(10, 500)
    assert progress.last == 12.0
    assert progress.line() == (
        "m: 40/100 rows (40.0%), 1.67 rows/s, 83.3 output tokens/s, about 0:00:36 left"
    )
    assert "unknown" in Progress("m", total=3).line()


def test_stop_signal_raises_or_waits_for_a_write():
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(GenerationStopped) as stopped, StopOnSignal():
        os.kill(os.getpid(), signal.SIGTERM)
        pytest.fail("no stop")
    assert stopped.value.code == 128 + signal.SIGTERM and stopped.value.signal_name == "SIGTERM"
    finished = []
    with pytest.raises(GenerationStopped), StopOnSignal() as stop, stop.deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        finished.append(True)  # the block runs to its end first
    assert finished == [True]
    assert signal.getsignal(signal.SIGTERM) is previous


def test_bart_past_its_positions_finishes_with_capped_answers(
    test_set, tmp_path, demo_models, caplog
):
    """BART has 1024 learned decoder positions: 1100 forced new tokens used to crash."""
    spec = {"kind": "seq2seq", "split": "completion"}
    settings = {**SETTINGS, "max_new_tokens": 1100, "min_new_tokens": 1100}
    out = tmp_path / "bart.parquet"
    with caplog.at_level(logging.WARNING, logger="imhibench"):
        table = run_generate(str(test_set), str(out), "bart", spec, demo_models["seq2seq-bart"],
                             None, None, settings, rows=2, device="cpu")  # fmt: skip
    assert table["n_output_tokens"].tolist() == [1024, 1024]
    assert caplog.text.count("does not fit the decoder's 1024 learned positions") == 1
    provenance = read_provenance(out)
    assert provenance["max_new_tokens_cap"] == 1024
    assert provenance["generation_settings"]["max_new_tokens"] == 1100
    # T5's relative positions set no cap.
    t5 = load_backend("seq2seq", model_dir=demo_models["seq2seq-t5"], device="cpu",
                      settings=GenerationSettings(max_new_tokens=1100))  # fmt: skip
    assert t5.max_new_tokens_cap is None and t5.generation_config.max_new_tokens == 1100


def test_a_job_whose_shards_were_taken_over_writes_no_output(
    test_set, tmp_path, demo_models, monkeypatch
):
    """An orphaned job still running while a rerun with other settings took over its shards."""
    out = tmp_path / "out.parquet"
    write = ShardStore.write

    def write_then_taken_over(self, table, provenance):
        path = write(self, table, provenance)
        write_json({"key": {"settings": "other"}, "info": {}}, shard_dir(out) / "manifest.json")
        return path

    monkeypatch.setattr(ShardStore, "write", write_then_taken_over)
    with pytest.raises(ImhiBenchError, match="another run with other inputs took over"):
        _generate(test_set, out, demo_models, rows=3)
    assert not out.exists()


def test_a_directory_without_a_model_is_named_by_its_config_key_and_nothing_is_written(
    test_set, tmp_path
):
    """A `path:` that exists but holds no model: one line naming the key, before any shard
    directory (and its manifest.json) is made."""
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    (empty / "config.json").write_text('{"hidden_size": 8}')
    out = tmp_path / "out" / "T.parquet"
    spec = {"kind": "causal", "split": "instruction", "path": str(empty)}
    with pytest.raises(ImhiBenchError) as error:
        run_generate(str(test_set), str(out), "tiny", spec, str(empty), None, None, SETTINGS,
                     rows=None, device="cpu")  # fmt: skip
    assert str(error.value) == (
        f"model_catalog.tiny.path={empty}: not a Hugging Face model directory "
        "(config.json has no model_type)"
    )
    assert not shard_dir(out).exists() and not out.exists()
    lora = {"kind": "lora", "split": "instruction", "path": str(empty),
            "base": {"hub_id": "org/base", "revision": "main"}}  # fmt: skip
    with pytest.raises(ImhiBenchError, match=r"^model_catalog.tiny.path=.*: not a PEFT adapter"):
        run_generate(str(test_set), str(out), "tiny", lora, str(empty), str(empty), None,
                     SETTINGS, rows=None, device="cpu")  # fmt: skip


def test_the_resume_key_of_a_vllm_job_leaves_cuda_uninitialised(
    test_set, tmp_path, demo_models, monkeypatch
):
    """vLLM started in a process that has initialised CUDA switches its engine core to
    `spawn`, which re-runs the Snakemake script (vLLM docs, design/multiprocessing.md). Up to
    vLLM's boundary (no GPU here): torch's CUDA initialisation is refused, the GPU name comes
    from a child process (stubbed), and the backend is loaded with CUDA still uninitialised."""
    import subprocess

    import torch

    from imhibench.generate.base import GenerationResult
    from imhibench.generate.stage import _ShardedJob

    def refuse(*args, **kwargs):
        raise AssertionError("CUDA initialised in the job's process before vLLM started")

    monkeypatch.setattr(torch.cuda, "_lazy_init", refuse)
    monkeypatch.setattr(torch.cuda, "init", refuse)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    children, real_run = [], subprocess.run

    def child(command, **kwargs):
        if command[:2] != [sys.executable, "-c"]:
            return real_run(command, **kwargs)  # git, for provenance
        children.append(command)
        return subprocess.CompletedProcess(command, 0, stdout="NVIDIA H200\n", stderr="")

    monkeypatch.setattr(subprocess, "run", child)

    class VLLMStandIn:  # what the job sees of VLLMGenerator
        def prompt_lengths(self, queries):
            return [len(q) for q in queries]

        def generate(self, queries, on_batch=None):
            return GenerationResult([f"answer {len(q)}" for q in queries], [2] * len(queries))

    cuda_at_load = []

    def load_backend(self):
        cuda_at_load.append(torch.cuda.is_initialized())
        return VLLMStandIn()

    monkeypatch.setattr(_ShardedJob, "_load_backend", load_backend)
    out = tmp_path / "out.parquet"
    spec = {"kind": "causal", "split": "instruction"}
    settings = {**SETTINGS, "engine": "vllm"}
    table = run_generate(str(test_set), str(out), "tiny", spec, demo_models["causal"], None,
                         None, settings, rows=None, device="cuda:0")  # fmt: skip
    assert len(table) == ROWS
    assert cuda_at_load == [False]
    assert len(children) == 1  # read once per job
    assert children[0][-1] == "cuda:0"
    assert read_provenance(out)["device_name"] == "cuda:0 NVIDIA H200"


def test_the_gpu_name_child_reports_its_failure():
    """The child process really runs (here, without a GPU, torch refuses cuda:0): its error
    comes back naming the device, not a blank GPU name in the resume key."""
    from imhibench.generate.stage import _device_label

    assert _device_label("cpu") == "cpu"
    with pytest.raises(ImhiBenchError, match=r"could not read the name of GPU cuda:0 \(exit"):
        _device_label("cuda:0")


def test_the_generate_script_starts_nothing_when_a_spawned_process_imports_it(monkeypatch):
    """A process started with `spawn` imports the main script as `__mp_main__`: the script must
    not reopen the job's log, take the output's lock or run the job again. Snakemake runs it
    with `python <script>`, as `__main__`: then it runs the job."""
    import runpy
    from types import SimpleNamespace

    from support import REPO

    import imhibench.common.execution as execution
    import imhibench.common.logs as logs
    import imhibench.generate.stage as stage

    calls = []
    for module, name in ((logs, "configure_job"), (logs, "announce_job"),
                         (stage, "run_generate")):  # fmt: skip
        monkeypatch.setattr(module, name, lambda *a, _name=name, **k: calls.append(_name))
    monkeypatch.setattr(execution, "get_model_spec", lambda config, model: {"kind": "causal"})
    monkeypatch.setattr(execution, "get_generation_settings", lambda config, model, s: s)
    monkeypatch.setattr(sys, "path", list(sys.path))
    job = SimpleNamespace(
        scriptdir=str(REPO / "scripts"), log=["job.log"], threads=1, output=["out.parquet"],
        wildcards=SimpleNamespace(model="m", dataset="d"), config={"device": "cpu"},
        input=SimpleNamespace(test_set="t.parquet", get=lambda name: None),
        params=SimpleNamespace(settings={"dtype": "auto"}, rows=None, seed=0),
    )  # fmt: skip
    script = str(REPO / "scripts" / "generate.py")
    runpy.run_path(script, init_globals={"snakemake": job}, run_name="__mp_main__")
    assert calls == []
    runpy.run_path(script, init_globals={"snakemake": job}, run_name="__main__")
    assert calls == ["configure_job", "announce_job", "run_generate"]
