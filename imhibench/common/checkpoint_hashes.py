"""sha256 of a local checkpoint's weight, tokenizer and config files, for provenance.

A checkpoint given as `path:` has no hub revision: two different sets of weights at the same
path would otherwise look identical. Hashing 60 GB takes minutes, so each digest is cached by
(absolute path, size, mtime) in a small JSON file per directory under `.snakemake/` of the
working directory; a rerun hashes only files that changed. The cache is an optimisation only:
an unreadable or unwritable cache means hashing again, never a failed job.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from imhibench.common.hashing import sha256_file
from imhibench.common.io import write_json

log = logging.getLogger(__name__)

# Files that decide what a checkpoint computes: weights, tokenizer, configs, and the chat
# template (transformers saves it as `chat_template.jinja`; `chat_template: true` reads it).
HASHED_SUFFIXES = (
    ".safetensors", ".bin", ".pt", ".pth", ".model", ".json", ".txt", ".tiktoken", ".jinja",
)  # fmt: skip
# Written by imhibench.fetch.checkpoints next to the files it describes; not part of the checkpoint.
SKIPPED_NAMES = frozenset({"imhibench_checkpoint.json"})
DEFAULT_CACHE_DIR = Path(".snakemake") / "imhibench-sha256"


def hashed_files(directory: Path) -> list[Path]:
    """The checkpoint files of `directory` (top level, sorted) whose content is hashed."""
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and p.suffix in HASHED_SUFFIXES and p.name not in SKIPPED_NAMES
    )


def _cache_file(directory: Path, cache_dir: Path) -> Path:
    key = hashlib.sha256(str(directory).encode("utf-8")).hexdigest()[:24]
    return cache_dir / f"{key}.json"


def _read_cache(path: Path) -> dict:
    try:
        cache = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return cache.get("files", {}) if isinstance(cache, dict) else {}


def local_checkpoint_sha256(
    directory: str | Path, cache_dir: str | Path | None = None
) -> dict[str, str]:
    """{file name: sha256} of the checkpoint files in `directory`, reusing cached digests of
    files whose size and mtime are unchanged."""
    directory = Path(directory).resolve()
    cache_path = _cache_file(directory, Path(cache_dir or DEFAULT_CACHE_DIR))
    cached = _read_cache(cache_path)
    entries, digests, hashed = {}, {}, 0
    for path in hashed_files(directory):
        stat = path.stat()
        entry = cached.get(path.name, {})
        if entry.get("size") != stat.st_size or entry.get("mtime_ns") != stat.st_mtime_ns:
            entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
            entry["sha256"] = sha256_file(path)
            hashed += 1
        entries[path.name] = entry
        digests[path.name] = entry["sha256"]
    if hashed:
        log.info("hashed %d checkpoint file(s) of %s", hashed, directory)
        try:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            write_json({"directory": str(directory), "files": entries}, cache_path)
        except OSError as err:
            log.warning("could not save the sha256 cache %s (%s); next run hashes again",
                        cache_path, err)  # fmt: skip
    return digests
