"""The benchmark's workload: IMHI queries, their planned answer lengths, and the EOS that ends
each answer at its planned step on every engine.

Workloads (``--workload``): ``realistic`` (default): the answer to each query is as long as its
gold answer in the IMHI file (tokens, capped at ``--max-new-tokens``), and a share
``--runaway-share`` (default 2%) of queries runs to ``--max-new-tokens``; ``fixed``: every answer
runs to ``--max-new-tokens``; ``natural``: answers end where the model emits EOS (real checkpoints).
With ``realistic`` and ``fixed`` a logits processor emits EOS at the planned step on the upstream
and static sides; the continuous (and vLLM) side gets the same length per request
(``max_new_tokens`` = planned answer + EOS); on every side a hook on the LM head makes the
model's own EOS impossible, so every engine computes the same tokens.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from imhibench.common.errors import ImhiBenchError

GOLD = "gpt-3.5-turbo"  # the IMHI files' gold-answer column


def mirror() -> Path:
    """The local IMHI mirror: ``$IMHI_MIRROR``, else ``../shared/imhi`` beside the checkout."""
    repo = Path(__file__).resolve().parents[2]
    return Path(os.environ.get("IMHI_MIRROR", repo.parent / "shared" / "imhi"))


def load_queries(args: argparse.Namespace) -> tuple[list[str], list[str], str]:
    """The first ``--rows`` queries, their gold answers, and where they came from."""
    import pandas as pd

    path = (
        Path(args.csv)
        if args.csv
        else mirror() / "test_data/test_instruction" / f"{args.dataset}.csv"
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


def request_caps(plan: list[int] | None, n_prompts: int, max_new_tokens: int) -> list[int]:
    """Per request, the tokens to generate where requests take a length and no logits
    processor (continuous batching, vLLM): the planned answer and its EOS, at most the cap."""
    if plan is None:
        return [max_new_tokens] * n_prompts
    return [min(p + 1, max_new_tokens) for p in plan]


def trim_planned(rows: list[list[int]], plan: list[int] | None, cap: int) -> list[list[int]]:
    """Drop the token generated in place of a planned answer's EOS (see ``request_caps``)."""
    if plan is None:
        return rows
    return [r[:p] if p < cap else r for r, p in zip(rows, plan, strict=True)]


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
