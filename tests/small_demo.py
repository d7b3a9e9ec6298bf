"""A small demo run (2 models x 2 test sets x 2 rows, about a minute on 2 cores): its config and
the `snakemake` command line shared by the end-to-end tests. conftest.py's session fixture
`small_demo` runs it once per session for the tests that need a finished workdir
(test_incremental, test_report, test_refetch_workflow); those tests must not change that
workdir (dry runs and reports only; a test that reruns jobs works on a copy,
`support.copy_run`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from support import REPO, require_mirror

COMMIT = "42cd29dfb91092843daae53ec162c75605d753ff"
# One causal model (instruction split) and one seq2seq model (completion split).
SMALL = {"models": ["demo-llama", "demo-bart"], "datasets": ["DR", "SAD"], "rows_per_dataset": 2}


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


def run(
    command: list[str], timeout: int = 900, env: dict | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def demo_snakemake(
    workdir: Path,
    *args: str,
    configs: tuple[Path, ...] = (),
    timeout: int = 900,
    env: dict | None = None,
) -> subprocess.CompletedProcess:
    """`snakemake --cores 2` on the demo config + `configs`."""
    return run(snakemake_command(workdir, "--cores", "2", *args, configs=configs), timeout, env)


def mirror_config(path: Path, overlay: dict) -> Path:
    """`overlay` on top of the demo config, its IMHI rows from the local mirror, written to
    `path`."""
    imhi = {"imhi": {"commit": COMMIT, "source": str(require_mirror())}}
    return write_config(path, {**overlay, **imhi})


def small_config(directory: Path) -> Path:
    """The small demo's config file."""
    return mirror_config(directory / "small.yaml", SMALL)


def run_small_demo(workdir: Path, config_dir: Path) -> Path:
    """Run the small demo to completion in `workdir` (its config written to `config_dir`); the
    config file."""
    config = small_config(config_dir)
    result = demo_snakemake(workdir, configs=(config,))
    assert result.returncode == 0, result.stderr[-4000:]
    return config
