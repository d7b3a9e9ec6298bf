"""Every `snakemake ... --config ...` command of the README, run as written (plus `--dry-run`,
in a scratch directory) through `snakemake` in a subprocess: a documented override must parse,
validate and plan."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest
from support import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")
# Commands in ```bash blocks (one per line) and in `inline code`.
COMMANDS = sorted(
    {
        match.strip()
        for match in re.findall(r"^\s*(snakemake [^\n]*--config [^\n]*)$", README, re.M)
        + re.findall(r"`(snakemake [^`]*--config [^`]*)`", README)
    }
)


def test_readme_documents_config_overrides():
    assert any("source: upstream" in c for c in COMMANDS), COMMANDS
    assert any("generation={" in c for c in COMMANDS), COMMANDS
    assert any("models=[" in c for c in COMMANDS), COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_config_command_plans(command, tmp_path):
    args = shlex.split(command)[1:]
    snakemake = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
    workdir = ["--directory", str(tmp_path)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(  # from the repository root, as a reader would
        [*snakemake, *workdir, "--dry-run", *args], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Job stats" in output or "Nothing to be done" in output, output[-3000:]


def test_readme_install_takes_torch_from_the_cpu_index():
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in README


def test_ci_runs_the_readme_test_command_and_pytest_shows_skip_reasons():
    block = re.search(r"\*\*Run the tests\*\*.*?```bash\n(.*?)\n```", README, re.S)
    command = block[1].strip()
    ci_commands = [
        line.split("#")[0].strip() for line in (REPO / ".ci/run").read_text().splitlines()
    ]
    assert command in ci_commands
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'^addopts = "[^"]*-rs', pyproject, re.M)


def test_readme_tells_how_to_recover_a_killed_run(tmp_path):
    unlock = re.search(r"^(snakemake [^\n]*--unlock)$", README, re.M)
    snakemake = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
    result = subprocess.run(
        [*snakemake, "--directory", str(tmp_path), *shlex.split(unlock[1])[1:]],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Unlocked working directory" in result.stdout + result.stderr
    profile = (REPO / "profiles/default/config.yaml").read_text()
    assert re.search(r"^rerun-incomplete: true$", profile, re.M)


def test_readme_says_sigterm_is_a_graceful_stop_and_rerunning_is_enough():
    text = " ".join(README.split())
    assert (
        "**A graceful stop**: `kill -TERM` to snakemake (SIGTERM) stops it from starting new "
        "jobs, lets the running ones finish, and exits with `WorkflowError: At least one job did "
        "not complete successfully.` although no job failed. Nothing is lost and nothing needs "
        "unlocking: rerunning the same command is enough, and it runs only what is left."
    ) in text


def test_the_readmes_report_file_is_ignored_by_git():
    names = re.findall(r"--report (\S+\.html)", README)
    assert "demo-report.html" in names
    ignored = subprocess.run(
        ["git", "check-ignore", *sorted(set(names))], cwd=REPO, capture_output=True, text=True
    )
    assert ignored.stdout.split() == sorted(set(names))
