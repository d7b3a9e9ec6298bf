"""Compare two generation engines on N rows of an IMHI test set: differing answers, F1 change.

Meant for a GPU node, before trusting a faster engine (e.g. ``vllm``) for a full run:

    imhibench compare-engines --model-dir resources/checkpoints/<7B> --dataset DR \\
        --rows 200 --engines static,vllm

Both engines answer the same queries with the same settings (greedy, ``--dtype``); answers are
labelled with upstream's keyword rules (``rule`` labeler) against the gold labels of the file,
so the F1 difference needs no classifier. Hugging Face (``static``) is the reference engine.
"""

from __future__ import annotations

import argparse
import gc
from pathlib import Path

from imhibench.common.errors import ImhiBenchError

COMPARE_DESCRIPTION = (
    "Compare two generation engines on N rows of an IMHI test set: differing answers, F1 change."
)
SPLIT_DIRS = {"instruction": "test_data/test_instruction", "completion": "test_data/test_complete"}


def add_compare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-dir", required=True, help="causal checkpoint, or LoRA adapter")
    p.add_argument("--base-model-dir", help="LoRA only: the base model")
    p.add_argument("--dataset", default="DR", help="IMHI dataset (its task's labels)")
    p.add_argument("--split", choices=sorted(SPLIT_DIRS), default="instruction")
    p.add_argument("--csv", help="test file instead of the mirror's (query, gpt-3.5-turbo)")
    p.add_argument("--rows", type=int, default=100, help="first N rows")
    p.add_argument("--engines", default="static,continuous", help="two engines, comma-separated")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    p.add_argument("--max-new-tokens", type=int, default=2048)
    p.add_argument("--device", default="auto")


def prepare_compare_args(args: argparse.Namespace) -> argparse.Namespace:
    args.engines = args.engines.split(",")
    if len(args.engines) != 2:
        raise ImhiBenchError("--engines: give exactly two, e.g. static,vllm")
    return args


def answer(args: argparse.Namespace, engine: str, queries: list[str]) -> list[str]:
    """The responses of one engine (its model released afterwards)."""
    from imhibench.common.devices import resolve_device
    from imhibench.generate import GenerationSettings, load_backend

    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens, dtype=args.dtype, engine=engine
    )
    kind = "lora" if args.base_model_dir else "causal"
    backend = load_backend(
        kind, model_dir=args.model_dir, base_model_dir=args.base_model_dir,
        settings=settings, device=resolve_device(args.device),
    )  # fmt: skip
    texts = backend.generate(queries).texts
    del backend
    gc.collect()
    return texts


def compare(task, gold_labels, first: list[str], second: list[str]) -> dict:
    """Differing answers and the weighted F1 (rule labels) of each side."""
    from imhibench.label import rule_labels
    from imhibench.score.metrics.correctness import correctness_metrics

    f1 = [
        correctness_metrics(gold_labels, rule_labels(task, texts)[0])["weighted_f1"]
        for texts in (first, second)
    ]
    differ = sum(a != b for a, b in zip(first, second, strict=True))
    return {"rows": len(first), "differ": differ, "f1": f1, "f1_difference": f1[1] - f1[0]}


def run_compare(args: argparse.Namespace) -> int:
    """Answer the rows with both engines of prepared ``args`` and print the comparison."""
    from imhibench.bench.workload import mirror
    from imhibench.common.tasks import get_task
    from imhibench.fetch.test_sets import prepare_test_set

    path = Path(args.csv) if args.csv else mirror() / SPLIT_DIRS[args.split] / f"{args.dataset}.csv"
    table = prepare_test_set(path, args.dataset, args.dataset, args.split).head(args.rows)
    queries = table["query"].tolist()
    answers = [answer(args, engine, queries) for engine in args.engines]
    result = compare(get_task(args.dataset), table["gold_label"].tolist(), *answers)
    first, second = args.engines
    print(f"{path}: first {result['rows']} rows; model {args.model_dir}; dtype {args.dtype}")
    print(f"answers that differ ({first} vs {second}): {result['differ']}/{result['rows']}")
    print(
        f"weighted F1 (rule labels): {first} {result['f1'][0]:.2f}, {second} "
        f"{result['f1'][1]:.2f}, difference {result['f1_difference']:+.2f}"
    )
    return 0
