"""An append-only JSONL journal of finished rows, fsynced row by row, for paid API answers.

``<out>.journal.jsonl`` starts with a header line ``{"journal": 1, "key": {...}}`` (what the
answers depend on: endpoint, model, mode, max_tokens, seed, test set) followed by one line per
answered row. Each line is written with a single ``write`` and fsynced before the next request's
answer is handed over, so a job killed at any moment (even SIGKILL) loses at most the answers
still in flight; a torn last line is ignored on reading. A journal written for another key is
never deleted: it is renamed ``<journal>.stale-<UTC time>`` (its answers were paid for).
The journal stays after the output is written, so a later rerun (more rows, a forced rerun)
asks only for rows it lacks; delete it to ask the endpoint again.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from pathlib import Path

from imhibench.common.errors import ImhiBenchError
from imhibench.generate.shards import changed_fields

log = logging.getLogger(__name__)

VERSION = 1


def journal_path(out_path: str | Path) -> Path:
    """The journal of an output file: ``<out_path>.journal.jsonl``."""
    return Path(f"{out_path}.journal.jsonl")


class RowJournal:
    """Finished rows of one output file, appended as they arrive."""

    def __init__(self, out_path: str | Path):
        self.path = journal_path(out_path)
        self._fd: int | None = None

    def open(self, key: dict) -> dict[str, dict]:
        """The rows already saved under ``key`` (row_id -> record), then ready to append."""
        key = json.loads(json.dumps(key, sort_keys=True, default=str))
        rows: dict[str, dict] = {}
        if self.path.exists():
            header, rows = self._read()
            if header.get("key") != key:
                stale = self.path.with_name(
                    f"{self.path.name}.stale-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}"
                )
                log.warning(
                    "%s: %d saved answer(s) were made with other settings (changed: %s); kept "
                    "as %s, all rows will be asked again", self.path, len(rows),
                    "; ".join(changed_fields(header.get("key") or {}, key)), stale.name,
                )  # fmt: skip
                os.replace(self.path, stale)
                rows = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if os.fstat(self._fd).st_size == 0:
            self._append({"journal": VERSION, "key": key})
        else:
            self._end_torn_line()
        return rows

    def append(self, record: dict) -> None:
        """Save one finished row durably (write + fsync) before returning."""
        if "row_id" not in record:
            raise ValueError("journal record without row_id")
        self._append(record)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _append(self, record: dict) -> None:
        line = json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n"
        os.write(self._fd, line.encode("utf-8"))
        os.fsync(self._fd)

    def _end_torn_line(self) -> None:
        """After a kill mid-write the file may not end in a newline: start a fresh line."""
        with open(self.path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                os.write(self._fd, b"\n")
                os.fsync(self._fd)

    def _read(self) -> tuple[dict, dict[str, dict]]:
        lines = self.path.read_bytes().split(b"\n")
        try:
            header = json.loads(lines[0])
        except ValueError:
            header = {}
        if header.get("journal") != VERSION:
            raise ImhiBenchError(
                f"{self.path}: not an imhi-bench journal (first line is no header); move it away"
            )
        rows, torn = {}, 0
        for line in lines[1:]:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                rows[record["row_id"]] = record
            except (ValueError, KeyError, TypeError):
                torn += 1  # a line cut short by a kill
        if torn:
            log.warning("%s: ignored %d incomplete line(s) (a killed write)", self.path, torn)
        return header, rows
