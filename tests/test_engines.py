"""Generation engines (static, continuous, upstream, vllm), decoding modes, GPU memory budgets."""

from __future__ import annotations

import itertools
import json
import logging
import shutil
import sys
import types
from pathlib import Path

import pandas as pd
import pytest
from support import require_mirror

from imhibench.common.errors import ImhiBenchError
from imhibench.generate import GenerationSettings, load_backend
from imhibench.generate.base import (
    EXECUTION_SETTINGS,
    answer_settings,
    cut_at_eos,
    resolve_engine,
)
from imhibench.generate.batching import OOMBackoff
from imhibench.generate.continuous import ContinuousGenerator
from imhibench.generate.engines import device_map
from imhibench.generate.memory import kv_bytes_per_token, token_budget
from imhibench.generate.upstream import UpstreamGenerator

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FP32 = {"dtype": "float32", "batch_tokens": 200_000, "max_batch_size": 64}


def _imhi_queries(n: int) -> list[str]:
    """``n`` real IMHI queries of 90 to 2000 characters (DR and SAD, in file order)."""
    mirror = require_mirror() / "test_data/test_instruction"
    queries = pd.concat([pd.read_csv(mirror / f"{d}.csv")["query"] for d in ("DR", "SAD")])
    queries = queries[queries.str.len() <= 2000]  # long enough to differ, quick on CPU
    ranked = queries.sort_values(key=lambda q: q.str.len()).tolist()
    picks = [ranked[round(k * (len(ranked) - 1) / (n - 1))] for k in range(n)]
    order = {q: i for i, q in enumerate(queries.tolist())}
    return sorted(picks, key=order.__getitem__)  # file order, lengths mixed


# Where the answers to `queries` stop: the length of each answer (its EOS is the next token; 24:
# none within 24 tokens). The batching tests depend on this shape: the widest prompt (query 2)
# stops early so that its padding can be cut, answers stop at different steps, some run to the
# cap. The static engine looks for finished rows every `EVICT_EVERY` (3, in these tests) steps,
# so an answer may end anywhere within its block of 3 (lengths 0-2, 3-5, ...): same shapes.
# The first shape that a machine's answers allow is taken; each passes every test here.
STOPS = {
    "causal": [[9, 24, 4, 24, 7, 24, 24, 13, 10, 8], [24, 9, 4, 13, 10, 24, 24, 24, 8, 7]],
    "lora": [[9, 5, 4, 24, 24, 24, 9, 24, 24, 24], [5, 9, 4, 9, 24, 24, 24, 24, 24, 24]],
}
BLOCK = 3


