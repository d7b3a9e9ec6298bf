#!/usr/bin/env python
"""Time imhi-bench's generation engine against a faithful re-implementation of upstream IMHI.py.

Both sides answer the same IMHI queries with the same model weights, in one run. Upstream side:
float32, fixed batches of 8 in file order, padded (left) to the longest, ``generate(max_length=
padded prompt + max_new_tokens)``, greedy. imhi-bench side: its ``HFGenerator`` (bf16 on GPU,
fp32 on CPU, SDPA, inference_mode, length-sorted token-budget batches). Prints output tokens/s
of each side, the ratio and, given the GPU's peak bandwidth, the share of the weight-read roofline.

    python scripts/bench_generate.py --model tiny                    # CPU, tiny demo LLaMA
    python scripts/bench_generate.py --model llama7b-shape          # GPU, LLaMA-2-7B shape
    python scripts/bench_generate.py --model-dir DIR --no-force-length  # a real checkpoint

Queries come from the local IMHI mirror (``$IMHI_MIRROR`` or ``../shared/imhi``) read in place,
or from ``--csv`` (a ``query`` column). Not a test: it only measures.
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
        "--force-length",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="min_new_tokens = max_new_tokens on both sides (default: on for random "
        "weights, off for --model-dir)",
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
    p.add_argument("--skip-upstream", action="store_true", help="time imhi-bench only")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.force_length is None:
        args.force_length = args.model_dir is None
    if min(args.rows or 1, args.max_new_tokens, args.upstream_batch_size) < 1:
        p.error("--rows, --max-new-tokens and --upstream-batch-size must be >= 1")
    return args


def load_queries(args: argparse.Namespace) -> tuple[list[str], str]:
    """The first ``--rows`` queries, and where they came from."""
    import pandas as pd

    path = (
        Path(args.csv)
        if args.csv
        else MIRROR / "test_data/test_instruction" / f"{args.dataset}.csv"
    )
    if not path.is_file():
        raise ImhiBenchError(f"{path}: query file not found (set IMHI_MIRROR or pass --csv)")
    table = pd.read_csv(path)
    if "query" not in table.columns:
        raise ImhiBenchError(f"{path}: no 'query' column; found {list(table.columns)}")
    queries = table["query"].astype(str).head(args.rows or len(table)).tolist()
    return queries, f"{path} (first {len(queries)} of {len(table)} rows)"


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

        self._hook = self.model.register_forward_pre_hook(self._count)
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

    def _count(self, *args: object) -> None:
        self.calls += 1


def run_ours(args: argparse.Namespace, model_dir: str, queries: list[str], device: str) -> Side:
    """imhi-bench's engine: HFGenerator with the pipeline's settings (dtype auto)."""
    from imhibench.generate import GenerationSettings
    from imhibench.generate.base import resolve_dtype
    from imhibench.generate.causal import load_tokenizer
    from imhibench.generate.hf import HFGenerator

    n = args.max_new_tokens
    settings = GenerationSettings(
        max_new_tokens=n, min_new_tokens=n if args.force_length else 0, seed=args.seed,
        batch_tokens=args.batch_tokens, max_batch_size=args.max_batch_size,
    )  # fmt: skip
    model = load_model(args, model_dir, resolve_dtype("auto", device), device)
    ours = HFGenerator(model, load_tokenizer(model_dir), settings, device)
    side = Side("imhi-bench", str(model.dtype).removeprefix("torch."))
    ours.generate(queries[:2])  # warm-up, not timed
    batches: list[int] = []
    with Timer(ours.model, device) as timer:
        side.token_ids = ours.generate_token_ids(queries, on_batch=lambda r, t: batches.append(r))
    side.texts = [ours.tokenizer.decode(x, skip_special_tokens=True) for x in side.token_ids]
    return _finish(side, timer, ours.model, len(batches), device)


def upstream_generate(model, tokenizer, queries, batch_size, max_new_tokens, force, device):
    """IMHI.py's loop: file-order batches padded to the longest, ``generate(max_length=...)``."""
    from transformers import GenerationConfig

    eos = model.generation_config.eos_token_id
    eos_ids = (
        set(eos) if isinstance(eos, list) else {eos if eos is not None else tokenizer.eos_token_id}
    )
    results = []
    for i in range(0, len(queries), batch_size):
        inputs = tokenizer(queries[i : i + batch_size], return_tensors="pt", padding=True)
        input_ids = inputs.input_ids.to(device)
        width = input_ids.shape[1]
        config = GenerationConfig(
            max_length=width + max_new_tokens, min_new_tokens=max_new_tokens if force else None,
            do_sample=False, num_beams=1, pad_token_id=tokenizer.pad_token_id,
            eos_token_id=list(eos_ids), bos_token_id=tokenizer.bos_token_id,
        )  # fmt: skip
        ids = model.generate(
            input_ids, attention_mask=inputs.attention_mask.to(device), generation_config=config
        )
        for row in ids[:, width:].tolist():
            results.append(row[: next((j for j, t in enumerate(row) if t in eos_ids), len(row))])
    return results


