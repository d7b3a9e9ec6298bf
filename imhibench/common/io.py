"""Parquet I/O shared by every stage: atomic writes, provenance in the file, clear read errors."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from imhibench.common.errors import ImhiBenchError

if TYPE_CHECKING:  # pyarrow imports pandas when it converts: entries that only fetch skip it
    import pandas as pd

PROVENANCE_KEY = b"imhibench.common.provenance"


def atomic_path(path: str | Path) -> Path:
    """A temporary sibling of `path`; rename it onto `path` when complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_table(df: pd.DataFrame, path: str | Path, provenance: dict | None = None) -> None:
    """Write `df` as Parquet with `provenance` in the schema metadata, atomically."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    if provenance is not None:
        metadata = dict(table.schema.metadata or {})
        metadata[PROVENANCE_KEY] = json.dumps(provenance, sort_keys=True, default=str).encode()
        table = table.replace_schema_metadata(metadata)
    tmp = atomic_path(path)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:  # e.g. OSError(ENOSPC): no partial file is left behind
        tmp.unlink(missing_ok=True)
        raise


def not_utf8_message(path: str | Path, err: UnicodeDecodeError) -> str:
    """What is wrong with a text file that is not UTF-8, and the command that converts it."""
    path = Path(path)
    converted = path.with_name(f"{path.stem}.utf8{path.suffix}")
    return (
        f"{path}: not UTF-8 text ({err.reason}: byte {err.object[err.start : err.start + 1]!r}); "
        f"imhi-bench reads CSV files as UTF-8. Convert the file, e.g. from Latin-1: "
        f"`iconv -f latin1 -t utf-8 {path} > {converted}` (`file -i {path}` guesses the "
        "encoding to put after -f)"
    )


def read_csv_text(path: str | Path, what: str = "CSV file") -> pd.DataFrame:
    """A CSV file with every cell as text ('' where empty, a leading byte-order mark dropped);
    a missing, empty, non-UTF-8 or malformed file is an error naming it."""
    import pandas as pd

    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except FileNotFoundError as err:
        raise ImhiBenchError(f"{path}: no such {what}") from err
    except pd.errors.EmptyDataError as err:
        raise ImhiBenchError(f"{path}: the file is empty") from err
    except UnicodeDecodeError as err:
        raise ImhiBenchError(not_utf8_message(path, err)) from err
    except pd.errors.ParserError as err:
        raise ImhiBenchError(f"{path}: malformed CSV: {err}") from err


def read_table(path: str | Path, required: Iterable[str] = ()) -> pd.DataFrame:
    """Read a Parquet file, failing with the file name if it is unreadable or lacks columns."""
    try:
        df = pq.read_table(path).to_pandas()
    except (OSError, pa.ArrowException) as err:
        raise ImhiBenchError(f"{path}: cannot read Parquet file: {err}") from err
    if missing := [c for c in required if c not in df.columns]:
        raise ImhiBenchError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
    return df


def read_provenance(path: str | Path) -> dict:
    """The provenance stored in a Parquet file written by `write_table` ({} if none)."""
    metadata = pq.read_schema(path).metadata or {}
    raw = metadata.get(PROVENANCE_KEY)
    return json.loads(raw) if raw else {}


def write_json(obj: dict, path: str | Path) -> None:
    """Write JSON atomically (sidecars, manifests)."""
    tmp = atomic_path(path)
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