def eos_for_stops(answers: list[list[int]], stops: list[int]) -> list[int]:
    """EOS token ids that end each greedy answer (made with no EOS) within the block of 3 of its
    length in ``stops`` (``len(answer)``: never).

    Greedy answers differ between CPUs (the tiny random models' logits are close), so one
    frequent token, as picked before, gave each machine another shape, and some none that the
    batching tests need. Here a row's EOS is one of its own tokens in its block that occurs in
    no answer before that answer's block: every machine gets the same shape.
    """
    starts = [
        BLOCK * (s // BLOCK) if s < len(a) else len(a) for a, s in zip(answers, stops, strict=True)
    ]

    def ends_nothing_early(token: int) -> bool:
        return all(
            token not in answer[:start] for answer, start in zip(answers, starts, strict=True)
        )

    eos = []
    for answer, start in zip(answers, starts, strict=True):
        block = answer[start : start + BLOCK]  # empty: never ends
        token = next((t for t in block if ends_nothing_early(t)), None)
        if token is None and block:
            raise ValueError(f"each of {block} ends an answer early")
        eos += [token] if block else []
    got = [len(cut_at_eos(a, set(eos))) for a in answers]
    assert [g // BLOCK for g in got] == [s // BLOCK for s in stops], (got, stops)
    return eos


def _with_eos(models: dict, kind: str, directory: Path, eos: int | list[int]) -> dict:
    """``models`` with the checkpoint of ``kind`` (for ``lora``: its base) copied into
    ``directory`` with EOS ids ``eos``."""
    name = "lora-base" if kind == "lora" else "causal"
    copy = shutil.copytree(models[name], directory)
    for file in ("config.json", "generation_config.json"):
        data = json.loads((copy / file).read_text())
        data["eos_token_id"] = eos
        (copy / file).write_text(json.dumps(data))
    return {**models, name: str(copy)}


def _with_eos_at_stops(models: dict, kind: str, tmp_path: Path, queries: list[str]) -> dict:
    """``models`` with EOS ids that end the greedy answers at ``STOPS[kind]`` (for ``lora``: set
    in the base, picked from the adapter's answers).

    The answers are first made with an EOS id past the vocabulary (no answer stops early: the
    real EOS of a tiny random model may come up on one CPU and not on another), then cut by
    tokens of their own, without touching the decoding code.
    """
    vocab = json.loads((Path(models["causal"]) / "config.json").read_text())["vocab_size"]
    endless = _with_eos(models, kind, tmp_path / f"{kind}-endless", vocab)
    answers = _load(endless, kind, max_new_tokens=24).generate_token_ids(queries)
    for stops in STOPS[kind]:
        try:
            eos = eos_for_stops(answers, stops)
        except ValueError:
            continue
        return _with_eos(models, kind, tmp_path / f"{kind}-eos", eos)
    raise AssertionError(f"no shape of STOPS[{kind!r}] fits these greedy answers: {answers}")


@pytest.fixture(scope="module")
def queries() -> list[str]:
    return _imhi_queries(10)


@pytest.fixture(scope="module")
def eos_models(demo_models, queries, tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("eos")
    models = _with_eos_at_stops(demo_models, "causal", tmp, queries)
    return _with_eos_at_stops(models, "lora", tmp, queries)


def _load(models, kind: str, **settings):
    settings = GenerationSettings(**{**FP32, **settings})
    if kind == "lora":
        return load_backend(
            "lora", model_dir=models["lora-adapter"], base_model_dir=models["lora-base"],
            settings=settings, device="cpu",
        )  # fmt: skip
    return load_backend("causal", model_dir=models["causal"], settings=settings, device="cpu")


# --- continuous batching ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["causal", "lora"])
def test_continuous_equals_one_at_a_time_greedy(eos_models, queries, kind):
    static = _load(eos_models, kind, max_new_tokens=24, engine="static")
    reference = [static.generate_token_ids([q])[0] for q in queries]
    lengths = [len(x) for x in reference]
    assert len({n for n in lengths if n < 24}) >= 2, lengths  # EOS at different steps
    assert 24 in lengths  # and answers that run to the cap
    continuous = _load(eos_models, kind, max_new_tokens=24, engine="continuous")
    assert isinstance(continuous, ContinuousGenerator)
    assert continuous.generate_token_ids(queries) == reference
    texts = continuous.generate(queries).texts
    assert texts == [static.tokenizer.decode(x, skip_special_tokens=True) for x in reference]


def test_continuous_in_the_sharded_stage(eos_models, tmp_path):
    from imhibench.common.io import read_provenance, write_table
    from imhibench.generate.stage import run_generate

    queries = _imhi_queries(6)
    test_set = tmp_path / "T.parquet"
    ids = [f"T-{i}" for i in range(6)]
    write_table(pd.DataFrame({"row_id": ids, "query": queries, "gold_answer": "x"}), test_set)
    spec = {"kind": "causal", "split": "instruction"}
    settings = {"max_new_tokens": 12, "dtype": "float32", "shard_rows": 4}
    out = tmp_path / "out.parquet"
    table = run_generate(str(test_set), str(out), "tiny", spec, eos_models["causal"], None, None,
                         {**settings, "engine": "continuous"}, rows=None, device="cpu")  # fmt: skip
    static = _load(eos_models, "causal", max_new_tokens=12, engine="static")
    assert table["response"].tolist() == static.generate(queries).texts
    assert read_provenance(out)["generation_settings"]["engine"] == "continuous"


def test_continuous_keeps_sdpa_where_flash_attention_is_installed(eos_models, queries, monkeypatch):
    """transformers switches continuous batching to FlashAttention when it is installed (no
    float32; other numerics than the static engine's): the engine turns that off."""
    from transformers.generation.continuous_batching import continuous_api

    static = _load(eos_models, "causal", max_new_tokens=12, engine="static")
    reference = static.generate_token_ids(queries[:4])
    monkeypatch.setattr(continuous_api, "is_flash_attn_3_available", lambda **kw: False)
    monkeypatch.setattr(continuous_api, "is_flash_attn_2_available", lambda **kw: True)
    continuous = _load(eos_models, "causal", max_new_tokens=12, engine="continuous")
    switched = []
    monkeypatch.setattr(continuous.model, "set_attn_implementation", switched.append)
    assert continuous.generate_token_ids(queries[:4]) == reference
    assert switched == [] and continuous.model.config._attn_implementation == "sdpa"


def test_continuous_refuses_a_model_spread_over_several_gpus(demo_models):
    """Its paged cache lives on one device; layers on another GPU could not write to it."""
    from imhibench.generate.causal import load_causal_model, load_tokenizer

    settings = GenerationSettings(engine="continuous")
    model = load_causal_model(demo_models["causal"], settings, "cpu")
    model.hf_device_map = {"model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": 1}
    with pytest.raises(ImhiBenchError, match=r"engine 'continuous' runs on one device, but the "
                       r"model is spread over \['0', '1'\].*paged KV cache"):  # fmt: skip
        ContinuousGenerator(model, load_tokenizer(demo_models["causal"]), settings, "cpu")


def test_continuous_out_of_memory_lowers_the_memory_share_not_the_prompts(
    eos_models, queries, monkeypatch
):
    """An out-of-memory reported by transformers: the whole shard again, with half the share
    of the free memory for the paged cache (fewer prompts would not lower the peak), and the
    cached memory released once the failed call's frames are gone."""
    import weakref

    import torch

    continuous = _load(eos_models, "causal", max_new_tokens=12, engine="continuous")
    reference = continuous.generate_token_ids(queries)
    generate_batch = continuous.model.generate_batch
    calls, alive_at_release, failed = [], [], []

    class Activations:  # what the failed call's frame holds when it runs out of memory
        pass

    def tight_memory(prompts, continuous_batching_config, **kwargs):
        calls.append((len(prompts), continuous_batching_config.max_memory_percent))
        if len(calls) < 3:
            activations = Activations()
            failed.append(weakref.ref(activations))
            raise torch.OutOfMemoryError("CUDA out of memory (fake)")
        monkeypatch.setattr(torch.cuda, "is_available", cuda_available)  # CPU again
        return generate_batch(prompts, continuous_batching_config=continuous_batching_config,
                              **kwargs)  # fmt: skip

    monkeypatch.setattr(continuous.model, "generate_batch", tight_memory)
    cuda_available = torch.cuda.is_available
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # empty_cache is called
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: alive_at_release.append(failed[-1]()))
    assert continuous.generate_token_ids(queries) == reference
    assert calls == [(10, None), (10, 0.45), (10, 0.225)]  # transformers' default first
    assert alive_at_release == [None, None]
    calls.clear()
    continuous.memory_share = 0.08  # the next halving is below MIN_MEMORY_SHARE: stop
    with pytest.raises(ImhiBenchError, match="out of memory with 8% of the free GPU memory"):
        continuous.generate_token_ids(queries[:2])


# --- upstream-exact loop ---------------------------------------------------------------------


def _plain_upstream_loop(model_dir: str, queries: list[str], max_length: int) -> list[str]:
    """IMHI.py's generate_response, written plainly (Auto classes: the demo is no SentencePiece)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert model.dtype == torch.float32
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    tokenizer.pad_token = tokenizer.unk_token
    responses = []
    for i in range(0, len(queries), 8):
        inputs = tokenizer(queries[i : min(i + 8, len(queries))], return_tensors="pt", padding=True)
        generate_ids = model.generate(
            inputs.input_ids, attention_mask=inputs.attention_mask, max_length=max_length
        )
        for j in range(generate_ids.shape[0]):
            truc_ids = generate_ids[j][len(inputs.input_ids[j]) :]
            responses.append(
                tokenizer.decode(
                    truc_ids, skip_special_tokens=True, spaces_between_special_tokens=False
                )
            )
    return responses


def _upstream(model_dir: str, max_length: int, **settings) -> UpstreamGenerator:
    from imhibench.generate.causal import load_causal_model, load_tokenizer

    settings = GenerationSettings(**{**FP32, "engine": "upstream", **settings})
    model = load_causal_model(model_dir, settings, "cpu")
    tokenizer = load_tokenizer(model_dir)
    return UpstreamGenerator(model, tokenizer, settings, "cpu", max_length=max_length)


def test_upstream_engine_equals_a_plain_upstream_loop(eos_models):
    queries = _imhi_queries(12)  # two batches: 8 + 4, prompt lengths mixed within each
    engine = _upstream(eos_models["causal"], max_length=1)
    width = max(len(x) for x in engine.encode(queries))
    max_length = width + 12  # upstream's budget: max_length minus each batch's padded width
    engine.generation_config.update(max_length=max_length)
    assert engine.model.dtype.itemsize == 4
    assert engine.prompt_lengths(queries) == [0] * 12  # shards keep file order
    expected = _plain_upstream_loop(eos_models["causal"], queries, max_length)
    result = engine.generate(queries)
    assert result.texts == expected
    assert len(set(result.n_output_tokens)) >= 3  # EOS at different steps, and capped rows


def test_fast_static_mode_equals_upstream_in_float32(eos_models):
    """Same answers, token for token, except where upstream's max_length cut one short."""
    queries = _imhi_queries(12)
    engine = _upstream(eos_models["causal"], max_length=1)
    width = max(len(x) for x in engine.encode(queries))
    engine.generation_config.update(max_length=width + 12)
    upstream = engine.generate_token_ids(queries)
    static = _load(eos_models, "causal", max_new_tokens=width + 12, engine="static")
    fast = static.generate_token_ids(queries)
    differ = []
    for i, (up, ours) in enumerate(zip(upstream, fast, strict=True)):
        # Upstream's cap is max_length minus the padded width of the query's batch of 8.
        ours_cut = ours[: len(up)]
        if ours_cut != up or (len(ours) < len(up)):
            differ.append(i)
    assert differ == [], f"{len(differ)} of {len(queries)} answers differ: {differ}"
    capped = [i for i, (up, ours) in enumerate(zip(upstream, fast, strict=True)) if ours != up]
    assert capped  # the cut by upstream's padded-prompt max_length happens here
    assert all(len(fast[i]) > len(upstream[i]) for i in capped)


def test_upstream_lora_runs_the_adapter_unmerged(eos_models):
    from peft import PeftModel

    backend = _load(eos_models, "lora", engine="upstream")
    assert isinstance(backend, UpstreamGenerator) and isinstance(backend.model, PeftModel)
    merged = _load(eos_models, "lora", engine="static")
    assert not isinstance(merged.model, PeftModel)


def test_upstream_engine_settings_are_checked(demo_models, tmp_path):
    from imhibench.common.io import write_table
    from imhibench.generate.stage import run_generate

    write_table(pd.DataFrame({"row_id": ["a"], "query": ["hi"], "gold_answer": "x"}),
                tmp_path / "T.parquet")  # fmt: skip

    with pytest.raises(ImhiBenchError, match="float32"):
        GenerationSettings(engine="upstream", dtype="bfloat16")
    with pytest.raises(ImhiBenchError, match="decoding 'checkpoint' needs engine"):
        GenerationSettings(engine="continuous", decoding="checkpoint")
    with pytest.raises(ImhiBenchError, match="engine 'nope'"):
        GenerationSettings(engine="nope")
    with pytest.raises(ImhiBenchError, match="chat_template"):
        _load(demo_models, "causal", engine="upstream", chat_template=True)
    with pytest.raises(ImhiBenchError, match="multiple of 8"):
        run_generate(str(tmp_path / "T.parquet"), str(tmp_path / "o.parquet"), "m",
                     {"kind": "causal", "split": "instruction"}, demo_models["causal"], None,
                     None, {"engine": "upstream", "shard_rows": 12}, rows=None,
                     device="cpu")  # fmt: skip


def test_engine_is_an_execution_setting_unless_it_changes_answers():
    assert {"shard_rows", "batch_tokens", "max_batch_size", "engine"} == EXECUTION_SETTINGS
    base = {"max_new_tokens": 8, "dtype": "float32", "shard_rows": 4, "batch_tokens": 9}
    answers = {"max_new_tokens": 8, "dtype": "float32"}
    assert answer_settings({**base, "engine": "static"}) == answers
    assert answer_settings({**base, "engine": "continuous"}) == answer_settings(base)
    assert answer_settings({**base, "engine": "upstream"})["engine"] == "upstream"
    assert answer_settings({**base, "engine": "vllm"})["engine"] == "vllm"
    assert resolve_engine("auto", "cpu") == resolve_engine("auto", "cuda:1") == "static"


# --- decoding: greedy by default, the checkpoint's on request --------------------------------


def _sampling_checkpoint(demo_models, tmp_path) -> str:
    copy = shutil.copytree(demo_models["causal"], tmp_path / "sampling")
    path = copy / "generation_config.json"
    config = json.loads(path.read_text())
    config.update(do_sample=True, temperature=0.6, top_p=0.9)  # as Llama-2-chat ships
    path.write_text(json.dumps(config))
    return str(copy)


def test_greedy_warns_when_the_checkpoint_samples_and_records_both(demo_models, tmp_path, caplog):
    model_dir = _sampling_checkpoint(demo_models, tmp_path)
    with caplog.at_level(logging.WARNING, logger="imhibench"):
        backend = load_backend("causal", model_dir=model_dir, device="cpu",
                               settings=GenerationSettings(max_new_tokens=6, **FP32))  # fmt: skip
    assert "asks for" in caplog.text and "'do_sample': True" in caplog.text
    assert "ignored: decoding greedily" in caplog.text
    record = backend.decoding_provenance
    assert record["decoding"] == "greedy"
    assert record["checkpoint_non_greedy"] == {"do_sample": True, "temperature": 0.6, "top_p": 0.9}
    assert record["used_generation_config"]["do_sample"] is False
    assert record["used_generation_config"]["max_new_tokens"] == 6
    json.dumps(record)  # goes into provenance.json as it is

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="imhibench"):
        _load(demo_models, "causal")  # a greedy checkpoint: nothing to warn about
    assert "asks for" not in caplog.text


def test_checkpoint_decoding_samples_as_upstream_seeded(demo_models, tmp_path):
    model_dir = _sampling_checkpoint(demo_models, tmp_path)
    queries = _imhi_queries(4)

    def run(seed: int):
        settings = GenerationSettings(decoding="checkpoint", seed=seed, **FP32)
        backend = load_backend("causal", model_dir=model_dir, settings=settings, device="cpu")
        backend.generation_config.update(max_length=max(backend.prompt_lengths(queries)) + 8)
        return backend, backend.generate_token_ids(queries)

    backend, first = run(seed=1)
    config = backend.generation_config
    assert config.do_sample and config.temperature == 0.6 and config.top_p == 0.9
    assert backend.decoding_provenance["decoding"] == "checkpoint"
    assert backend.decoding_provenance["used_generation_config"]["max_length"] == 2048
    assert backend.decoding_provenance["used_generation_config"]["do_sample"] is True
    assert run(seed=1)[1] == first  # seeded: reproducible
    assert run(seed=2)[1] != first  # and really sampling
    greedy = load_backend("causal", model_dir=model_dir, device="cpu",
                          settings=GenerationSettings(max_new_tokens=8, **FP32))  # fmt: skip
    assert greedy.generate_token_ids(queries) != first


def test_stage_provenance_records_decoding(demo_models, tmp_path):
    from imhibench.common.io import read_provenance, write_table
    from imhibench.generate.stage import run_generate

    model_dir = _sampling_checkpoint(demo_models, tmp_path)
    test_set = tmp_path / "T.parquet"
    write_table(pd.DataFrame({"row_id": ["a", "b"], "query": ["hi", "ok ok"], "gold_answer": "x"}),
                test_set)  # fmt: skip
    out = tmp_path / "out.parquet"
    run_generate(str(test_set), str(out), "m", {"kind": "causal", "split": "instruction"},
                 model_dir, None, None, {"max_new_tokens": 4, "dtype": "float32"}, rows=None,
                 device="cpu", seed=7)  # fmt: skip
    decoding = read_provenance(out)["decoding"]
    assert decoding["checkpoint_non_greedy"]["do_sample"] is True
    assert decoding["used_generation_config"]["do_sample"] is False
    assert decoding["seed"] == 7


# --- GPUs: device map, memory budget, OOM back-off, vLLM up to its boundary --------------------


def test_device_map_spreads_over_the_jobs_gpus(demo_models, monkeypatch):
    import transformers

    from imhibench.generate import causal, engines

    assert device_map("cuda", 2) == "auto"
    assert device_map("cuda", 1) == device_map("cuda", 0) == "cuda"
    assert device_map("cuda:1", 4) == "cuda:1" and device_map("cpu", 0) == "cpu"
    calls = []
    monkeypatch.setattr(
        transformers.AutoModelForCausalLM, "from_pretrained",
        lambda path, **kw: calls.append(kw),
    )  # fmt: skip
    monkeypatch.setattr(causal, "job_gpus", lambda: 2)
    causal.load_causal_model(demo_models["causal"], GenerationSettings(), "cuda")
    assert calls[-1]["device_map"] == "auto"
    assert calls[-1]["dtype"] == engines.model_dtype(GenerationSettings(), "cuda")
    monkeypatch.setattr(causal, "job_gpus", lambda: 1)
    causal.load_causal_model(demo_models["causal"], GenerationSettings(engine="upstream"), "cuda")
    assert calls[-1]["device_map"] == "cuda"
    assert str(calls[-1]["dtype"]) == "torch.float32"  # upstream: fp32 whatever auto says


# Values from the checkpoints' config.json files.
LLAMA2_7B = {"num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
             "hidden_size": 4096}  # fmt: skip
LLAMA2_13B = {"num_hidden_layers": 40, "num_attention_heads": 40, "num_key_value_heads": 40,
              "hidden_size": 5120}  # fmt: skip
VICUNA_33B = {"num_hidden_layers": 60, "num_attention_heads": 52, "hidden_size": 6656}


@pytest.mark.parametrize(
    ("shape", "fp32_bytes"),
    [
        (LLAMA2_7B, 32 * 2 * 32 * 128 * 4),  # 1 MiB per token
        (LLAMA2_13B, 40 * 2 * 40 * 128 * 4),  # 1.5625 MiB
        (VICUNA_33B, 60 * 2 * 52 * 128 * 4),  # no num_key_value_heads: all heads; 3.05 MiB
    ],
)
def test_kv_bytes_per_token_of_the_paper_models(shape, fp32_bytes):
    config = types.SimpleNamespace(**shape)
    assert kv_bytes_per_token(config, 4) == fp32_bytes
    assert kv_bytes_per_token(config, 2) == fp32_bytes // 2


def test_token_budget_from_free_memory():
    gib = 1024**3
    per_token = kv_bytes_per_token(types.SimpleNamespace(**LLAMA2_7B), 4)
    # 7B fp32 on an 80 GB H100: ~27 GB of weights leave ~52 GB.
    assert token_budget(52 * gib, per_token, margin=0.15) == int(52 * gib * 0.85) // per_token
    assert token_budget(52 * gib, per_token, margin=0.15) == 45260
    assert token_budget(52 * gib, per_token, margin=0.0) == 53248
    assert token_budget(100, per_token) == 1  # never zero: one row still gets tried


def test_oom_backoff_remembers_the_batch_size_that_worked():
    import torch

    tried = []

    def run(items):
        tried.append(len(items))
        if len(items) > 3:
            raise torch.OutOfMemoryError("fake")
        return [i * 10 for i in items]

    backoff = OOMBackoff()
    assert backoff.run(list(range(8)), run) == [i * 10 for i in range(8)]
    assert tried == [8, 4, 2, 2, 2, 2] and backoff.limit == 2
    tried.clear()
    assert backoff.run(list(range(5)), run) == [i * 10 for i in range(5)]
    assert tried == [2, 2, 1]  # never a larger batch again
    with pytest.raises(ImhiBenchError, match="single query"):
        OOMBackoff().run([1], lambda items: (_ for _ in ()).throw(torch.OutOfMemoryError("x")))


def test_oom_backoff_releases_cached_memory_after_leaving_the_handler(monkeypatch):
    """Inside ``except`` the traceback still holds the failed batch's frames: the cache is
    emptied after the handler, when they are gone."""
    import weakref

    import torch

    class Batch:  # stands for the failed batch's tensors
        pass

    failed, alive_at_release = [], []

    def run(items):
        batch = Batch()
        if len(items) > 1:
            failed.append(weakref.ref(batch))
            raise torch.OutOfMemoryError("fake")
        return items

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: alive_at_release.append(failed[-1]()))
    assert OOMBackoff().run([1, 2, 3, 4], run) == [1, 2, 3, 4]
    assert alive_at_release == [None, None]  # 4 then 2 failed; both freed before the release


