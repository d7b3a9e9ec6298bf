"""Finished rows of a generation job, kept in shards next to its output so a restart resumes.

``<out>.shards/`` holds ``manifest.json`` (the inputs the shards belong to) and
``shard-NNNNN.parquet`` files (``row_id, response, n_output_tokens``), each written atomically
(temporary file + rename). Shard ``k`` always holds the same rows for the same inputs (see
``plan_shards``), so a restart skips the shards on disk and recomputes only the unfinished one.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pandas as pd

from imhibench.errors import ImhiBenchError
from imhibench.io import read_table, write_json, write_table

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SHARD_COLUMNS = ["row_id", "response", "n_output_tokens"]
_SHARD_NAME = re.compile(r"shard-(\d{5,})\.parquet")


def shard_dir(out_path: str | Path) -> Path:
    """The shard directory of an output file: ``<out_path>.shards``."""
    return Path(f"{out_path}.shards")


def dir_fingerprint(directory: str | Path) -> list[list]:
    """Name, size and mtime of each file at the top of a model directory (weights, configs)."""
    root = Path(directory)
    if not root.is_dir():
        raise ImhiBenchError(f"{root}: model directory not found")
    return [
        [f.name, f.stat().st_size, f.stat().st_mtime_ns]
        for f in sorted(root.iterdir())
        if f.is_file()
    ]


class ShardStore:
    """The shard directory of one output file."""

    def __init__(self, out_path: str | Path):
        self.dir = shard_dir(out_path)

    def path(self, index: int) -> Path:
        return self.dir / f"shard-{index:05d}.parquet"

    def open(self, key: dict, plan: list[list[str]]) -> dict[int, pd.DataFrame]:
        """The shards already saved for ``key``, by index; anything else in the dir is deleted.

        ``plan`` lists the row ids of every shard; a saved shard must hold exactly its rows.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        for partial in self.dir.glob(".*.tmp-*"):  # writes cut short by a kill
            partial.unlink()
        files = sorted(self.dir.glob("shard-*.parquet"))
        previous = self._read_manifest()
        if previous.get("key") != key:
            if files:
                old = previous.get("key") or {}
                changed = sorted(k for k in key.keys() | old.keys() if key.get(k) != old.get(k))
                log.warning(
                    "%s: discarding %d stale shard(s) written for other inputs (changed: %s)",
                    self.dir, len(files), ", ".join(changed),
                )  # fmt: skip
            for f in files:
                f.unlink()
            write_json({"key": key, "n_shards": len(plan)}, self.dir / MANIFEST)
            return {}
        done: dict[int, pd.DataFrame] = {}
        for f in files:
            if (table := self._load(f, plan)) is not None:
                done[int(_SHARD_NAME.fullmatch(f.name)[1])] = table
        return done

    def _read_manifest(self) -> dict:
        path = self.dir / MANIFEST
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def _load(self, path: Path, plan: list[list[str]]) -> pd.DataFrame | None:
        """A saved shard, or None (and the file deleted) if it does not fit the plan."""
        match = _SHARD_NAME.fullmatch(path.name)
        problem = None
        if match is None or int(match[1]) >= len(plan):
            problem = "not a shard of this plan"
        else:
            try:
                table = read_table(path, SHARD_COLUMNS)
            except ImhiBenchError as err:
                problem = str(err)
            else:
                if table["row_id"].tolist() == plan[int(match[1])]:
                    return table
                problem = "rows differ from the plan"
        log.warning("%s: discarding shard (%s); it will be recomputed", path, problem)
        path.unlink()
        return None

    def write(self, index: int, table: pd.DataFrame, provenance: dict) -> Path:
        """Save shard ``index`` atomically."""
        path = self.path(index)
        write_table(table[SHARD_COLUMNS], path, provenance)
        return path

    def remove(self) -> None:
        """Delete the shard directory (after the output is written)."""
        shutil.rmtree(self.dir, ignore_errors=True)
