"""The generation benchmark (imhibench.bench): `imhibench bench`, `gpu-check`, `compare-engines`
and the scripts that call them. Figures are checked for what they count, never for time."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import types
from pathlib import Path

import pandas as pd
import pytest
from support import REPO, require_mirror

from imhibench.bench import engines as bench_engines
from imhibench.bench.cli import _engines, bench_main, prepare_bench_args
from imhibench.bench.models import LLAMA2_7B
from imhibench.bench.report import report, table_bandwidth
from imhibench.bench.timing import Side
from imhibench.cli import main as imhibench_main
from imhibench.common.errors import ImhiBenchError

QUERIES = [
    'Consider this post: "I feel sad." Question: Does the poster suffer from depression?',
    "hi",
    'Consider this post: "Work piles up and I cannot sleep." Question: What is the stress '
    "cause of this post?",
    "Nobody texts me back anymore. Question: Does the poster suffer from loneliness?",
    "ok ok",
    "one more query",
]
GOLDS = ["Yes.", "No, the poster", "", "x " * 40, "Yes", "No. Reasoning: none"]


@pytest.fixture
def queries_csv(tmp_path) -> Path:
    path = tmp_path / "q.csv"
    pd.DataFrame({"query": QUERIES, "gpt-3.5-turbo": GOLDS}).to_csv(path, index=False)
    return path


def _planned(out: str) -> tuple[int, int]:
    plan = re.search(r"workload realistic: (\d+) answer tokens planned, mean [\d.]+, (\d+) at", out)
    assert plan, out
    return int(plan.group(1)), int(plan.group(2))


def test_bench_smoke(queries_csv, capsys, monkeypatch):
    """Every engine computes the planned answers (no timing here); bad input is named."""
    from imhibench.generate import rounds

    monkeypatch.setattr(rounds, "EVICT_EVERY", 2)  # static answers continue over several calls
    args = ["--csv", str(queries_csv), "--max-new-tokens", "6", "--threads", "1",
            "--device", "cpu", "--runaway-share", "0.34"]  # fmt: skip
    assert bench_main(args) == 0
    out = capsys.readouterr().out
    planned, runaways = _planned(out)
    assert runaways >= 2  # 2 runaways + the long gold answer
    for engine in ("upstream", "static", "continuous"):
        assert re.search(rf"^{engine} +float32 +[\d.]+ +{planned} ", out, re.MULTILINE), out
    assert "continuous: 6/6 answers identical to static" in out
    assert "upstream: 6/6 answers identical to static" in out
    assert re.search(r"^static .* 1\.00x +\d+ +[\d.]+%", out, re.MULTILINE)
    assert "gpu check" not in out and "libraries:" not in out  # the benchmark's own output
    pd.DataFrame({"post": ["x"]}).to_csv(queries_csv, index=False)
    with pytest.raises(ImhiBenchError, match=r"q\.csv: no \['gpt-3.5-turbo', 'query'\] column"):
        bench_main(["--csv", str(queries_csv)])


def test_gpu_check_runs_on_cpu_with_the_tiny_shape(queries_csv, capsys):
    """`imhibench gpu-check --model tiny`: every engine but vLLM, each with its figures."""
    args = ["gpu-check", "--model", "tiny", "--device", "cpu", "--csv", str(queries_csv),
            "--max-new-tokens", "6", "--threads", "1"]  # fmt: skip
    assert imhibench_main(args) == 0
    out = capsys.readouterr().out
    planned, _ = _planned(out)
    assert "libraries: transformers " in out
    # seconds, output tokens, tokens/s, vs static, passes, wasted, weights GB/s, roofline
    # (no peak bandwidth on CPU), peak memory (the process's ru_maxrss on CPU)
    figures = (rf" +float32 +[\d.]+ +{planned} +[\d.]+ +[\d.]+x +\d+ +[\d.]+% +[\d.]+ +n/a "
               r"+\d+\.\d$")  # fmt: skip
    for engine in ("upstream", "static", "continuous"):
        assert re.search(rf"^{engine}{figures}", out, re.MULTILINE), out
    assert "vllm: not run (needs a GPU)" in out
    assert "peak GB on CPU: the process's peak resident memory so far (ru_maxrss)" in out
    assert re.search(r"^gpu check: \d+ s in all, within the 8-minute budget$", out, re.MULTILINE)
    with pytest.raises(ImhiBenchError, match="llama7b-shape needs a GPU"):
        bench_main(["--device", "cpu", "--csv", str(queries_csv)], gpu_check=True)


def test_gpu_check_defaults_and_engines(monkeypatch):
    import argparse
    import importlib.util

    from imhibench.bench.cli import add_bench_arguments

    parser = argparse.ArgumentParser()
    add_bench_arguments(parser, gpu_check=True)
    args = prepare_bench_args(parser.parse_args([]))
    assert (args.model, args.rows, args.max_new_tokens, args.workload, args.engines) == (
        "llama7b-shape", 64, 256, "realistic", ["auto"]
    )  # fmt: skip
    three = ["upstream", "static", "continuous"]
    assert _engines(args, "cpu") == (three, "vllm: not run (needs a GPU)")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert _engines(args, "cuda")[1].startswith("vllm: not run (not installed")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    assert _engines(args, "cuda") == ([*three, "vllm"], None)
    args.engines = ["static", "vllm"]
    assert _engines(args, "cuda") == (["static", "vllm"], None)


def test_scripts_are_thin_adapters_with_the_same_arguments(tmp_path):
    """The scripts parse as before (usage errors exit 2) and run the package's code."""
    for script in ("bench_generate.py", "compare_engines.py"):
        text = (REPO / "scripts" / script).read_text()
        assert len(text.splitlines()) < 30 and "from imhibench.bench.cli import" in text
    run = [sys.executable, str(REPO / "scripts" / "bench_generate.py")]
    bad = subprocess.run([*run, "--engines", "foo"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--engines: choose from" in bad.stderr
    missing = subprocess.run([*run, "--csv", str(tmp_path / "none.csv"), "--device", "cpu"],
                             capture_output=True, text=True)  # fmt: skip
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        f"bench_generate: {tmp_path / 'none.csv'}: query file not found (set IMHI_MIRROR or "
        "pass --csv)"
    )
    compare = [sys.executable, str(REPO / "scripts" / "compare_engines.py")]
    bad = subprocess.run([*compare, "--model-dir", "x", "--engines", "static"],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "--engines: give exactly two" in bad.stderr


def test_compare_engines(demo_models, capsys):
    """`imhibench compare-engines` on the tiny LLaMA: static vs continuous agree on DR rows."""
    from imhibench.bench.compare import compare

    require_mirror()
    args = ["compare-engines", "--model-dir", demo_models["causal"], "--dataset", "DR", "--rows",
            "3", "--max-new-tokens", "4", "--dtype", "float32", "--device", "cpu"]  # fmt: skip
    assert imhibench_main(args) == 0
    out = capsys.readouterr().out
    assert "answers that differ (static vs continuous): 0/3" in out
    assert re.search(r"weighted F1 \(rule labels\): static [\d.]+, continuous [\d.]+, "
                     r"difference \+0\.00", out)  # fmt: skip
    task = types.SimpleNamespace(rule_label=lambda text, corrected=False: (text[:1], False))
    result = compare(task, ["a", "b"], ["a", "b"], ["a", "a"])
    assert result["differ"] == 1 and result["f1"][0] == 100.0 and result["f1_difference"] < 0


# The keyword arguments vLLM's ``LLM`` (its EngineArgs) and ``SamplingParams`` take, of those
# the benchmark uses; an unknown one is a TypeError there too.
VLLM_LLM_ARGS = {"model", "tokenizer", "dtype", "seed", "gpu_memory_utilization", "load_format"}
VLLM_SAMPLING_ARGS = {"temperature", "max_tokens", "ignore_eos", "seed", "min_tokens"}


def _fake_vllm(monkeypatch, eos: int) -> dict:
    """A stand-in ``vllm``: checks the arguments as vLLM would, reads the model's config as vLLM
    does at start, and answers ``max_tokens`` tokens under ``ignore_eos``, else 2 and EOS."""
    seen: dict = {"params": []}

    class LLM:
        def __init__(self, **kwargs):
            if set(kwargs) - VLLM_LLM_ARGS:
                raise TypeError(f"unexpected keyword argument(s) {set(kwargs) - VLLM_LLM_ARGS}")
            config = json.loads((Path(kwargs["model"]) / "config.json").read_text())
            if not config.get("architectures"):
                raise ValueError("Model architectures [] are not supported for now")
            seen.update(llm=kwargs, config=config)

        def generate(self, prompts, params, use_tqdm=True):
            assert isinstance(params, list) and len(params) == len(prompts)
            seen["params"].append(params)
            outputs = []
            for p in params:
                ids = [7] * p["max_tokens"] if p["ignore_eos"] else [7, 7, eos][: p["max_tokens"]]
                outputs.append(
                    types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=ids)])
                )
            return outputs

    def sampling_params(**kwargs):
        if set(kwargs) - VLLM_SAMPLING_ARGS:
            raise TypeError(f"Unexpected keyword argument {set(kwargs) - VLLM_SAMPLING_ARGS}")
        return kwargs

    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams = LLM, sampling_params
    monkeypatch.setitem(sys.modules, "vllm", module)
    return seen


