#!/usr/bin/env python
"""Time the generation engines (upstream loop, static, continuous) on one realistic workload.

Every engine answers the same IMHI queries with the same weights, in one run:

- **upstream**: ``imhibench.generate.upstream.upstream_token_ids`` (IMHI.py's loop, the same code
  as the pipeline's ``engine: upstream``): float32, batches of 8 in file order, left padding;
- **static**: ``HFGenerator`` (length-sorted padded batches under a token budget, dtype auto);
- **continuous**: transformers continuous batching (``generate_batch``'s manager), dtype auto.

Workloads (``--workload``): ``realistic`` (default): the answer to each query is as long as its
gold answer in the IMHI file (tokens, capped at ``--max-new-tokens``), and a share
``--runaway-share`` (default 2%) of queries runs to ``--max-new-tokens``; ``fixed``: every answer
runs to ``--max-new-tokens``; ``natural``: answers end where the model emits EOS (real checkpoints).
With ``realistic`` and ``fixed`` a logits processor emits EOS at the planned step on the upstream
and static sides; the continuous side gets the same length per request (``max_new_tokens`` = planned
answer + EOS); on every side a hook on the LM head makes the model's own EOS impossible, so
every engine computes the same tokens.

Printed per engine: output tokens/s and the ratio to static, model forward passes, and the share
of computed token slots wasted (padding, or rows that had already finished): 1 - (prompt tokens +
generated tokens fed back) / tokens fed to the model.

    python scripts/bench_generate.py --model tiny --rows 64        # CPU, tiny demo LLaMA
    python scripts/bench_generate.py --model llama7b-shape         # GPU, LLaMA-2-7B shape
    python scripts/bench_generate.py --model-dir DIR --workload natural  # a real checkpoint

Queries come from the local IMHI mirror (``$IMHI_MIRROR`` or ``../shared/imhi``) read in place,
or from ``--csv`` (``query`` and gold ``gpt-3.5-turbo`` columns). Not a test: it only measures.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from imhibench.errors import ImhiBenchError

MIRROR = Path(os.environ.get("IMHI_MIRROR", REPO.parent / "shared" / "imhi"))
GOLD = "gpt-3.5-turbo"  # the IMHI files' gold-answer column
ENGINES = ("upstream", "static", "continuous")
# Peak HBM bandwidth (GB/s) by device-name fragment, most specific first (vendor datasheets).
PEAK_BANDWIDTH_GBS = {
    "H200": 4800.0,
    "H100 NVL": 3900.0,
    "H100 PCIe": 2000.0,
    "H100": 3350.0,  # SXM5, HBM3
    "A100 80GB PCIe": 1935.0,
    "A100-SXM4-80GB": 2039.0,
}
LLAMA2_7B = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000}  # fmt: skip


@dataclass
class Side:
    """What one side did: its outputs, time, work and memory."""

    name: str
    dtype: str
    token_ids: list[list[int]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    seconds: float = 0.0
    batches: int = 0
    forward_calls: int = 0
    weight_bytes: int = 0
    fed_tokens: int = 0  # token slots the model computed (input ids of every forward pass)
    useful_tokens: int = 0  # prompt tokens + generated tokens fed back (no padding, no finished)
    peak_memory_gb: float | None = None

    @property
    def output_tokens(self) -> int:
        return sum(len(x) for x in self.token_ids)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--model",
        choices=["tiny", "llama7b-shape"],
        default="tiny",
        help="tiny: demo LLaMA (CPU); llama7b-shape: random LLaMA-2-7B weights",
    )
    which.add_argument("--model-dir", help="a local causal checkpoint instead")
    p.add_argument(
        "--tokenizer-dir",
        help="llama7b-shape: a LLaMA-2 tokenizer (e.g. a fetched MentaLLaMA checkpoint) for "
        "LLaMA-2 prompt lengths; default: the demo BPE tokenizer (longer prompts)",
    )
    p.add_argument("--dataset", default="DR", help="IMHI instruction test set in the mirror")
    p.add_argument("--csv", help="a CSV with a 'query' column instead of the mirror's")
    p.add_argument("--rows", type=int, help="first N queries (default: all; DR has 405)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument(
        "--workload",
        choices=["realistic", "fixed", "natural"],
        default=None,
        help="answer lengths: gold-answer lengths + runaways (default for random weights), "
        "all max-new-tokens, or where the model stops (default for --model-dir)",
    )
    p.add_argument(
        "--runaway-share",
        type=float,
        default=0.02,
        help="realistic workload: share of answers that run to --max-new-tokens",
    )
    p.add_argument(
        "--engines",
        default="upstream,static,continuous",
        help="comma-separated: upstream, static, continuous",
    )
    p.add_argument("--batch-tokens", type=int, default=65536, help="imhi-bench token budget")
    p.add_argument("--max-batch-size", type=int, default=64, help="imhi-bench batch cap")
    p.add_argument(
        "--upstream-batch-size",
        type=int,
        default=8,
        help="upstream README runs IMHI.py with --batch_size 8",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument(
        "--peak-bandwidth-gbs",
        type=float,
        help="device peak memory bandwidth; default from a table (H100, H200, A100)",
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.workload is None:
        args.workload = "natural" if args.model_dir else "realistic"
    args.engines = args.engines.split(",")
    if not set(args.engines) <= set(ENGINES):
        p.error(f"--engines: choose from {ENGINES}")
    if min(args.rows or 1, args.max_new_tokens, args.upstream_batch_size) < 1:
        p.error("--rows, --max-new-tokens and --upstream-batch-size must be >= 1")
    if not 0 <= args.runaway_share <= 1:
        p.error("--runaway-share must be within [0, 1]")
    return args


def load_queries(args: argparse.Namespace) -> tuple[list[str], list[str], str]:
    """The first ``--rows`` queries, their gold answers, and where they came from."""
    import pandas as pd

    path = (
        Path(args.csv)
        if args.csv
        else MIRROR / "test_data/test_instruction" / f"{args.dataset}.csv"
    )
    if not path.is_file():
        raise ImhiBenchError(f"{path}: query file not found (set IMHI_MIRROR or pass --csv)")
    table = pd.read_csv(path)
    missing = {"query", GOLD} - set(table.columns)
    if missing:
        raise ImhiBenchError(f"{path}: no {sorted(missing)} column; found {list(table.columns)}")
    table = table.head(args.rows or len(table))
    queries = table["query"].fillna("").astype(str).tolist()
    golds = table[GOLD].fillna("").astype(str).tolist()
    return queries, golds, f"{path} (first {len(queries)} rows)"


def plan_lengths(args: argparse.Namespace, tokenizer, golds: list[str]) -> list[int] | None:
    """Planned answer length (tokens, EOS excluded) per query; None for ``natural``.

    ``realistic``: the token length of the gold answer, capped at ``--max-new-tokens``, and
    ``--runaway-share`` of the queries (picked with ``--seed``) at ``--max-new-tokens``.
    """
    import random

    n = args.max_new_tokens
    if args.workload == "natural":
        return None
    if args.workload == "fixed":
        return [n] * len(golds)
    plan = [min(len(x), n) for x in tokenizer(golds, add_special_tokens=False)["input_ids"]]
    runaways = random.Random(args.seed).sample(
        range(len(plan)), round(args.runaway_share * len(plan))
    )
    for i in runaways:
        plan[i] = n
    return plan


def model_source(args: argparse.Namespace, workdir: Path) -> tuple[str, str]:
    """(checkpoint dir with the tokenizer, description of the model)."""
    if args.model_dir is not None:
        return args.model_dir, args.model_dir
    from imhibench.demo_models import build_demo_models

    if args.model == "llama7b-shape" and args.tokenizer_dir:
        return (
            args.tokenizer_dir,
            f"LLaMA-2-7B shape, random weights, tokenizer {args.tokenizer_dir}",
        )
    model_dir = build_demo_models(workdir, {}, seed=args.seed)["causal"]
    if args.model == "llama7b-shape":
        return model_dir, "LLaMA-2-7B shape, random weights, demo BPE tokenizer"
    return model_dir, "tiny demo LLaMA (imhibench.demo_models), random weights"


def load_model(args: argparse.Namespace, model_dir: str, dtype, device: str):
    """The benchmarked causal LM in ``dtype`` on ``device``; the same weights on every call."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    if args.model_dir is not None or args.model == "tiny":
        return AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=dtype, attn_implementation="sdpa", device_map=device
        ).eval()
    from imhibench.generate.causal import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    if len(tokenizer) > LLAMA2_7B["vocab_size"]:
        raise ImhiBenchError(f"{model_dir}: tokenizer has {len(tokenizer)} tokens; LLaMA-2 32000")
    config = LlamaConfig(
        **LLAMA2_7B, max_position_embeddings=4096, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
    )  # fmt: skip
    config._attn_implementation = "sdpa"
    torch.manual_seed(args.seed)  # same seed, same device: the same random weights each time
    with torch.device(device):
        model = LlamaForCausalLM(config)
    return model.to(dtype).eval()


