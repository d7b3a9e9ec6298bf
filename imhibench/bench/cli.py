"""Arguments and runs of ``imhibench bench``, ``imhibench gpu-check`` and ``imhibench
compare-engines`` (and of the scripts ``bench_generate.py`` and ``compare_engines.py``).

Heavy libraries are imported when a command runs, not when the ``imhibench`` CLI starts.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path

from imhibench.common.errors import ImhiBenchError

ENGINES = ("upstream", "static", "continuous", "vllm")
BENCH_DESCRIPTION = (
    "Time the generation engines (upstream loop, static, continuous) on one realistic workload."
)
GPU_CHECK_DESCRIPTION = (
    "The GPU check: LLaMA-2-7B-shaped random weights (no download) through every engine on the "
    "realistic workload, sized to end within about 8 minutes on one GPU; --model tiny on CPU."
)
#: The GPU check's workload, sized for 8 minutes on one GPU (an estimate: docs/benchmarks.md).
GPU_CHECK_ROWS = 64
GPU_CHECK_MAX_NEW_TOKENS = 256
GPU_CHECK_BUDGET_S = 8 * 60


def add_bench_arguments(p: argparse.ArgumentParser, gpu_check: bool = False) -> None:
    """The benchmark's arguments; the GPU check has the same with its own defaults."""
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--model",
        choices=["tiny", "llama7b-shape"],
        default="llama7b-shape" if gpu_check else "tiny",
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
    p.add_argument(
        "--rows",
        type=int,
        default=GPU_CHECK_ROWS if gpu_check else None,
        help=f"first N queries (default: {GPU_CHECK_ROWS})"
        if gpu_check
        else "first N queries (default: all; DR has 405)",
    )
    p.add_argument(
        "--max-new-tokens", type=int, default=GPU_CHECK_MAX_NEW_TOKENS if gpu_check else 64
    )
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
        default="auto" if gpu_check else "upstream,static,continuous",
        help="comma-separated: upstream, static, continuous, vllm"
        + ("; auto: the first three, and vllm on a GPU where it is installed" if gpu_check else ""),
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
    p.set_defaults(gpu_check=gpu_check)


def prepare_bench_args(args: argparse.Namespace) -> argparse.Namespace:
    """Defaults that depend on other arguments, and the checks argparse cannot make."""
    if args.workload is None:
        args.workload = "natural" if args.model_dir else "realistic"
    args.engines = args.engines.split(",")
    if args.engines != ["auto"] and not set(args.engines) <= set(ENGINES):
        raise ImhiBenchError(f"--engines: choose from {ENGINES}")
    if min(args.rows or 1, args.max_new_tokens, args.upstream_batch_size) < 1:
        raise ImhiBenchError("--rows, --max-new-tokens and --upstream-batch-size must be >= 1")
    if not 0 <= args.runaway_share <= 1:
        raise ImhiBenchError("--runaway-share must be within [0, 1]")
    return args


def _engines(args: argparse.Namespace, device: str) -> tuple[list[str], str | None]:
    """The engines to run, and why vLLM is left out of ``auto`` (None: it is not)."""
    if args.engines != ["auto"]:
        return args.engines, None
    import importlib.util

    engines = ["upstream", "static", "continuous"]
    if not device.startswith("cuda"):
        return engines, "vllm: not run (needs a GPU)"
    if importlib.util.find_spec("vllm") is None:
        return engines, "vllm: not run (not installed: pip install 'imhi-bench[vllm]')"
    return [*engines, "vllm"], None


def _versions() -> str:
    from importlib import metadata

    found = []
    for name in ("transformers", "vllm"):
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} not installed")
    return ", ".join(found)