@pytest.mark.parametrize("model", ["tiny", "llama7b-shape"])
def test_vllm_runner_up_to_its_boundary(demo_models, monkeypatch, model):
    """vLLM (not run here: no GPU) gets each request's planned length; the 7B shape is built
    by vLLM from the config alone (load_format dummy), the tiny model read from its files."""
    from imhibench.generate.causal import load_tokenizer

    model_dir = demo_models["causal"]
    eos = load_tokenizer(model_dir).eos_token_id
    seen = _fake_vllm(monkeypatch, eos)
    args = types.SimpleNamespace(model=model, model_dir=None, max_new_tokens=6, seed=3)
    queries = QUERIES[:3]
    plan = [2, 6, 0]
    side = bench_engines.run_vllm(args, model_dir, queries, plan, "cuda")
    timed = seen["params"][-1]
    assert [p["max_tokens"] for p in timed] == [3, 6, 1] and all(p["ignore_eos"] for p in timed)
    assert all(p["temperature"] == 0 and p["seed"] == 3 for p in timed)
    assert [len(x) for x in side.token_ids] == plan and side.output_tokens == 8
    assert side.forward_calls is None and side.dtype == "bfloat16"
    assert seen["llm"]["dtype"] == "bfloat16" and seen["llm"]["tokenizer"] == model_dir
    if model == "llama7b-shape":
        assert seen["llm"]["load_format"] == "dummy" and side.own_weights
        assert {k: seen["config"][k] for k in LLAMA2_7B} == LLAMA2_7B
        assert seen["config"]["architectures"] == ["LlamaForCausalLM"]
    else:
        assert "load_format" not in seen["llm"] and seen["llm"]["model"] == model_dir
        assert not side.own_weights
    natural = bench_engines.run_vllm(args, model_dir, queries, None, "cuda")
    assert all(p["max_tokens"] == 6 and not p["ignore_eos"] for p in seen["params"][-1])
    assert [len(x) for x in natural.token_ids] == [2, 2, 2]  # cut at the model's EOS
    with pytest.raises(ImhiBenchError, match="needs a GPU"):
        bench_engines.run_vllm(args, model_dir, queries, plan, "cpu")