def weight_bytes(model) -> int:
    """Bytes of weights one forward step reads (the input embedding is a gather: left out)."""
    skip = model.get_input_embeddings().weight
    return sum(p.numel() * p.element_size() for p in model.parameters() if p is not skip)


class Timer:
    """Counts forward calls of ``model`` and times a block, synchronising CUDA."""

    def __init__(self, model, device: str):
        self.model, self.cuda = model, device.startswith("cuda")
        self.calls = 0
        self.seconds = 0.0

    def __enter__(self) -> Timer:
        import torch

        self.fed_tokens = 0
        self._hook = self.model.register_forward_pre_hook(self._count, with_kwargs=True)
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self._start
        self._hook.remove()

    def _count(self, module, args, kwargs) -> None:
        self.calls += 1
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.fed_tokens += ids.numel() if ids is not None else 0


class PlannedEOS:
    """Logits processor: EOS exactly at each row's planned step, never before.

    Rows are recognised by their prompt, at the first step of each ``generate`` call (leading
    padding dropped; a call may continue answers, as the static engine's rounds do); a fresh
    instance serves one ``generate`` call (``with_planned_eos``).
    """

    def __init__(self, plan: PromptPlan, eos: int, pad: int):
        self.plan, self.eos, self.pad = plan, eos, pad
        self.width: int | None = None
        self.planned = None  # per row: the planned step, counted from this call's start

    def __call__(self, input_ids, scores):
        import torch

        if self.width is None:
            self.width = input_ids.shape[1]
            steps = []
            for row in input_ids.tolist():
                start = next((j for j, t in enumerate(row) if t != self.pad), len(row))
                planned, answered = self.plan.find(row[start:])
                steps.append(planned - answered)
            self.planned = torch.tensor(steps, device=scores.device)
        # Vectorised: a Python loop over rows would weigh on the larger batches' steps.
        ending = self.planned == input_ids.shape[1] - self.width
        scores[:, self.eos] = float("-inf")
        scores[ending] = float("-inf")
        scores[ending, self.eos] = 0.0
        return scores