def run_bench(args: argparse.Namespace) -> int:
    """Run the benchmark (or the GPU check) of prepared ``args`` and print its table."""
    import torch

    from imhibench.bench.engines import RUNS
    from imhibench.bench.models import model_source
    from imhibench.bench.report import peak_bandwidth, report
    from imhibench.bench.timing import free_memory, process_peak_rss_gb
    from imhibench.bench.workload import load_queries, plan_lengths
    from imhibench.common.devices import resolve_device
    from imhibench.generate.causal import load_tokenizer

    started = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.model == "llama7b-shape" and args.model_dir is None and device == "cpu":
        raise ImhiBenchError("--model llama7b-shape needs a GPU (27 GB of float32 weights)")
    engines, skipped = _engines(args, device)
    queries, golds, source = load_queries(args)
    peak, device_name = peak_bandwidth(args, device)
    with tempfile.TemporaryDirectory() as workdir:
        model_dir, what = model_source(args, Path(workdir))
        plan = plan_lengths(args, load_tokenizer(model_dir), golds)
        print(f"model: {what}")
        print(f"device: {device_name}; torch {torch.__version__}")
        if args.gpu_check:
            print(f"libraries: {_versions()}")
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
        for engine in engines:
            sides.append(RUNS[engine](args, model_dir, queries, plan, device))
            if args.gpu_check and not device.startswith("cuda"):
                sides[-1].peak_memory_gb = process_peak_rss_gb()
            free_memory(device)
    print("\n".join(report(sides, peak)))
    if peak is None and device.startswith("cuda"):
        print("roofline: unknown GPU; pass --peak-bandwidth-gbs")
    if args.gpu_check:
        if skipped:
            print(skipped)
        if not device.startswith("cuda"):
            print("peak GB on CPU: the process's peak resident memory so far (ru_maxrss)")
        total = time.perf_counter() - started
        budget = "within" if total <= GPU_CHECK_BUDGET_S else "OVER"
        print(f"gpu check: {total:.0f} s in all, {budget} the {GPU_CHECK_BUDGET_S // 60}-minute "
              "budget")  # fmt: skip
    return 0


def _standalone(argv, description: str, add_arguments, prepare, run) -> int:
    """A command outside the ``imhibench`` CLI: parse, check (a usage error), run."""
    parser = argparse.ArgumentParser(description=description)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        prepare(args)
    except ImhiBenchError as err:
        parser.error(str(err))
    return run(args)


def bench_main(argv: list[str] | None = None, gpu_check: bool = False) -> int:
    """The benchmark (or the GPU check) as a standalone command (``scripts/bench_generate.py``)."""
    description = GPU_CHECK_DESCRIPTION if gpu_check else BENCH_DESCRIPTION
    add = functools.partial(add_bench_arguments, gpu_check=gpu_check)
    return _standalone(argv, description, add, prepare_bench_args, run_bench)


def compare_main(argv: list[str] | None = None) -> int:
    """The engine comparison as a standalone command (``scripts/compare_engines.py``)."""
    from imhibench.bench import compare

    return _standalone(
        argv, compare.COMPARE_DESCRIPTION, compare.add_compare_arguments,
        compare.prepare_compare_args, compare.run_compare,
    )  # fmt: skip


def _run_bench_command(args: argparse.Namespace) -> None:
    run_bench(prepare_bench_args(args))


def _run_compare_command(args: argparse.Namespace) -> None:
    from imhibench.bench.compare import prepare_compare_args, run_compare

    run_compare(prepare_compare_args(args))


def add_commands(subparsers: argparse._SubParsersAction, epilog: str) -> None:
    """``bench``, ``gpu-check`` and ``compare-engines`` of the ``imhibench`` CLI."""
    from imhibench.bench.compare import COMPARE_DESCRIPTION, add_compare_arguments

    for name, gpu_check, summary, description in (
        ("bench", False, "time the generation engines on one workload", BENCH_DESCRIPTION),
        ("gpu-check", True, "LLaMA-2-7B shape through every engine", GPU_CHECK_DESCRIPTION),
    ):
        parser = subparsers.add_parser(name, help=summary, description=description, epilog=epilog)
        add_bench_arguments(parser, gpu_check)
        parser.set_defaults(handler=_run_bench_command)
    parser = subparsers.add_parser(
        "compare-engines", help="two engines' answers and F1 on N rows",
        description=COMPARE_DESCRIPTION, epilog=epilog,
    )  # fmt: skip
    add_compare_arguments(parser)
    parser.set_defaults(handler=_run_compare_command)