# vLLM's own values (vllm/config/lora.py: MaxLoRARanks, LoRADType), kept apart from the engine's.
VLLM_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
VLLM_LORA_DTYPES = ("auto", "float16", "bfloat16")


def _fake_vllm(monkeypatch) -> dict:
    """A stand-in ``vllm`` module recording what the engine asks of it, and refusing what vLLM
    refuses: a ``max_lora_rank`` outside its ``Literal`` (pydantic's error), a ``lora_dtype``
    outside ``LoRADType``, LoRA weights (``lora_dtype`` auto = the model's dtype) that are not
    float16/bfloat16 (its LoRA kernels assert it), an adapter above ``max_lora_rank``."""
    seen: dict = {}

    class LLM:
        def __init__(self, *, dtype="auto", enable_lora=False, max_lora_rank=16,
                     lora_dtype="auto", **kwargs):  # fmt: skip
            if enable_lora and max_lora_rank not in VLLM_MAX_LORA_RANKS:
                raise ValueError(
                    "1 validation error for LoRAConfig\nmax_lora_rank\n  Input should be 1, 8, "
                    f"16, 32, 64, 128, 256, 320 or 512 [type=literal_error, input_value="
                    f"{max_lora_rank!r}]"
                )
            if enable_lora and lora_dtype not in VLLM_LORA_DTYPES:
                raise ValueError(f"1 validation error for LoRAConfig\nlora_dtype: {lora_dtype!r}")
            weights = dtype if lora_dtype == "auto" else lora_dtype
            if enable_lora and weights not in ("float16", "bfloat16"):
                raise AssertionError("assert weight.dtype in [torch.float16, torch.bfloat16]")
            seen["llm"] = dict(dtype=dtype, enable_lora=enable_lora, max_lora_rank=max_lora_rank,
                               lora_dtype=lora_dtype, **kwargs)  # fmt: skip

        def generate(self, prompts, params, lora_request=None, use_tqdm=True):
            seen.update(prompts=prompts, params=params, lora=lora_request)
            if lora_request is not None:
                config = Path(lora_request[2]) / "adapter_config.json"
                rank = json.loads(config.read_text())["r"]
                if rank > seen["llm"]["max_lora_rank"]:
                    raise ValueError(f"LoRA rank {rank} is greater than max_lora_rank")
            eos = seen["eos"]
            outputs = []
            for p in prompts:
                ids = [*p["prompt_token_ids"][:3], eos]
                outputs.append(
                    types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=ids)])
                )
            return outputs

    module = types.ModuleType("vllm")
    module.LLM = LLM
    module.SamplingParams = lambda **kw: kw
    lora = types.ModuleType("vllm.lora.request")
    lora.LoRARequest = lambda name, n, path: (name, n, path)
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.lora", types.ModuleType("vllm.lora"))
    monkeypatch.setitem(sys.modules, "vllm.lora.request", lora)
    return seen