class PromptPlan:
    """Planned answer length per prompt, found from a prompt followed by part of its answer."""

    def __init__(self, prompts: list[list[int]], plan: list[int]):
        self.head = min(32, *(len(p) for p in prompts))
        self.by_head: dict[tuple[int, ...], list[tuple[list[int], int]]] = {}
        for prompt, planned in zip(prompts, plan, strict=True):
            self.by_head.setdefault(tuple(prompt[: self.head]), []).append((prompt, planned))

    def find(self, ids: list[int]) -> tuple[int, int]:
        """(planned answer length, answer tokens already in ``ids``)."""
        for prompt, planned in self.by_head[tuple(ids[: self.head])]:
            if ids[: len(prompt)] == prompt:
                return planned, len(ids) - len(prompt)
        raise KeyError("a row whose prompt is not in the plan")


def forbid_eos(model, plan: list[int] | None, eos: int) -> None:
    """Planned workloads: the model's own EOS logit is -inf (an output hook on the LM head), so
    an answer ends only where planned, on every engine alike."""
    if plan is None:
        return

    def hook(module, args, output):
        output = output.clone()
        output[..., eos] = float("-inf")
        return output

    model.get_output_embeddings().register_forward_hook(hook)


def with_planned_eos(model, prompts: list[list[int]], plan: list[int] | None, eos: int, pad: int):
    """Make every ``model.generate`` call end each answer at its planned step."""
    forbid_eos(model, plan, eos)
    if plan is None:
        return
    from transformers import LogitsProcessorList

    by_prompt = PromptPlan(prompts, plan)
    original = model.generate

    def generate(*args, **kwargs):
        kwargs["logits_processor"] = LogitsProcessorList([PlannedEOS(by_prompt, eos, pad)])
        return original(*args, **kwargs)

    model.generate = generate


def _settings(args: argparse.Namespace, engine: str):
    from imhibench.generate import GenerationSettings

    return GenerationSettings(
        max_new_tokens=args.max_new_tokens, seed=args.seed, batch_tokens=args.batch_tokens,
        max_batch_size=args.max_batch_size, engine=engine,
    )  # fmt: skip


