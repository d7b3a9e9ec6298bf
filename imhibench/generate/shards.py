"""Finished rows of a generation job, kept in shards next to its output so a restart resumes.

``<out>.shards/`` holds ``manifest.json`` (the resume key: model, settings, code the rows
belong to) and ``shard-<token>.parquet`` files (``SHARD_COLUMNS``), each written atomically
(temporary file + rename) under a name no other process uses, with the sha256 of its resume key
in its provenance. Resume is per row: a restart reuses every saved row of the same key whose
query is unchanged (``query_sha256``: the content of the row, never the digest or time of the
test-set file, so a byte-identical re-fetch keeps every row), whatever the shard size or
batching of the run that saved it, and generates only the missing rows. Rows of the
``upstream`` engine also carry ``batch_sha256``, the membership of the batch they were generated
in: upstream's answers depend on it (see ``stage``). Each shard is reused or not by its own key
digest (the manifest only says what changed); a shard of another key is never deleted but moved
to ``stale-<UTC time>/`` (GPU hours: a key part such as the GPU model may differ only because a
rerun landed on another node; move the files back by hand to reuse them).

The directory stays after the output is written, like the API journal: Snakemake deletes the
output of a job it reruns (``--forcerun``, ``--forceall``, a re-fetched test file, an output
marked incomplete, a job stopped during its final write), and the rerun rebuilds it from the
shards without generating. Delete the directory to generate again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import time
import uuid
from pathlib import Path

import pandas as pd

from imhibench.common.errors import ImhiBenchError
from imhibench.common.io import read_provenance, read_table, write_json, write_table

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SHARD_COLUMNS = ["row_id", "response", "n_output_tokens", "query_sha256", "batch_sha256"]
_SHARD_NAME = re.compile(r"shard-[0-9a-f]+\.parquet")
# Provenance field of a shard and of the output: sha256 of the resume key they were made under.
KEY_FIELD = "resume_key_sha256"
# Provenance field of a shard: the resume key itself, to say what changed when it is set aside.
KEY_RECORD = "resume_key"
# Shards of another key are moved to ``<out>.shards/stale-<UTC time>/``, never deleted.
STALE_PREFIX = "stale-"
# A temporary shard file this old is a write cut short; a younger one may be another job's
# write in progress (an orphaned job still running beside its rerun), so it is left alone.
STALE_TMP_S = 600


def shard_dir(out_path: str | Path) -> Path:
    """The shard directory of an output file: ``<out_path>.shards``."""
    return Path(f"{out_path}.shards")


def key_sha256(key: dict) -> str:
    """A stable digest of a resume key."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def query_sha256(query: str) -> str:
    """The digest of one row's query: what decides its answer, as saved beside the answer."""
    return hashlib.sha256(query.encode("utf-8")).hexdigest()