def _on_fake_gpu(monkeypatch, models) -> dict:
    """The stand-in ``vllm``, "cuda" taken as given (no GPU here), 4 visible GPUs."""
    from imhibench.generate import causal, lora, vllm_engine
    from imhibench.generate.causal import load_tokenizer

    seen = _fake_vllm(monkeypatch)
    for module in (causal, lora):
        monkeypatch.setattr(module, "resolve_device", lambda device: device)
    seen["eos"] = load_tokenizer(models["causal"]).eos_token_id
    monkeypatch.setattr(vllm_engine, "job_gpus", lambda: 4)
    return seen


def test_vllm_engine_up_to_its_boundary(demo_models, monkeypatch):
    seen = _on_fake_gpu(monkeypatch, demo_models)
    settings = GenerationSettings(engine="vllm", max_new_tokens=32, seed=5)
    backend = load_backend("causal", model_dir=demo_models["causal"], settings=settings,
                           device="cuda")  # fmt: skip
    assert seen["llm"]["tensor_parallel_size"] == 4 and seen["llm"]["enable_prefix_caching"]
    assert seen["llm"]["dtype"] == "bfloat16" and seen["llm"]["seed"] == 5
    result = backend.generate(["hi there", "ok"])
    assert seen["params"] == {"temperature": 0, "max_tokens": 32, "min_tokens": 0, "seed": 5}
    prompt_ids = backend.tokenizer(["hi there", "ok"])["input_ids"]
    assert [p["prompt_token_ids"] for p in seen["prompts"]] == prompt_ids
    assert result.n_output_tokens == [min(3, len(x)) for x in prompt_ids]  # EOS cut off
    assert result.texts[1] == backend.tokenizer.decode(prompt_ids[1][:3], skip_special_tokens=True)

    lora = load_backend("lora", model_dir=demo_models["lora-adapter"], device="cuda",
                        base_model_dir=demo_models["lora-base"], settings=settings)  # fmt: skip
    assert seen["llm"]["enable_lora"] and seen["llm"]["model"] == demo_models["lora-base"]
    # the demo adapter has r=4, which vLLM's Literal refuses: the next allowed rank, 8
    assert (
        json.loads((Path(demo_models["lora-adapter"]) / "adapter_config.json").read_text())["r"]
        == 4
    )
    assert seen["llm"]["max_lora_rank"] == 8
    lora.generate(["hi"])
    assert seen["lora"] == ("adapter", 1, demo_models["lora-adapter"])
    with pytest.raises(ImhiBenchError, match="needs a GPU"):
        load_backend("causal", model_dir=demo_models["causal"], settings=settings, device="cpu")