def run_static(args, model_dir, queries, plan, device) -> Side:
    """imhi-bench's static engine: HFGenerator with the pipeline's settings (dtype auto)."""
    from imhibench.generate.base import resolve_dtype
    from imhibench.generate.causal import load_tokenizer
    from imhibench.generate.hf import HFGenerator

    model = load_model(args, model_dir, resolve_dtype("auto", device), device)
    ours = HFGenerator(model, load_tokenizer(model_dir), _settings(args, "static"), device)
    side = Side("static", str(model.dtype).removeprefix("torch."))
    ours.generate(queries[:2])  # warm-up, not timed
    prompts = ours.encode(queries)
    with_planned_eos(ours.model, prompts, plan, _eos(ours), ours.tokenizer.pad_token_id)
    batches: list[int] = []
    with Timer(ours.model, device) as timer:
        side.token_ids = ours.generate_token_ids(queries, on_batch=lambda r, t: batches.append(r))
    side.texts = [ours.tokenizer.decode(x, skip_special_tokens=True) for x in side.token_ids]
    return _finish(side, timer, ours.model, len(batches), device, prompts, args.max_new_tokens)


def run_upstream(args, model_dir, queries, plan, device) -> Side:
    """The upstream loop (the pipeline's ``engine: upstream`` code) in float32, as IMHI.py."""
    import torch
    from transformers import GenerationConfig

    from imhibench.generate.causal import load_tokenizer
    from imhibench.generate.base import cut_at_eos
    from imhibench.generate.upstream import upstream_token_ids

    model = load_model(args, model_dir, torch.float32, device)
    tokenizer = load_tokenizer(model_dir)  # pad = unk, left padding, as IMHI.py's LlamaTokenizer
    eos = model.generation_config.eos_token_id
    eos = tokenizer.eos_token_id if eos is None else eos
    config = GenerationConfig(
        max_new_tokens=args.max_new_tokens, do_sample=False, num_beams=1,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=eos, bos_token_id=tokenizer.bos_token_id,
    )  # fmt: skip
    side = Side("upstream", str(model.dtype).removeprefix("torch."))
    bs = args.upstream_batch_size
    upstream_token_ids(model, tokenizer, queries[:2], config, batch_size=bs)  # warm-up
    prompts = tokenizer(queries)["input_ids"]
    with_planned_eos(model, prompts, plan, eos, tokenizer.pad_token_id)
    with Timer(model, device) as timer:
        rows = upstream_token_ids(model, tokenizer, queries, config, batch_size=bs)
    side.token_ids = [cut_at_eos(row, {eos}) for row in rows]
    side.texts = [tokenizer.decode(x, skip_special_tokens=True) for x in side.token_ids]
    return _finish(side, timer, model, -(-len(queries) // bs), device, prompts, args.max_new_tokens)


def run_continuous(args, model_dir, queries, plan, device) -> Side:
    """transformers continuous batching; each request's length capped at its planned answer."""
    from imhibench.generate.base import resolve_dtype
    from imhibench.generate.causal import load_tokenizer
    from imhibench.generate.continuous import ContinuousGenerator
    from imhibench.generate.base import cut_at_eos

    model = load_model(args, model_dir, resolve_dtype("auto", device), device)
    engine = ContinuousGenerator(
        model, load_tokenizer(model_dir), _settings(args, "continuous"), device
    )
    side = Side("continuous", str(model.dtype).removeprefix("torch."))
    engine.generate(queries[:2])  # warm-up, not timed
    prompts = engine.encode(queries)
    n = args.max_new_tokens
    caps = [n if plan is None else min(p + 1, n) for p in (plan or [None] * len(prompts))]
    forbid_eos(engine.model, plan, _eos(engine))
    with (
        Timer(engine.model, device) as timer,
        engine.model.continuous_batching_context_manager(
            generation_config=engine.generation_config, block=True, timeout=5
        ) as manager,
    ):
        for k, (ids, cap) in enumerate(zip(prompts, caps, strict=True)):
            manager.add_request(ids, request_id=f"q{k}", max_new_tokens=cap)
        results: dict = {}
        while len(results) < len(prompts):
            result = manager.get_result(timeout=1)
            if result is not None and result.is_finished():
                results[result.request_id] = result
            elif result is None and not manager.is_running():
                raise ImhiBenchError("continuous batching stopped before all requests ended")
    rows = [list(results[f"q{k}"].generated_tokens) for k in range(len(prompts))]
    if plan is not None:  # the last of a planned answer stands for its EOS
        rows = [r[:p] if p < n else r for r, p in zip(rows, plan, strict=True)]
    side.token_ids = [cut_at_eos(r, engine.eos_ids) for r in rows]
    side.texts = [engine.tokenizer.decode(x, skip_special_tokens=True) for x in side.token_ids]
    return _finish(side, timer, engine.model, 0, device, prompts, args.max_new_tokens)


def _eos(generator) -> int:
    return next(iter(generator.eos_ids))


def _finish(side: Side, timer: Timer, model, batches: int, device: str, prompts, cap) -> Side:
    """Record time, passes and token slots. Useful slots: prompt + every generated token fed
    back (all but the last, which is EOS or the one that hit the cap)."""
    import torch

    side.seconds, side.forward_calls, side.batches = timer.seconds, timer.calls, batches
    side.fed_tokens = timer.fed_tokens
    generated = [len(x) + (len(x) < cap) for x in side.token_ids]  # + EOS unless capped
    side.useful_tokens = sum(len(p) for p in prompts) + sum(g - 1 for g in generated)
    side.weight_bytes = weight_bytes(model)
    if device.startswith("cuda"):
        side.peak_memory_gb = torch.cuda.max_memory_allocated() / 1e9
    return side


def peak_bandwidth(args: argparse.Namespace, device: str) -> tuple[float | None, str]:
    """Peak GB/s from the flag, else from the table for a known GPU; with the device name."""
    import torch

    if not device.startswith("cuda"):
        cores = f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
        return args.peak_bandwidth_gbs, f"cpu ({cores})"
    name = torch.cuda.get_device_name(torch.device(device))
    if args.peak_bandwidth_gbs is not None:
        return args.peak_bandwidth_gbs, name
    return next((v for k, v in PEAK_BANDWIDTH_GBS.items() if k in name), None), name


def report(sides: list[Side], peak_gbs: float | None) -> list[str]:
    lines = [
        f"{'engine':<11}{'dtype':<9}{'seconds':>9}{'out tokens':>11}{'tokens/s':>10}"
        f"{'vs static':>10}{'passes':>8}{'wasted':>8}{'weights GB/s':>13}{'roofline':>9}"
        f"{'peak GB':>8}"
    ]
    static = next((s for s in sides if s.name == "static"), None)
    for s in sides:
        rate = s.output_tokens / s.seconds
        ratio = f"{rate / (static.output_tokens / static.seconds):.2f}x" if static else "n/a"
        wasted = 1 - s.useful_tokens / s.fed_tokens if s.fed_tokens else float("nan")
        gbs = s.forward_calls * s.weight_bytes / s.seconds / 1e9
        share = f"{100 * gbs / peak_gbs:.1f}%" if peak_gbs else "n/a"
        memory = f"{s.peak_memory_gb:.1f}" if s.peak_memory_gb is not None else "n/a"
        lines.append(
            f"{s.name:<11}{s.dtype:<9}{s.seconds:>9.2f}{s.output_tokens:>11}{rate:>10.1f}"
            f"{ratio:>10}{s.forward_calls:>8}{100 * wasted:>7.1f}%{gbs:>13.2f}{share:>9}"
            f"{memory:>8}"
        )
    if static:
        for s in sides:
            if s is not static:
                same = sum(a == b for a, b in zip(s.token_ids, static.token_ids, strict=True))
                lines.append(f"{s.name}: {same}/{len(s.token_ids)} answers identical to static")
    return lines


def _free_memory(device: str) -> None:
    """Release the previous side's model before loading the next (one model at a time)."""
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from imhibench.devices import resolve_device
    from imhibench.generate.causal import load_tokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.model == "llama7b-shape" and args.model_dir is None and device == "cpu":
        raise ImhiBenchError("--model llama7b-shape needs a GPU (27 GB of float32 weights)")
    queries, golds, source = load_queries(args)
    peak, device_name = peak_bandwidth(args, device)
    runs = {"upstream": run_upstream, "static": run_static, "continuous": run_continuous}
    with tempfile.TemporaryDirectory() as workdir:
        model_dir, what = model_source(args, Path(workdir))
        plan = plan_lengths(args, load_tokenizer(model_dir), golds)
        print(f"model: {what}")
        print(f"device: {device_name}; torch {torch.__version__}")
        print(f"queries: {source}; max_new_tokens {args.max_new_tokens}")
        if plan is not None:
            runaway = sum(p == args.max_new_tokens for p in plan)
            print(f"workload {args.workload}: {sum(plan)} answer tokens planned, mean "
                  f"{sum(plan) / len(plan):.1f}, {runaway} at max_new_tokens")  # fmt: skip
        else:
            print("workload natural: answers end at the model's EOS")
        print(f"static: batch_tokens {args.batch_tokens}, max_batch_size {args.max_batch_size}; "
              f"upstream: batch {args.upstream_batch_size}")  # fmt: skip
        sides = []
        for engine in args.engines:
            sides.append(runs[engine](args, model_dir, queries, plan, device))
            _free_memory(device)
    print("\n".join(report(sides, peak)))
    if peak is None and device.startswith("cuda"):
        print("roofline: unknown GPU; pass --peak-bandwidth-gbs")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ImhiBenchError as err:
        sys.exit(f"bench_generate: {err}")
