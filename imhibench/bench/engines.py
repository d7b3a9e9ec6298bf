"""One runner per engine: load the model, warm up, run the workload timed, record the work.

Each runner takes the parsed arguments, the model (tokenizer) directory, the queries, the planned
answer lengths (None: natural) and the device, and returns a ``Side``.
"""

from __future__ import annotations

import argparse

from imhibench.bench.models import load_model
from imhibench.bench.timing import Side, Timer, finish
from imhibench.bench.workload import forbid_eos, request_caps, trim_planned, with_planned_eos
from imhibench.common.errors import ImhiBenchError

#: vLLM pre-allocates this share of the GPU (its ``gpu_memory_utilization``), less than its
#: default 0.9: this process still holds its CUDA context after the other engines' models.
VLLM_GPU_MEMORY_UTILIZATION = 0.85


def _settings(args: argparse.Namespace, engine: str):
    from imhibench.generate import GenerationSettings

    return GenerationSettings(
        max_new_tokens=args.max_new_tokens, seed=args.seed, batch_tokens=args.batch_tokens,
        max_batch_size=args.max_batch_size, engine=engine,
    )  # fmt: skip


def _eos(generator) -> int:
    return next(iter(generator.eos_ids))


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
    return finish(side, timer, ours.model, len(batches), device, prompts, args.max_new_tokens)


def run_upstream(args, model_dir, queries, plan, device) -> Side:
    """The upstream loop (the pipeline's ``engine: upstream`` code) in float32, as IMHI.py."""
    import torch
    from transformers import GenerationConfig

    from imhibench.generate.base import cut_at_eos
    from imhibench.generate.causal import load_tokenizer
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
    return finish(side, timer, model, -(-len(queries) // bs), device, prompts, args.max_new_tokens)


def run_continuous(args, model_dir, queries, plan, device) -> Side:
    """transformers continuous batching; each request's length capped at its planned answer."""
    from imhibench.generate.base import cut_at_eos, resolve_dtype
    from imhibench.generate.causal import load_tokenizer
    from imhibench.generate.continuous import ContinuousGenerator

    model = load_model(args, model_dir, resolve_dtype("auto", device), device)
    engine = ContinuousGenerator(
        model, load_tokenizer(model_dir), _settings(args, "continuous"), device
    )
    side = Side("continuous", str(model.dtype).removeprefix("torch."))
    engine.generate(queries[:2])  # warm-up, not timed
    prompts = engine.encode(queries)
    n = args.max_new_tokens
    caps = request_caps(plan, len(prompts), n)
    forbid_eos(engine.model, plan, _eos(engine))
    with (
        Timer(engine.model, device) as timer,
        engine.model.continuous_batching_context_manager(
            generation_config=engine.generation_config, block=True, timeout=5,
            # the pipeline's scheduling and cache sizing: on CPU transformers' own default
            # sizes for a GPU (filling those tensors took 32 s of a 6-query CPU run)
            continuous_batching_config=engine.scheduler_config(prompts),
        ) as manager,
    ):  # fmt: skip
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
    rows = trim_planned(rows, plan, n)  # the last of a planned answer stands for its EOS
    side.token_ids = [cut_at_eos(r, engine.eos_ids) for r in rows]
    side.texts = [engine.tokenizer.decode(x, skip_special_tokens=True) for x in side.token_ids]
    return finish(side, timer, engine.model, 0, device, prompts, args.max_new_tokens)


def run_vllm(args, model_dir, queries, plan, device) -> Side:
    """vLLM's offline engine (GPU; NOT RUN HERE: no GPU was available), bfloat16, greedy.

    Follows vLLM's documented API: ``LLM(model, tokenizer, dtype, seed, load_format,
    gpu_memory_utilization)``, ``generate`` with token-id prompts and one ``SamplingParams`` per
    request. For the LLaMA-2-7B shape vLLM builds its own random weights from the config
    (``load_format="dummy"``: nothing is read), so its answers are not compared with the other
    engines'; the planned lengths hold (``ignore_eos`` and ``max_tokens`` per request). vLLM
    runs its model in another process: forward passes, wasted slots, weight traffic and peak
    memory are not observable from here (printed n/a).
    """
    import tempfile
    import time

    from imhibench.bench.models import builds_random_weights, llama7b_config
    from imhibench.generate.base import cut_at_eos
    from imhibench.generate.causal import load_tokenizer
    from imhibench.generate.vllm_engine import _import_vllm

    if not device.startswith("cuda"):
        raise ImhiBenchError(f"engine 'vllm' needs a GPU; device is {device!r}")
    vllm = _import_vllm()
    tokenizer = load_tokenizer(model_dir)
    eos = tokenizer.eos_token_id
    prompts = tokenizer(queries)["input_ids"]
    n = args.max_new_tokens
    with tempfile.TemporaryDirectory() as config_dir:  # held until vLLM is done with it
        options = {}
        if builds_random_weights(args):
            config = llama7b_config(tokenizer, model_dir)
            config.architectures = ["LlamaForCausalLM"]  # vLLM picks its model class by it
            config.save_pretrained(config_dir)
            options = {"load_format": "dummy"}
        llm = vllm.LLM(
            model=config_dir if options else model_dir,
            tokenizer=model_dir,
            dtype="bfloat16",
            seed=args.seed,
            gpu_memory_utilization=VLLM_GPU_MEMORY_UTILIZATION,
            **options,
        )

        def params(cap: int):
            return vllm.SamplingParams(
                temperature=0, max_tokens=cap, ignore_eos=plan is not None, seed=args.seed
            )

        requests = [{"prompt_token_ids": ids} for ids in prompts]
        llm.generate(requests[:2], [params(n)] * len(requests[:2]), use_tqdm=False)  # warm-up
        caps = request_caps(plan, len(prompts), n)
        start = time.perf_counter()
        outputs = llm.generate(requests, [params(cap) for cap in caps], use_tqdm=False)
        seconds = time.perf_counter() - start
        del llm
    rows = trim_planned([list(o.outputs[0].token_ids) for o in outputs], plan, n)
    side = Side("vllm", "bfloat16", seconds=seconds, forward_calls=None)
    side.own_weights = bool(options)
    side.token_ids = [cut_at_eos(r, {eos}) for r in rows]
    side.texts = [tokenizer.decode(x, skip_special_tokens=True) for x in side.token_ids]
    return side


RUNS = {"upstream": run_upstream, "static": run_static, "continuous": run_continuous,
        "vllm": run_vllm}  # fmt: skip
