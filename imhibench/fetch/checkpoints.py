"""Model checkpoints: fetch from the Hugging Face hub at a pinned revision, or use a local dir.

`fetch_checkpoint` resolves a branch/tag/sha to a commit sha, downloads the selected files into a
hidden partial directory next to `dest` and renames it into place only when complete, so a job
killed mid-download never leaves a half `dest`. Both entry points describe the checkpoint with a
manifest (sha256 of every file) that is also written to ``dest/imhibench_checkpoint.json``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import filter_repo_objects

from imhibench.common.errors import ImhiBenchError
from imhibench.common.provenance import CHECKPOINT_MANIFEST, sha256_file

MANIFEST_NAME = CHECKPOINT_MANIFEST
PARTIAL_MARKER = ".imhibench_partial.json"
HF_LOCAL_DIR_METADATA = ".cache"  # huggingface_hub's bookkeeping inside a `local_dir` download

#: Files fetched by default: configs (model, generation, PEFT adapter, tokenizer, special tokens,
#: safetensors shard index), safetensors weights (incl. ``adapter_model.safetensors``),
#: sentencepiece models, text vocab/merges files, chat templates saved as files of their own
#: (``chat_template.jinja``, ``additional_chat_templates/*.jinja``: transformers writes them so
#: since 4.43, and a chat model or LLM judge without its template cannot answer) and tiktoken
#: vocabularies.
DEFAULT_ALLOW_PATTERNS: tuple[str, ...] = (
    "*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken",
)  # fmt: skip
BIN_PATTERNS: tuple[str, ...] = ("*.bin",)
PICKLE_SUFFIXES: tuple[str, ...] = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
WEIGHTS_CHOICES: tuple[str, ...] = ("safetensors", "bin")


def _hub_errors() -> tuple[type[BaseException], ...]:
    """Exceptions a hub call raises for network, HTTP and bad-id problems."""
    errors: list[type[BaseException]] = [HfHubHTTPError, EntryNotFoundError, OSError, ValueError]
    try:  # huggingface_hub >= 1.0 talks HTTP through httpx2; its transport errors are not OSErrors
        import httpx2

        errors.append(httpx2.HTTPError)
    except ImportError:  # pragma: no cover - older huggingface_hub
        pass
    return tuple(errors)


HUB_ERRORS = _hub_errors()


def _iter_files(root: Path) -> Iterable[str]:
    """Relative POSIX paths of files under `root`, minus our manifest and hub bookkeeping."""
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        if rel_dir == Path("."):
            dirnames[:] = [d for d in dirnames if d != HF_LOCAL_DIR_METADATA]
            filenames = [f for f in filenames if f not in (MANIFEST_NAME, PARTIAL_MARKER)]
        for name in filenames:
            yield (rel_dir / name).as_posix()


def file_manifest(root: str | Path) -> dict[str, str]:
    """``{relative_path: sha256}`` for every file under `root`, sorted by path."""
    root = Path(root)
    return {rel: sha256_file(root / rel) for rel in sorted(_iter_files(root))}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _as_list(value: str | Sequence[str] | None, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    items = list(value)
    if not all(isinstance(v, str) and v for v in items):
        raise ImhiBenchError(f"{what} must be a list of non-empty strings, got {value!r}")
    return items


def _literal(name: str) -> str:
    """An fnmatch pattern matching exactly `name`."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _describe(exc: BaseException) -> str:
    """Original error plus a hint for the usual causes."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, GatedRepoError) or getattr(
        getattr(exc, "response", None), "status_code", None
    ) in (401, 403):
        hint = (
            "the repo is gated or private: accept its terms on the hub and provide a token "
            "(HF_TOKEN environment variable or `hf auth login`)"
        )
    elif isinstance(exc, RepositoryNotFoundError):
        hint = "no such repo (or it is private and no valid token was given)"
    elif isinstance(exc, RevisionNotFoundError):
        hint = "no branch, tag or commit of that name in the repo"
    else:
        return text
    return f"{hint}; original error: {text}"


def _read_manifest(directory: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((directory / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _prepare_partial(partial: Path, marker: dict[str, Any]) -> None:
    """Reuse a partial dir left by a killed fetch of the same commit and files; else start fresh."""
    if partial.is_symlink() or partial.is_file():
        partial.unlink()
    elif partial.exists():
        try:
            previous = json.loads((partial / PARTIAL_MARKER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        if previous == marker:
            return
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    _write_json(partial / PARTIAL_MARKER, marker)


def _prune(partial: Path, keep: set[str]) -> None:
    """Delete files the selection does not name (leftovers of an earlier partial fetch)."""
    for rel in list(_iter_files(partial)):
        if rel not in keep:
            (partial / rel).unlink()


@contextlib.contextmanager
def _exclusive(dest: Path):
    """Hold an exclusive lock on `dest` (flock on a `.<name>.lock` file beside it): two jobs
    fetching the same checkpoint at once take turns instead of writing one partial dir."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.with_name(f".{dest.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _install(partial: Path, dest: Path) -> None:
    """Atomically move the finished `partial` dir to `dest`, replacing an older fetch there."""
    if not dest.exists():
        os.replace(partial, dest)
        return
    old = dest.with_name(f".{dest.name}.imhibench-old")
    if old.exists():
        shutil.rmtree(old)
    os.replace(dest, old)
    os.replace(partial, dest)
    shutil.rmtree(old, ignore_errors=True)


def _check_weights(
    selected: list[str], repo_files: list[str], weights: str, where: str, patterns: list[str]
) -> None:
    """Refuse selections without safetensors weights (or ``.bin`` ones when allowed)."""
    suffixes = (".safetensors", ".bin") if weights == "bin" else (".safetensors",)
    if any(f.endswith(suffixes) for f in selected):
        return
    pickles = sorted(f for f in repo_files if f.endswith(PICKLE_SUFFIXES))
    has_safetensors = any(f.endswith(".safetensors") for f in repo_files)
    if weights == "safetensors" and pickles and not has_safetensors:
        raise ImhiBenchError(
            f"{where} has no *.safetensors weights, only pickle weights ({', '.join(pickles)}). "
            "Pickle .bin weights are refused by default because loading them can execute "
            "arbitrary code; to allow them for this model set `weights: bin` in the config."
        )
    raise ImhiBenchError(
        f"{where}: no weight files ({' or '.join('*' + s for s in suffixes)}) among the files "
        f"selected by allow_patterns {patterns}; repo files: {', '.join(sorted(repo_files))}"
    )


def fetch_checkpoint(
    hub_id: str,
    revision: str,
    dest: str | Path,
    *,
    allow_patterns: list[str] | None = None,
    extra_files: Sequence[str] = (),
    token: str | None = None,
    endpoint: str | None = None,
    weights: str = "safetensors",
) -> dict[str, Any]:
    """Download `hub_id` at `revision` (branch, tag or sha) into `dest`; return its manifest.

    The revision is resolved to a commit sha first and only that sha is downloaded. Files are
    `allow_patterns` (default `DEFAULT_ALLOW_PATTERNS`) plus `extra_files` (exact names, which
    must exist) plus ``*.bin`` when ``weights="bin"``. Without ``*.safetensors`` weights the fetch
    is refused unless ``weights="bin"``. Files are checked against the hub's LFS sha256s. If
    `dest` already holds a fetch of the same commit with these files it is returned as is; an
    older imhi-bench fetch is replaced; any other existing `dest` is an error.
    """
    if not isinstance(hub_id, str) or not hub_id.strip():
        raise ImhiBenchError(f"hub_id must be a non-empty 'owner/name' string, got {hub_id!r}")
    if not isinstance(revision, str) or not revision.strip():
        raise ImhiBenchError(
            f"revision for {hub_id!r} must be a non-empty branch, tag or commit sha, "
            f"got {revision!r}"
        )
    if weights not in WEIGHTS_CHOICES:
        raise ImhiBenchError(
            f"weights for {hub_id!r} must be one of {list(WEIGHTS_CHOICES)}, got {weights!r}"
        )
    extras = _as_list(extra_files, f"extra_files for {hub_id!r}")
    base = _as_list(allow_patterns, f"allow_patterns for {hub_id!r}")
    patterns = (base if allow_patterns is not None else list(DEFAULT_ALLOW_PATTERNS)) + [
        _literal(name) for name in extras
    ]
    if weights == "bin":
        patterns += [p for p in BIN_PATTERNS if p not in patterns]

    api = HfApi(endpoint=endpoint.rstrip("/") if endpoint else None, token=token)
    where = f"hub repo {hub_id!r} at revision {revision!r} (endpoint {api.endpoint})"
    try:
        info = api.model_info(hub_id, revision=revision, files_metadata=True)
    except HUB_ERRORS as exc:
        raise ImhiBenchError(f"cannot resolve {where}: {_describe(exc)}") from exc
    sha = info.sha
    if not sha or info.siblings is None:
        raise ImhiBenchError(f"{where}: the hub answer lacks a commit sha or file list")
    where = f"hub repo {hub_id!r} at revision {revision!r} (commit {sha}, endpoint {api.endpoint})"
    lfs_sha256 = {s.rfilename: s.lfs.sha256 for s in info.siblings if s.lfs is not None}
    repo_files = [s.rfilename for s in info.siblings]

    missing_extras = [name for name in extras if name not in repo_files]
    if missing_extras:
        raise ImhiBenchError(f"{where} has no file(s) {missing_extras} named in extra_files")
    selected = sorted(filter_repo_objects(repo_files, allow_patterns=patterns))
    _check_weights(selected, repo_files, weights, where, patterns)

    dest = Path(dest).absolute()
    with _exclusive(dest):
        return _fetch_locked(hub_id, revision, sha, dest, selected, patterns, token, api, where,
                             lfs_sha256)  # fmt: skip


def _fetch_locked(hub_id, revision, sha, dest, selected, patterns, token, api, where, lfs_sha256):
    """The part of `fetch_checkpoint` that reads and writes `dest`, under its lock."""
    if dest.exists():
        existing = _read_manifest(dest)
        if existing is None:
            raise ImhiBenchError(
                f"checkpoint destination {dest} exists but is not an imhi-bench checkpoint "
                f"(no {MANIFEST_NAME}); remove it or choose another path"
            )
        same_commit = (existing.get("hub_id"), existing.get("resolved_revision")) == (hub_id, sha)
        if same_commit and set(selected) == set(existing.get("files") or {}):
            return existing
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.imhibench-partial")
    _prepare_partial(partial, {"hub_id": hub_id, "resolved_revision": sha, "patterns": patterns})

    try:
        snapshot_download(
            hub_id,
            revision=sha,
            local_dir=partial,
            allow_patterns=patterns,
            token=token,
            endpoint=api.endpoint,
        )
    except HUB_ERRORS as exc:
        raise ImhiBenchError(f"download of {where} failed: {_describe(exc)}") from exc

    missing = [rel for rel in selected if not (partial / rel).is_file()]
    if missing:
        raise ImhiBenchError(f"download of {where} is incomplete, missing {missing}; rerun it")
    shutil.rmtree(partial / HF_LOCAL_DIR_METADATA, ignore_errors=True)
    _prune(partial, set(selected))
    files = file_manifest(partial)
    corrupt = [rel for rel, digest in files.items() if lfs_sha256.get(rel, digest) != digest]
    if corrupt:
        for rel in corrupt:
            (partial / rel).unlink()
        raise ImhiBenchError(
            f"download of {where}: sha256 of {corrupt} differs from the hub's; "
            "the files were deleted, rerun the fetch"
        )
    manifest: dict[str, Any] = {
        "hub_id": hub_id,
        "requested_revision": revision,
        "resolved_revision": sha,
        "endpoint": api.endpoint,
        "files": files,
        "fetched_at": _now(),
    }
    (partial / PARTIAL_MARKER).unlink()
    _write_json(partial / MANIFEST_NAME, manifest)
    _install(partial, dest)
    return manifest


def use_local_checkpoint(path: str | Path) -> dict[str, Any]:
    """Describe an existing local checkpoint directory (no copy): manifest with sha256 per file."""
    root = Path(path).expanduser()
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise ImhiBenchError(f"local checkpoint {root} {what}")
    if not ((root / "config.json").is_file() or (root / "adapter_config.json").is_file()):
        raise ImhiBenchError(
            f"local checkpoint {root} has neither config.json nor adapter_config.json; "
            "point it at a directory written by save_pretrained"
        )
    return {
        "hub_id": None,
        "requested_revision": None,
        "resolved_revision": None,
        "endpoint": None,
        "local_path": str(root.resolve()),
        "files": file_manifest(root),
        "fetched_at": _now(),
    }
