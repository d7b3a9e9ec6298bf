"""A small demo run (2 models x 2 test sets x 2 rows, about a minute on 2 cores), run once per
session and shared by the tests that need a finished workdir: test_incremental, test_report and
the local reference of test_slurm. Tests must not change that workdir (dry runs and reports only).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from support import REPO, require_mirror

COMMIT = "42cd29dfb91092843daae53ec162c75605d753ff"
# One causal model (instruction split) and one seq2seq model (completion split); demo-llama asks
# for one GPU so that the SLURM test sees a GPU request (locally `gpu` limits nothing).
SMALL = {
    "models": ["demo-llama", "demo-bart"],
    "datasets": ["DR", "SAD"],
    "rows_per_dataset": 2,
    "model_catalog": {"demo-llama": {"resources": {"gpu": 1}}},
}
_finished: dict[str, Path] = {}


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake_command(workdir: Path, *args: str, configs: tuple[Path, ...] = ()) -> list[str]:
    """`snakemake` on the demo config + `configs` (later files override earlier keys)."""
    return [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir),
        "--configfile", str(REPO / "workflow_config" / "demo.yaml"), *map(str, configs),
        *args,
    ]  # fmt: skip


def run(command: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def small_config(directory: Path) -> Path:
    """The small demo's config file (the IMHI rows come from the local mirror)."""
    imhi = {"imhi": {"commit": COMMIT, "source": str(require_mirror())}}
    return write_config(directory / "small.yaml", {**SMALL, **imhi})


def finished_small_demo(tmp_path_factory) -> tuple[Path, Path]:
    """(workdir, config) of the small demo, run to completion once per session."""
    if "workdir" not in _finished:
        workdir = tmp_path_factory.mktemp("small_demo")
        config = small_config(tmp_path_factory.mktemp("small_config"))
        result = run(snakemake_command(workdir, "--cores", "2", configs=(config,)))
        assert result.returncode == 0, result.stderr[-4000:]
        _finished.update(workdir=workdir, config=config)
    return _finished["workdir"], _finished["config"]