@pytest.mark.parametrize(("rank", "allowed"), [(1, 1), (2, 8), (8, 8), (9, 16), (300, 320),
                                               (512, 512), (513, None)])  # fmt: skip
def test_vllm_max_lora_rank_is_the_next_rank_vllm_accepts(tmp_path, rank, allowed):
    from imhibench.generate.vllm_engine import max_lora_rank

    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": rank}))
    if allowed is None:
        with pytest.raises(ImhiBenchError, match="r=513 is above vLLM's largest, 512"):
            max_lora_rank(str(tmp_path))
    else:
        assert max_lora_rank(str(tmp_path)) == allowed in VLLM_MAX_LORA_RANKS


def test_vllm_lora_in_float32_is_refused_before_vllm_starts(demo_models, monkeypatch):
    """vLLM's LoRA kernels take float16/bfloat16 only: LoRA in float32 is a clear error (the
    config refuses it too, tests/test_config.py), not vLLM's assertion; causal models may."""
    seen = _on_fake_gpu(monkeypatch, demo_models)
    settings = GenerationSettings(engine="vllm", dtype="float32")
    with pytest.raises(ImhiBenchError, match=r"lora-adapter.*: engine 'vllm' serves LoRA adapters "
                       r"in float16 or bfloat16 only .*set dtype bfloat16"):  # fmt: skip
        load_backend("lora", model_dir=demo_models["lora-adapter"], device="cuda",
                     base_model_dir=demo_models["lora-base"], settings=settings)  # fmt: skip
    assert "llm" not in seen
    load_backend("causal", model_dir=demo_models["causal"], settings=settings, device="cuda")
    assert seen["llm"]["dtype"] == "float32"
    with pytest.raises(AssertionError):  # the stand-in refuses it as vLLM's kernels do
        sys.modules["vllm"].LLM(dtype="float32", enable_lora=True, max_lora_rank=8)


