"""What produced a result: package versions, imhi-bench git sha, inputs' checksums, settings."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import imhibench
from imhibench.common.hashing import sha256_file  # also imported from here by callers

PACKAGES = (
    "imhibench", "torch", "transformers", "peft", "huggingface_hub", "tokenizers", "safetensors",
    "pandas", "pyarrow", "scikit-learn", "scipy", "krippendorff", "rouge-score", "sacrebleu",
    "bert-score", "snakemake",
)  # fmt: skip
CHECKPOINT_MANIFEST = "imhibench_checkpoint.json"  # written by imhibench.fetch.checkpoints


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state(directory: str | Path | None = None) -> dict[str, str | bool | None]:
    """The commit of the imhi-bench checkout in use, and whether it had uncommitted changes."""
    directory = Path(directory or Path(imhibench.__file__).parent)

    def git(*args: str) -> str | None:
        try:
            result = subprocess.run(
                ["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    dirty = None if sha is None else bool(git("status", "--porcelain", "--untracked-files=no"))
    return {"git_sha": sha, "git_dirty": dirty}


def checkpoint_provenance(directory: str | Path) -> dict:
    """The fetch manifest of a hub checkpoint, or the path of a local one with the sha256 of
    its weight, tokenizer and config files (cached by size and mtime, see checkpoint_hashes)."""
    from imhibench.common.checkpoint_hashes import local_checkpoint_sha256

    manifest = Path(directory) / CHECKPOINT_MANIFEST
    if manifest.is_file():
        record = json.loads(manifest.read_text(encoding="utf-8"))
        record.pop("files", None)  # per-file digests stay in the manifest itself
        record.pop("fetched_at", None)  # a time of day: see build_provenance
        return record
    return {
        "local_path": str(Path(directory).resolve()),
        "resolved_revision": None,
        "files_sha256": local_checkpoint_sha256(directory),
    }


def snakemake_job() -> dict | None:
    """The Snakemake job running this process, when called from a workflow script: its rule,
    wildcards, the workflow's seed, the sha256 of every input file (a directory's Parquet
    files each, as the per-model label and score jobs write them; other directories are
    checkpoints, described by their fetch manifest), and the SLURM job id under
    `--executor slurm`."""
    job = getattr(sys.modules.get("__main__"), "snakemake", None)
    if job is None or not hasattr(job, "rule") or not hasattr(job, "input"):
        return None
    return {
        "rule": job.rule,
        "wildcards": {k: str(v) for k, v in job.wildcards.items()},
        "seed": job.config.get("seed"),
        "inputs_sha256": _inputs_sha256(job.input),
        "threads": getattr(job, "threads", None),
        "resources": _job_resources(job),
        "host": platform.node(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }


def _inputs_sha256(paths) -> dict[str, str | None]:
    """path -> sha256 of each input file; a directory's Parquet files are listed each, a
    directory without any (a checkpoint) is listed as None."""
    digests: dict[str, str | None] = {}
    for path in map(str, paths):
        tables = sorted(Path(path).glob("*.parquet")) if Path(path).is_dir() else []
        if tables:
            digests.update({str(table): sha256_file(table) for table in tables})
        else:
            digests[path] = sha256_file(path) if Path(path).is_file() else None
    return digests


def _job_resources(job) -> dict:
    """The job's cluster resources (gpu, mem_mb, runtime, ...): not params, so recorded here."""
    resources = getattr(job, "resources", None)
    if resources is None:
        return {}
    return {k: v for k, v in resources.items() if not k.startswith("_")}


def build_provenance(stage: str, **fields: object) -> dict:
    """A provenance record for one output file of `stage`; inside a Snakemake job it also
    records the job (see `snakemake_job`) and the workflow's seed, unless `fields` has one.

    No time of day: a data file that others hash (a resume key, a job's inputs, Snakemake's
    checksum of a re-made input) must be byte-equal when its content is, so an identical
    re-fetch changes nothing downstream. When a job ran is in its log (every line is dated)."""
    job = snakemake_job()
    record = {
        "stage": stage,
        "imhibench_version": imhibench.__version__,
        **git_state(),
        "python": platform.python_version(),
        "packages": package_versions(),
        **fields,
    }
    if job is not None:
        record["job"] = job
        record.setdefault("seed", job["seed"])
    return record