class ShardStore:
    """The shard directory of one output file."""

    def __init__(self, out_path: str | Path):
        self.dir = shard_dir(out_path)
        self.key: dict | None = None
        self.key_sha256: str | None = None
        self.provenances: list[dict] = []  # of the shards read or written by this store

    def open(self, key: dict, info: dict | None = None) -> pd.DataFrame:
        """The rows already saved under ``key`` (``SHARD_COLUMNS``; a row id may appear more
        than once, with other queries: the caller keeps those of its queries).

        Each shard is judged by its own ``resume_key_sha256``, so a lost or unreadable
        manifest drops nothing. Shards of another key (or unreadable ones) are never deleted:
        they are moved to ``stale-<UTC time>/`` in the shard directory, with one warning
        saying how many rows were set aside and which parts of the key differ; ``info``
        (e.g. the git sha) is kept in the manifest for that message only.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        for partial in self.dir.glob(".*.tmp-*"):  # writes cut short by a kill ...
            if time.time() - partial.stat().st_mtime > STALE_TMP_S:  # ... not one in progress
                partial.unlink(missing_ok=True)
        self.key, self.key_sha256 = key, key_sha256(key)
        previous = self._read_manifest()
        tables, stale = [], []
        for path in sorted(self.dir.glob("shard-*.parquet")):
            table, provenance, problem = self._load(path)
            if problem is None and provenance.get(KEY_FIELD) == self.key_sha256:
                self.provenances.append(provenance)
                tables.append(table[SHARD_COLUMNS])
            else:
                stale.append((path, table, provenance, problem))
        if stale:
            self._set_aside(stale, previous, key, info or {})
        if previous.get("key") != key or previous.get("info") != (info or {}):
            write_json({"key": key, "info": info or {}}, self.dir / MANIFEST)
        if not tables:
            return pd.DataFrame({c: pd.Series([], dtype=object) for c in SHARD_COLUMNS})
        return pd.concat(tables, ignore_index=True)

    def _set_aside(self, stale: list, previous: dict, key: dict, info: dict) -> None:
        """Move the shards not of ``key`` to ``stale-<UTC time>/``, with one warning naming
        how many rows they hold and why they are not reused."""
        reasons: dict[str, int] = {}
        for _, _, provenance, problem in stale:
            if problem is None:
                problem = "changed: " + self._changed(provenance, previous, key, info)
            reasons[problem] = reasons.get(problem, 0) + 1
        now = dt.datetime.now(dt.timezone.utc)
        target = self.dir / f"{STALE_PREFIX}{now:%Y%m%dT%H%M%SZ}"
        target.mkdir(exist_ok=True)
        for path, *_ in stale:
            os.replace(path, target / path.name)  # names are unique: nothing is overwritten
        rows = sum(len(table) for _, table, _, _ in stale if table is not None)
        log.warning(
            "%s: set aside %d saved row(s) in %d shard(s) as %s, not reused (%s); their rows "
            "are generated again", self.dir, rows, len(stale), target.name,
            "; ".join(f"{n} shard(s) {why}" for why, n in reasons.items()),
        )  # fmt: skip

    @staticmethod
    def _changed(provenance: dict, previous: dict, key: dict, info: dict) -> str:
        """Which parts of the resume key differ for a shard of another key: from its own key
        (``resume_key`` in its provenance) or, for older shards, the manifest's."""
        old = provenance.get(KEY_RECORD)
        old_info: dict = {}
        if old is None and key_sha256(previous.get("key") or {}) == provenance.get(KEY_FIELD):
            old, old_info = previous.get("key"), previous.get("info") or {}
        if old is None:
            return "resume key unknown (no manifest of that key)"
        changed = changed_fields(old, key)
        changed += [
            f"{name} {old_info.get(name)} -> {info.get(name)}"
            for name in sorted(info.keys() | old_info.keys())
            if old_info and info.get(name) != old_info.get(name)
        ]
        return ", ".join(changed) or "resume key digest"

    def _read_manifest(self) -> dict:
        path = self.dir / MANIFEST
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return manifest if isinstance(manifest, dict) else {}

    def _load(self, path: Path) -> tuple[pd.DataFrame | None, dict, str | None]:
        """(table, provenance, None) of a readable shard, else (None, {}, the problem)."""
        if _SHARD_NAME.fullmatch(path.name) is None:
            return None, {}, "not a shard name"
        try:
            return read_table(path, SHARD_COLUMNS), read_provenance(path), None
        except ImhiBenchError as err:
            return None, {}, f"unreadable ({err})"

    def check_still_current(self) -> None:
        """Raise if another run, with other inputs, has taken over the shard directory since
        ``open`` (e.g. a rerun while this orphaned job still ran): its output would be stale."""
        manifest = self._read_manifest()
        if key_sha256(manifest.get("key") or {}) != self.key_sha256:
            raise ImhiBenchError(
                f"{self.dir}: another run with other inputs took over these shards while this "
                "job ran; this job's answers are stale, so its output is not written"
            )

    def write(self, table: pd.DataFrame, provenance: dict) -> Path:
        """Save a shard atomically, under a name unique to this write."""
        if self.key_sha256 is None:
            raise ImhiBenchError(f"{self.dir}: open() the store before writing")
        path = self.dir / f"shard-{uuid.uuid4().hex[:16]}.parquet"
        provenance = {**provenance, KEY_FIELD: self.key_sha256, KEY_RECORD: self.key}
        write_table(table[SHARD_COLUMNS], path, provenance)
        self.provenances.append(provenance)
        return path


def changed_fields(old: dict, new: dict) -> list[str]:
    """The fields of a resume key that differ, each named with, when short, its old and new
    value."""
    changed = []
    for name in sorted(old.keys() | new.keys()):
        if old.get(name) != new.get(name):
            text = f"{json.dumps(old.get(name), sort_keys=True)} -> "
            text += json.dumps(new.get(name), sort_keys=True)
            changed.append(f"{name} {text}" if len(text) <= 160 else name)
    return changed
