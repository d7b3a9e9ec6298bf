#!/usr/bin/env python
"""Time the generation engines (upstream loop, static, continuous) on one realistic workload.

A thin adapter: the benchmark is ``imhibench.bench`` (``imhibench bench`` takes the same
arguments; ``imhibench gpu-check`` is the GPU check). See docs/benchmarks.md.

    python scripts/bench_generate.py --model tiny --rows 64        # CPU, tiny demo LLaMA
    python scripts/bench_generate.py --model llama7b-shape         # GPU, LLaMA-2-7B shape
    python scripts/bench_generate.py --model-dir DIR --workload natural  # a real checkpoint
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imhibench.bench.cli import bench_main
from imhibench.common.errors import ImhiBenchError

if __name__ == "__main__":
    try:
        sys.exit(bench_main())
    except ImhiBenchError as err:
        sys.exit(f"bench_generate: {err}")
