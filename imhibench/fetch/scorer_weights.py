"""The BARTScore ParaBank2 weights file (upstream's ``bart_score.pth``): fetch, verify, describe.

Upstream ``src/score.py`` always calls ``bart_scorer.load(path='bart_score.pth')``: the
BARTScore authors' ``facebook/bart-large-cnn`` fine-tuned on ParaBank2, published through the
neulab/BARTScore README as a Google Drive file. The config names where the file comes from
(``scorers.bart_score.weights_file``): a Google Drive file id (downloaded with ``gdown``), an
http(s)/file URL, or a local path; the same sha256 check applies to all three.

Each source is fetched to a folder of its own (``weights_path``), so configs with different
sources (the demo's stand-in, the paper's Google Drive file) never write each other's file. The
first fetch of a source writes a lock file beside it (``lock_path``) with the sha256 it got;
every later fetch of that source, and the score stage that reads the file, must find the same
digest, as must a sha256 pinned in the config.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

from imhibench.common.errors import ImhiBenchError
from imhibench.common.io import atomic_path, write_json
from imhibench.common.provenance import sha256_file
from imhibench.fetch.test_sets import copy_local, download, install_checked

log = logging.getLogger(__name__)

# Google Drive file id of bart_score.pth, from the neulab/BARTScore README (commit 248f511).
PARABANK2_GDRIVE_ID = "1_7JfF7KOInb7ZrxKHIigTMR4ChVET01m"
# Where the fetch rule puts a weights file: one folder per source (``source_key``); its record
# (source, sha256) and its lock file sit beside it.
WEIGHTS_DIR = "resources/scorers/bart_score"
WEIGHTS_PATTERN = WEIGHTS_DIR + "/{weights_source}/bart_score.pth"
SOURCE_KEYS = ("gdrive_id", "url", "local_path")


def source_key(spec: dict) -> str:
    """The folder name of a ``weights_file`` spec's source: ``gdrive-<file id>``, or the kind
    and the first 16 hex digits of the URL's or path's sha256 (``url-…``, ``local_path-…``).
    The pinned sha256 is not part of it: pinning the digest of a fetched file moves nothing."""
    kind, value = _source_of(spec)
    if kind == "gdrive_id" and re.fullmatch(r"[A-Za-z0-9_-]{1,200}", value):
        return f"gdrive-{value}"
    return f"{kind}-{hashlib.sha256(value.encode()).hexdigest()[:16]}"


def weights_path(spec: dict) -> str:
    """Where the fetch rule puts the weights file of ``spec``'s source."""
    return WEIGHTS_PATTERN.format(weights_source=source_key(spec))


def record_path(weights_path: str | Path) -> Path:
    """The JSON record written next to a fetched weights file."""
    return Path(f"{weights_path}.json")


def lock_path(weights_path: str | Path) -> Path:
    """The lock file next to a weights file: the sha256 of its source's first fetch. It is not
    an output of the fetch rule, so a refetch (the file deleted, ``--forcerun``) keeps it."""
    return Path(f"{weights_path}.lock.json")


def locked_sha256(weights_path: str | Path) -> str | None:
    """The sha256 the lock file beside ``weights_path`` holds, or None without a lock file."""
    lock = lock_path(weights_path)
    if not lock.is_file():
        return None
    try:
        digest = json.loads(lock.read_text(encoding="utf-8"))["sha256"]
    except (ValueError, KeyError, TypeError) as err:
        raise ImhiBenchError(
            f"{lock}: not a BARTScore weights lock file (JSON with a 'sha256' key): {err}. "
            "Delete it to record the digest of the next fetch."
        ) from err
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ImhiBenchError(f"{lock}: 'sha256' is not a sha256 hex digest: {digest!r}")
    return digest


def check_pin_against_lock(spec: dict | None, weights_path: str | Path | None) -> None:
    """Refuse a config whose pinned sha256 differs from the lock of the file it names (checked
    when the workflow is planned, before any job runs: pinning reruns nothing)."""
    if not spec or not spec.get("sha256") or weights_path is None:
        return
    locked = locked_sha256(weights_path)
    if locked is not None and locked != spec["sha256"].lower():
        raise ImhiBenchError(
            f"scorers.bart_score.weights_file.sha256 pins {spec['sha256']}, but "
            f"{lock_path(weights_path)} records {locked} for {weights_path} (the digest of "
            "its first fetch). Pin the recorded digest, or, if the pin is right, delete the "
            "weights file and its lock file to fetch it again."
        )


