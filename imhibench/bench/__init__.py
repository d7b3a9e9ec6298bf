"""The generation benchmark: ``imhibench bench``, ``imhibench gpu-check``, ``imhibench
compare-engines`` (``scripts/bench_generate.py`` and ``scripts/compare_engines.py`` call these).

Every engine answers the same IMHI queries with the same weights, in one run:

- **upstream**: ``imhibench.generate.upstream.upstream_token_ids`` (IMHI.py's loop, the same code
  as the pipeline's ``engine: upstream``): float32, batches of 8 in file order, left padding;
- **static**: ``HFGenerator`` (length-sorted padded batches under a token budget, dtype auto);
- **continuous**: transformers continuous batching (``generate_batch``'s manager), dtype auto;
- **vllm** (GPU, when installed): vLLM's offline ``LLM.generate``, bfloat16.

Modules: ``workload`` (queries and planned answer lengths), ``models`` (the benchmarked model),
``timing`` (time, forward passes, token slots, memory of one engine), ``engines`` (one runner per
engine), ``report`` (the printed table), ``cli`` (arguments and the runs), ``compare``
(two engines' answers and F1 on N rows). See docs/benchmarks.md.
"""