def run_upstream(args: argparse.Namespace, model_dir: str, queries: list[str], device: str) -> Side:
    """The upstream loop on the same weights in float32, as IMHI.py loads them."""
    import torch

    from imhibench.generate.causal import load_tokenizer

    model = load_model(args, model_dir, torch.float32, device)
    tokenizer = load_tokenizer(model_dir)  # pad = unk, left padding, as IMHI.py's LlamaTokenizer
    side = Side("upstream", str(model.dtype).removeprefix("torch."))
    bs, n, force = args.upstream_batch_size, args.max_new_tokens, args.force_length
    upstream_generate(model, tokenizer, queries[:2], bs, 4, False, device)  # warm-up
    with Timer(model, device) as timer:
        side.token_ids = upstream_generate(model, tokenizer, queries, bs, n, force, device)
    side.texts = [tokenizer.decode(x, skip_special_tokens=True) for x in side.token_ids]
    return _finish(side, timer, model, -(-len(queries) // bs), device)


def _finish(side: Side, timer: Timer, model, batches: int, device: str) -> Side:
    import torch

    side.seconds, side.forward_calls, side.batches = timer.seconds, timer.calls, batches
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
        f"{'side':<11}{'dtype':<10}{'batches':>8}{'seconds':>10}{'out tokens':>12}"
        f"{'tokens/s':>11}{'steps':>8}{'weights GB/s':>14}{'roofline':>10}{'peak GB':>9}"
    ]
    for s in sides:
        gbs = s.forward_calls * s.weight_bytes / s.seconds / 1e9
        share = f"{100 * gbs / peak_gbs:.1f}%" if peak_gbs else "n/a"
        memory = f"{s.peak_memory_gb:.1f}" if s.peak_memory_gb is not None else "n/a"
        lines.append(
            f"{s.name:<11}{s.dtype:<10}{s.batches:>8}{s.seconds:>10.2f}{s.output_tokens:>12}"
            f"{s.output_tokens / s.seconds:>11.1f}{s.forward_calls:>8}{gbs:>14.2f}{share:>10}"
            f"{memory:>9}"
        )
    if len(sides) == 2:
        ours, upstream = sides
        ratio = (ours.output_tokens / ours.seconds) / (upstream.output_tokens / upstream.seconds)
        same = sum(a == b for a, b in zip(ours.texts, upstream.texts, strict=True))
        lines.append(f"speed-up (imhi-bench tokens/s / upstream tokens/s): {ratio:.2f}x")
        lines.append(f"identical responses: {same}/{len(ours.texts)}")
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

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.model == "llama7b-shape" and args.model_dir is None and device == "cpu":
        raise ImhiBenchError("--model llama7b-shape needs a GPU (27 GB of float32 weights)")
    queries, source = load_queries(args)
    peak, device_name = peak_bandwidth(args, device)
    with tempfile.TemporaryDirectory() as workdir:
        model_dir, what = model_source(args, Path(workdir))
        forced = " (forced: min_new_tokens = max_new_tokens)" if args.force_length else ""
        print(f"model: {what}")
        print(f"device: {device_name}; torch {torch.__version__}")
        print(f"queries: {source}; max_new_tokens {args.max_new_tokens}{forced}")
        print(f"imhi-bench: batch_tokens {args.batch_tokens}, max_batch_size "
              f"{args.max_batch_size}; upstream: batch {args.upstream_batch_size}")  # fmt: skip
        sides = [run_ours(args, model_dir, queries, device)]
        _free_memory(device)
        if not args.skip_upstream:
            sides.append(run_upstream(args, model_dir, queries, device))
    print("\n".join(report(sides, peak)))
    if peak is None and device.startswith("cuda"):
        print("roofline: unknown GPU; pass --peak-bandwidth-gbs")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ImhiBenchError as err:
        sys.exit(f"bench_generate: {err}")