def _source_of(spec: dict) -> tuple[str, str]:
    """The one (kind, value) source of a ``weights_file`` spec."""
    given = [(key, spec[key]) for key in SOURCE_KEYS if spec.get(key)]
    if len(given) != 1:
        raise ImhiBenchError(
            f"scorers.bart_score.weights_file needs exactly one of {list(SOURCE_KEYS)}, "
            f"got {spec!r}"
        )
    return given[0]


def _download_gdrive(file_id: str, dest: Path, sha256: str | None, what: str) -> str:
    """Download a Google Drive file with gdown (it handles Drive's confirmation page)."""
    import gdown

    tmp = atomic_path(dest)
    try:
        got = gdown.download(id=file_id, output=str(tmp), quiet=False)
        if got is None or not tmp.is_file():
            raise ImhiBenchError(f"gdown could not download Google Drive file {file_id}")
        actual = sha256_file(tmp)
        install_checked(tmp, dest, actual, sha256, f"Google Drive file {file_id}", what)
    finally:
        tmp.unlink(missing_ok=True)
    return actual


def fetch_weights_file(spec: dict, dest: str | Path) -> dict:
    """Bring the weights file named by ``spec`` to ``dest``; returns (and writes) its record.

    The file must have the sha256 pinned in ``spec`` and the one the lock file beside ``dest``
    recorded at the first fetch; without a lock file, this fetch writes it.
    """
    from imhibench.common.provenance import build_provenance

    kind, value = _source_of(spec)
    pinned = spec.get("sha256")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    check_pin_against_lock(spec, dest)
    locked = locked_sha256(dest)
    expected = pinned or locked
    log.info("fetching the BARTScore weights file from %s %s", kind, value)
    what = "pinned BARTScore weights file"
    if pinned is None and locked is not None:
        what = (
            f"BARTScore weights file its first fetch got (sha256 recorded in {lock_path(dest)}; "
            "delete that lock file to accept another file)"
        )
    if kind == "gdrive_id":
        actual = _download_gdrive(value, dest, expected, what)
    elif kind == "url":
        actual = download(value, dest, expected, what=what)
    else:
        actual = copy_local(value, dest, expected, what=what)
    if pinned is None:
        log.warning(
            "BARTScore weights file: no sha256 is pinned in the config; got %s (%s). Pin it "
            "in scorers.bart_score.weights_file.sha256 to verify it on every machine.",
            actual,
            "as recorded in its lock file" if locked else f"recorded in {lock_path(dest)}",
        )
    if locked is None:
        lock = {"sha256": actual, "source": {kind: value}, "path": str(dest)}
        write_json(build_provenance("fetch", **lock), lock_path(dest))
    record = build_provenance(
        "fetch",
        source={kind: value},
        sha256=actual,
        sha256_pinned=pinned is not None,
        sha256_lock=str(lock_path(dest)),
        sha256_locked_before=locked is not None,
    )
    write_json(record, record_path(dest))
    log.info("%s: sha256 %s", dest, actual)
    return record


def weights_record(weights_path: str | Path) -> dict:
    """The fetch record of a weights file, with the sha256 of the file as it is now (what the
    score stage loaded), which must be the one its lock file holds."""
    path = Path(weights_path)
    sidecar = record_path(path)
    record = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.is_file() else {}
    actual, locked = sha256_file(path), locked_sha256(path)
    if locked is not None and actual != locked:
        raise ImhiBenchError(
            f"{path}: sha256 {actual}, but {lock_path(path)} records {locked} from its first "
            "fetch: the file was replaced after it was fetched. Delete it to fetch it again."
        )
    return {
        "path": str(path),
        "source": record.get("source", {"local_path": str(path.resolve())}),
        "sha256": actual,
        "sha256_pinned": record.get("sha256_pinned", False),
        "sha256_locked": locked is not None,
    }
