#!/usr/bin/env python
"""Compare two generation engines on N rows of an IMHI test set: differing answers, F1 change.

A thin adapter: the comparison is ``imhibench.bench.compare`` (``imhibench compare-engines``
takes the same arguments). On a GPU node, before trusting a faster engine for a full run:

    python scripts/compare_engines.py --model-dir resources/checkpoints/<7B> --dataset DR \
        --rows 200 --engines static,vllm
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imhibench.bench.cli import compare_main
from imhibench.common.errors import ImhiBenchError

if __name__ == "__main__":
    try:
        sys.exit(compare_main())
    except ImhiBenchError as err:
        sys.exit(f"compare_engines: {err}")