def test_report_says_what_it_could_not_observe():
    static = Side("static", "bfloat16", token_ids=[[1, 2], [3]], seconds=1.0, forward_calls=4,
                  weight_bytes=10**9, fed_tokens=10, useful_tokens=8,
                  peak_memory_gb=20.0)  # fmt: skip
    vllm = Side("vllm", "bfloat16", token_ids=[[5, 5], [5]], seconds=0.5, forward_calls=None,
                own_weights=True)  # fmt: skip
    lines = report([static, vllm], peak_gbs=4800.0)
    # 4 passes x 1 GB in 1 s = 4 GB/s = 0.1% of 4800 GB/s; 2 of 10 slots wasted
    assert lines[1].split() == ["static", "bfloat16", "1.00", "3", "3.0", "1.00x", "4", "20.0%",
                                "4.00", "0.1%", "20.0"]  # fmt: skip
    assert lines[2].split() == ["vllm", "bfloat16", "0.50", "3", "6.0", "2.00x", "n/a", "n/a",
                                "n/a", "n/a", "n/a"]  # fmt: skip
    assert lines[3] == "vllm: own random weights, answers not compared"


@pytest.mark.parametrize(
    ("name", "gbs"),
    [
        ("NVIDIA H100 80GB HBM3", 3350.0),
        ("NVIDIA H100 PCIe", 2000.0),
        ("NVIDIA H100 NVL", 3900.0),
        ("NVIDIA H200", 4800.0),
        ("NVIDIA GH200 480GB", None),  # 4000 or 4900 GB/s: pass --peak-bandwidth-gbs
        ("NVIDIA A100-SXM4-80GB", 2039.0),
        ("NVIDIA A100 80GB PCIe", 1935.0),
        ("NVIDIA L4", None),
    ],
)
def test_peak_bandwidth_table(name, gbs):
    assert table_bandwidth(name) == gbs
