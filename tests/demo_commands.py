"""The `snakemake` command lines of the end-to-end tests: the demo config
(workflow_config/demo.yaml) plus overlays, in a test's working directory. conftest.py's
`demo_run` runs the whole demo once per pytest run for the tests that read a finished workdir.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from support import REPO, require_mirror

COMMIT = "42cd29dfb91092843daae53ec162c75605d753ff"


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