def test_vllm_missing_is_a_clear_error(demo_models, monkeypatch):
    from imhibench.generate import causal

    monkeypatch.setattr(causal, "resolve_device", lambda device: device)
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm raises ImportError
    settings = GenerationSettings(engine="vllm")
    with pytest.raises(ImhiBenchError, match=r"imhi-bench\[vllm\]"):
        load_backend("causal", model_dir=demo_models["causal"], settings=settings, device="cuda")


def test_upstream_engine_in_the_sharded_stage(demo_models, tmp_path, monkeypatch, caplog):
    """Shards of 8 in file order are upstream's batches; progress is logged; the OOM is named."""
    import torch

    from imhibench.common.io import read_provenance, write_table
    from imhibench.generate import decoding
    from imhibench.generate.stage import run_generate

    queries = _imhi_queries(12)
    test_set = tmp_path / "T.parquet"
    ids = [f"T-{i}" for i in range(12)]
    write_table(pd.DataFrame({"row_id": ids, "query": queries, "gold_answer": "x"}), test_set)
    engine = _upstream(demo_models["causal"], max_length=1)
    max_length = max(len(x) for x in engine.encode(queries)) + 6
    monkeypatch.setattr(decoding, "UPSTREAM_MAX_LENGTH", max_length)  # 2048 is slow on CPU
    out = tmp_path / "out.parquet"
    settings = {"dtype": "float32", "shard_rows": 8, "engine": "upstream"}
    with caplog.at_level(logging.INFO, logger="imhibench"):
        table = run_generate(str(test_set), str(out), "tiny", {"kind": "causal", "split": "x"},
                             demo_models["causal"], None, None, settings, rows=None,
                             device="cpu", progress_interval_s=0)  # fmt: skip
    engine.generation_config.update(max_length=max_length)
    assert table["response"].tolist() == engine.generate(queries).texts  # 8 + 4, file order
    assert caplog.text.count(" saved shard-") == 2 and "12/12 rows" in caplog.text
    assert read_provenance(out)["decoding"]["used_generation_config"]["max_length"] == max_length

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("fake")

    monkeypatch.setattr(engine.model, "generate", oom)
    with pytest.raises(ImhiBenchError, match="cannot be split"):
        engine.generate(queries[:2])


def test_seq2seq_models_refuse_other_engines(demo_models):
    settings = GenerationSettings(engine="continuous")
    with pytest.raises(ImhiBenchError, match="engine 'continuous' is for causal and lora"):
        load_backend("seq2seq", model_dir=demo_models["seq2seq-bart"], settings=settings)


def _forward_shapes(model) -> tuple[list[tuple[int, int]], object]:
    """(rows, cached + new columns) of each forward pass of ``model``, and the hook to remove."""
    shapes: list[tuple[int, int]] = []

    def record(module, args, kwargs):
        ids, mask = kwargs["input_ids"], kwargs.get("attention_mask")  # None: all ones
        shapes.append((ids.shape[0], ids.shape[1] if mask is None else mask.shape[1]))

    return shapes, model.register_forward_pre_hook(record, with_kwargs=True)


def _merges_seen(monkeypatch) -> list[list[tuple[int, int, tuple[int, ...]]]]:
    """Each ``rounds.merge`` call from now on, as (rows, width, steps done) of each part."""
    from imhibench.generate import rounds

    merges: list[list[tuple[int, int, tuple[int, ...]]]] = []
    merge = rounds.merge

    def spy(parts, pad_token_id):
        merges.append([(len(p), p.input_ids.shape[1], tuple(p.done)) for p in parts])
        return merge(parts, pad_token_id)

    monkeypatch.setattr(rounds, "merge", spy)
    return merges


# --- static: finished rows leave the batch -------------------------------------------------


@pytest.mark.parametrize("kind", ["causal", "lora"])
def test_static_evicting_finished_rows_equals_one_at_a_time_greedy(
    eos_models, queries, kind, monkeypatch
):
    from imhibench.generate import rounds

    monkeypatch.setattr(rounds, "EVICT_EVERY", 10**6)  # one generate call per query: the reference
    static = _load(eos_models, kind, max_new_tokens=24, engine="static")
    reference = [static.generate_token_ids([q])[0] for q in queries]
    lengths = [len(x) for x in reference]
    assert len({n for n in lengths if n < 24}) >= 2, lengths  # EOS at different steps
    assert 24 in lengths
    monkeypatch.setattr(rounds, "EVICT_EVERY", 3)
    shapes, hook = _forward_shapes(static.model)
    try:
        assert static.generate_token_ids(queries) == reference
    finally:
        hook.remove()
    rows = [n for n, _ in shapes]
    assert rows[0] == len(queries) and min(rows) < len(queries)  # finished rows left
    assert rows == sorted(rows, reverse=True)
    widths = [w for _, w in shapes]
    assert any(b < a for a, b in itertools.pairwise(widths))  # padding cut off


def test_static_keeps_one_generate_call_when_decoding_as_the_checkpoint(eos_models, monkeypatch):
    from imhibench.generate import rounds

    monkeypatch.setattr(rounds, "EVICT_EVERY", 3)
    static = _load(eos_models, "causal", max_new_tokens=24, engine="static")
    assert static._evicts()
    checkpoint = _load(eos_models, "causal", max_new_tokens=24, decoding="checkpoint")
    assert not checkpoint._evicts()
    assert _load(eos_models, "causal", max_new_tokens=24, min_new_tokens=2)._evicts()
    static.generation_config.min_length = 5
    assert not static._evicts()


