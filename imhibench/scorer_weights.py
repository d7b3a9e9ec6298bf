"""The BARTScore ParaBank2 weights file (upstream's ``bart_score.pth``): fetch, verify, describe.

Upstream ``src/score.py`` always calls ``bart_scorer.load(path='bart_score.pth')``: the
BARTScore authors' ``facebook/bart-large-cnn`` fine-tuned on ParaBank2, published through the
neulab/BARTScore README as a Google Drive file. The config names where the file comes from
(``scorers.bart_score.weights_file``): a Google Drive file id (downloaded with ``gdown``), an
http(s)/file URL, or a local path; the same sha256 check applies to all three.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from imhibench.errors import ImhiBenchError
from imhibench.fetch import copy_local, download, install_checked
from imhibench.io import atomic_path, write_json
from imhibench.provenance import sha256_file

log = logging.getLogger(__name__)

# Google Drive file id of bart_score.pth, from the neulab/BARTScore README (commit 248f511).
PARABANK2_GDRIVE_ID = "1_7JfF7KOInb7ZrxKHIigTMR4ChVET01m"
# Where the fetch rule puts the weights file; its record (source, sha256) sits beside it.
WEIGHTS_PATH = "resources/scorers/bart_score.pth"
SOURCE_KEYS = ("gdrive_id", "url", "local_path")


def record_path(weights_path: str | Path) -> Path:
    """The JSON record written next to a fetched weights file."""
    return Path(f"{weights_path}.json")


def _source_of(spec: dict) -> tuple[str, str]:
    """The one (kind, value) source of a ``weights_file`` spec."""
    given = [(key, spec[key]) for key in SOURCE_KEYS if spec.get(key)]
    if len(given) != 1:
        raise ImhiBenchError(
            f"scorers.bart_score.weights_file needs exactly one of {list(SOURCE_KEYS)}, "
            f"got {spec!r}"
        )
    return given[0]


def _download_gdrive(file_id: str, dest: Path, sha256: str | None) -> str:
    """Download a Google Drive file with gdown (it handles Drive's confirmation page)."""
    import gdown

    tmp = atomic_path(dest)
    try:
        got = gdown.download(id=file_id, output=str(tmp), quiet=False)
        if got is None or not tmp.is_file():
            raise ImhiBenchError(f"gdown could not download Google Drive file {file_id}")
        actual = sha256_file(tmp)
        install_checked(
            tmp, dest, actual, sha256, f"Google Drive file {file_id}",
            "pinned BARTScore weights file",
        )  # fmt: skip
    finally:
        tmp.unlink(missing_ok=True)
    return actual


def fetch_weights_file(spec: dict, dest: str | Path) -> dict:
    """Bring the weights file named by ``spec`` to ``dest``; returns (and writes) its record."""
    from imhibench.provenance import build_provenance

    kind, value = _source_of(spec)
    sha256 = spec.get("sha256")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info("fetching the BARTScore weights file from %s %s", kind, value)
    if kind == "gdrive_id":
        actual = _download_gdrive(value, dest, sha256)
    elif kind == "url":
        actual = download(value, dest, sha256, what="pinned BARTScore weights file")
    else:
        actual = copy_local(value, dest, sha256, what="pinned BARTScore weights file")
    if sha256 is None:
        log.warning(
            "BARTScore weights file: no sha256 is pinned in the config; got %s. Pin it in "
            "scorers.bart_score.weights_file.sha256 to verify future fetches.",
            actual,
        )
    record = build_provenance(
        "fetch", source={kind: value}, sha256=actual, sha256_pinned=sha256 is not None
    )
    write_json(record, record_path(dest))
    log.info("%s: sha256 %s", dest, actual)
    return record


def weights_record(weights_path: str | Path) -> dict:
    """The fetch record of a weights file, with the sha256 of the file as it is now."""
    path = Path(weights_path)
    sidecar = record_path(path)
    record = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.is_file() else {}
    return {
        "path": str(path),
        "source": record.get("source", {"local_path": str(path.resolve())}),
        "sha256": sha256_file(path),
        "sha256_pinned": record.get("sha256_pinned", False),
    }