def test_static_rounds_restart_in_smaller_batches_after_an_oom(eos_models, queries, monkeypatch):
    import torch

    from imhibench.generate import rounds

    monkeypatch.setattr(rounds, "EVICT_EVERY", 3)
    static = _load(eos_models, "causal", max_new_tokens=24)
    reference = static.generate_token_ids(queries)
    generate = static.model.generate
    sizes: list[int] = []

    def tight_memory(*args, **kwargs):  # a GPU that holds 3 rows
        sizes.append(kwargs["input_ids"].shape[0])
        if sizes[-1] > 3:
            raise torch.OutOfMemoryError("fake")
        return generate(*args, **kwargs)

    monkeypatch.setattr(static.model, "generate", tight_memory)
    finished: list[tuple[int, int]] = []
    assert static.generate_token_ids(queries, lambda n, t: finished.append((n, t))) == reference
    assert static.backoff.limit == 2 and sizes[:2] == [10, 5]
    assert max(sizes[2:]) <= 2  # never a larger batch again
    assert sum(n for n, _ in finished) == len(queries)
    assert sum(t for _, t in finished) == sum(len(a) for a in reference)


@pytest.mark.parametrize("kind", ["causal", "lora"])
def test_static_finishes_the_long_answers_of_all_batches_together(
    eos_models, queries, kind, monkeypatch
):
    from imhibench.generate import rounds

    monkeypatch.setattr(rounds, "EVICT_EVERY", 10**6)  # one generate call per query: the reference
    # Batches of 3; 23 steps in rounds of 3: merged rows have different steps left, and one
    # merged round can take a row past 23 (those tokens must be dropped).
    static = _load(eos_models, kind, max_new_tokens=23, max_batch_size=3)
    reference = [static.generate_token_ids([q])[0] for q in queries]
    monkeypatch.setattr(rounds, "EVICT_EVERY", 3)
    merges = _merges_seen(monkeypatch)
    finished: list[tuple[int, int]] = []
    shapes, hook = _forward_shapes(static.model)
    try:
        assert static.generate_token_ids(queries, lambda n, t: finished.append((n, t))) == reference
        parked_passes = len(shapes)
        monkeypatch.setattr(rounds, "parkable", lambda rows, min_new_tokens: False)
        assert static.generate_token_ids(queries) == reference
    finally:
        hook.remove()
    [parts] = merges  # one merged batch of the last answers of several batches
    assert len(parts) >= 2
    assert len({width for _, width, _ in parts}) == len(parts)  # left-padded to the widest
    assert len({done for *_, done in parts}) == len(parts)  # each at its own step
    assert parked_passes < len(shapes) - parked_passes  # fewer forward passes than without
    assert sum(n for n, _ in finished) == len(queries)
    assert sum(t for _, t in finished) == sum(len(a) for a in reference)


def test_parked_rows_hold_at_most_an_eighth_of_the_token_budget(eos_models, queries, monkeypatch):
    from imhibench.generate import rounds

    monkeypatch.setattr(rounds, "EVICT_EVERY", 3)
    widest = max(_load(eos_models, "causal").prompt_lengths(queries))
    budget = 4 * (widest + 23)
    static = _load(eos_models, "causal", max_new_tokens=23, max_batch_size=3, batch_tokens=budget)
    reference = _load(eos_models, "causal", max_new_tokens=23).generate_token_ids(queries)
    held: list[int] = []  # token slots of the rows parked when each batch starts
    run = static._run

    def checked_run(batch, ids, parked):
        held.append(sum(p.held() for p in parked))
        return run(batch, ids, parked)

    monkeypatch.setattr(static, "_run", checked_run)
    merges = _merges_seen(monkeypatch)
    assert static.generate_token_ids(queries) == reference
    assert 0 < max(held) <= budget // rounds.RESERVE_SHARE  # rows were parked, within the reserve
    assert len(merges) >= 2  # finished before the last batch as the reserve filled up


def _storage_bytes(root) -> int:
    """Bytes of every distinct tensor storage reachable from ``root`` (through attributes,
    lists, tuples and dicts): what holding ``root`` keeps allocated, views counted whole."""
    import torch

    seen_objects, storages, todo = set(), {}, [root]
    while todo:
        item = todo.pop()
        if id(item) in seen_objects:
            continue
        seen_objects.add(id(item))
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        elif isinstance(item, dict):
            todo.extend(item.values())
        elif isinstance(item, list | tuple):
            todo.extend(item)
        elif hasattr(item, "__dict__") and not isinstance(item, type):
            todo.extend(vars(item).values())
    return sum(storages.values())


def test_parked_rows_hold_what_the_planner_counts(eos_models, queries, monkeypatch):
    from imhibench.generate import rounds
    from imhibench.generate.memory import kv_bytes_per_token

    monkeypatch.setattr(rounds, "EVICT_EVERY", 3)
    static = _load(eos_models, "causal", max_new_tokens=23, max_batch_size=3)
    reference = _load(eos_models, "causal", max_new_tokens=23).generate_token_ids(queries)
    per_slot = kv_bytes_per_token(static.model.config, dtype_bytes=4)
    parked_seen: list[tuple[int, int]] = []  # (bytes the parked caches keep, planner's bytes)
    finish = static._finish_parked

    def measured_finish(parked):
        parked_seen.extend((_storage_bytes(p.cache), p.held() * per_slot) for p in parked)
        return finish(parked)

    monkeypatch.setattr(static, "_finish_parked", measured_finish)
    assert static.generate_token_ids(queries) == reference
    assert len(parked_seen) >= 2  # rows of several batches were parked
    for kept, counted in parked_seen:
        assert kept == counted, parked_seen  # no room buffer or cut columns left behind


def test_merged_parked_rows_get_the_budget_the_parked_caches_leave(
    eos_models, queries, monkeypatch
):
    from imhibench.generate import rounds

    monkeypatch.setattr(rounds, "EVICT_EVERY", 3)
    static = _load(eos_models, "causal", max_new_tokens=23)
    reference = static.generate_token_ids(queries)
    long = [i for i, answer in enumerate(reference) if len(answer) > 3][:2]
    assert len(long) == 2, reference
    ids, parked = static.encode(queries), []
    for i in long:  # batches of one row, parked after their first round
        assert static._run([i], ids, parked) == [None]
    assert [p.queries for p in parked] == [[i] for i in long]
    held = sum(p.held() for p in parked)
    together = 2 * (max(p.input_ids.shape[1] for p in parked) + 23 - 3)  # rows x (width + left)
    static.batch_tokens = together + held - 1  # the two fit together only if parked held nothing
    merges = _merges_seen(monkeypatch)
    answers = static._finish_parked(parked)
    assert {i: cut_at_eos(a, static.eos_ids) for i, a in answers.items()} == {
        i: reference[i] for i in long
    }
    assert [len(parts) for parts in merges] == [1, 1]  # finished one at a time


def test_parked_rows_finish_in_smaller_groups_after_an_oom(eos_models, queries, monkeypatch):
    import torch

    from imhibench.generate import rounds

    monkeypatch.setattr(rounds, "EVICT_EVERY", 3)
    static = _load(eos_models, "causal", max_new_tokens=24, max_batch_size=3)
    reference = static.generate_token_ids(queries)
    merges = _merges_seen(monkeypatch)
    generate = static.model.generate

    def tight_memory(*args, **kwargs):  # the first merged batch does not fit
        if len(merges) == 1 and kwargs["input_ids"].shape[0] > 1:
            raise torch.OutOfMemoryError("fake")
        return generate(*args, **kwargs)

    monkeypatch.setattr(static.model, "generate", tight_memory)
    assert static.generate_token_ids(queries) == reference
    parts = [len(m) for m in merges]  # parts per merge
    assert parts[0] >= 2 and max(parts[1:]) < parts[0]


def test_parked_rows_back_off_row_by_row_after_an_oom(eos_models, queries, monkeypatch):
    """A parked part of several rows that runs out of memory is split into its rows (it used
    to stop the job as if it were a single query)."""
    import torch

    from imhibench.generate import rounds

    monkeypatch.setattr(rounds, "EVICT_EVERY", 3)
    monkeypatch.setattr(rounds, "PARK_SHARE", 2)  # one batch of 10: parked at 5 rows or fewer
    static = _load(eos_models, "causal", max_new_tokens=24)
    reference = static.generate_token_ids(queries)
    merges = _merges_seen(monkeypatch)
    generate = static.model.generate
    rows_tried: list[int] = []

    def tight_memory(*args, **kwargs):  # finishing the parked rows: one row at a time fits
        if merges:
            rows_tried.append(kwargs["input_ids"].shape[0])
            if rows_tried[-1] > 1:
                raise torch.OutOfMemoryError("fake")
        return generate(*args, **kwargs)

    monkeypatch.setattr(static.model, "generate", tight_memory)
    assert static.generate_token_ids(queries) == reference
    [[(parked, *_)], *retries] = merges  # one part of several rows was parked
    assert parked >= 2 and rows_tried[0] == parked
    sizes = [sum(rows for rows, *_ in m) for m in retries]
    assert max(sizes) < parked and sizes.count(1) == parked  # in the end each row on its own


def _parked(rows: int, width: int, done: int):
    import torch

    from imhibench.generate.rounds import Rows

    ids = torch.zeros(rows, width, dtype=torch.long)
    return Rows(ids, ids, None, list(range(rows)), [[] for _ in range(rows)], [done] * rows)


def test_parked_rows_are_grouped_widest_first_within_the_budget():
    from imhibench.generate.rounds import group_parked

    wide, mid, narrow, late = (
        _parked(1, 500, 10),
        _parked(2, 100, 50),
        _parked(1, 90, 5),
        _parked(3, 20, 70),
    )
    names = {id(wide): "wide", id(mid): "mid", id(narrow): "narrow", id(late): "late"}

    def grouped(budget: int, most_rows: int) -> list[list[str]]:
        groups = group_parked([narrow, late, wide, mid], 100, budget, most_rows)
        return [[names[id(part)] for part in group] for group in groups]

    # wide alone: 1 x (500 + 90); with mid: 3 x (500 + 90); mid + narrow: 3 x (100 + 95)
    assert grouped(1_000, 64) == [["wide"], ["mid", "narrow"], ["late"]]
    assert grouped(10**6, 64) == [["wide", "mid", "narrow", "late"]]
    assert grouped(10**6, 3) == [["wide", "mid"], ["narrow"], ["late"]]
    assert grouped(10, 64) == [["wide"], ["mid"], ["narrow"], ["late"]]  # each over on its own


def test_rows_leaving_the_batch_release_the_rounds_room():
    import torch

    from imhibench.generate.rounds import Rows, _select, roomy_cache

    cache = roomy_cache()
    cache.update(torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4), 0)
    [layer] = cache.layers
    room = layer.room_keys
    ids = torch.ones(3, 6, dtype=torch.long)
    rows = Rows(ids, ids, cache, [0, 1, 2], [[], [], []], [1, 1, 1])
    assert _select(rows, [0, 1, 2]).cache.layers[0].room_keys is room  # unchanged: room kept
    kept = _select(rows, [0, 2]).cache.layers[0]
    assert kept.room_keys is None and kept.room_values is None  # next round: new room
    assert _storage_bytes(cache) == 2 * kept.keys.numel() * 4  # only the two rows' keys, values


def test_roomy_cache_layer_equals_concatenation():
    import torch

    from imhibench.generate.rounds import EVICT_EVERY, RoomyLayer

    torch.manual_seed(0)
    layer, rows, keys, values = RoomyLayer(), 3, None, None
    for step, width in enumerate([5, 1, 1, EVICT_EVERY + 3, 1, 1]):
        k, v = torch.randn(rows, 2, width, 4), torch.randn(rows, 2, width, 4)
        keys = k if keys is None else torch.cat([keys, k], dim=-2)
        values = v if values is None else torch.cat([values, v], dim=-2)
        room = layer.room_keys
        got_keys, got_values = layer.update(k, v)
        assert torch.equal(got_keys, keys) and torch.equal(got_values, values)
        in_place = layer.room_keys is room and got_keys.data_ptr() == room.data_ptr()
        assert in_place == (step in (1, 4, 5)), step  # else: first, after a cut, past the room
        if step == 1:  # rows and leading columns dropped from outside: copied into new room
            layer.batch_select_indices(torch.tensor([0, 2]))
            layer.keys, layer.values = layer.keys[..., 2:, :], layer.values[..., 2:, :]
            rows, keys, values = 2, keys[[0, 2], :, 2:], values[[0, 2], :, 2:]
