"""Fetch stage for the IMHI test files: download from the pinned upstream commit (or a mirror),
verify sha256, and convert to Parquet with a stable row id and the parsed gold answer."""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from imhibench.common.errors import ImhiBenchError
from imhibench.common.io import atomic_path, read_csv_text
from imhibench.common.tasks import get_task

if TYPE_CHECKING:  # imported by the functions that read CSV: a download needs no pandas
    import pandas as pd

log = logging.getLogger(__name__)

QUERY_COLUMN = "query"
GOLD_COLUMN = "gpt-3.5-turbo"
# Columns of the prepared test-set Parquet files (resources/imhi/<split>/<dataset>.parquet).
TEST_SET_COLUMNS = ["row_id", "query", "gold_answer", "gold_label", "gold_explanation"]
CHUNK = 1 << 20


class TruncatedDownload(OSError):
    """The server closed the connection before sending the ``Content-Length`` it announced."""


# Failures worth another attempt: network errors, and a response cut short (a chunked body
# ends in ``http.client.IncompleteRead``; a ``Content-Length`` one in ``TruncatedDownload``).
TRANSIENT_ERRORS = (urllib.error.URLError, OSError, http.client.HTTPException)


def download(
    url: str,
    dest: str | Path,
    sha256: str | None,
    retries: int = 3,
    what: str = "pinned IMHI file",
) -> str:
    """Stream `url` to `dest` atomically and return its sha256.

    A body shorter than its ``Content-Length`` is an error (and retried, like network errors
    and HTTP 5xx). Raises if the checksum differs from `sha256` (the message says the source
    does not hold `what`); `sha256=None` accepts any complete content (the caller warns and
    records the digest). On any failure nothing is left behind: neither `dest` nor a temporary
    file.
    """
    dest = Path(dest)
    tmp = atomic_path(dest)
    try:
        for attempt in range(1, retries + 1):
            try:
                actual = _download_once(url, tmp)
                break
            except urllib.error.HTTPError as err:
                if err.code < 500 or attempt == retries:
                    raise ImhiBenchError(
                        f"download of {url} failed: HTTP {err.code} {err.reason}"
                    ) from err
                problem = f"HTTP {err.code}"
            except TRANSIENT_ERRORS as err:
                if attempt == retries:
                    raise ImhiBenchError(
                        f"download of {url} failed after {retries} attempt(s): {err!r}"
                    ) from err
                problem = repr(err)
            log.warning(
                "download of %s failed (attempt %d/%d: %s); retrying", url, attempt, retries,
                problem,
            )  # fmt: skip
            time.sleep(2**attempt)
        install_checked(tmp, dest, actual, sha256, url, what)
    finally:
        tmp.unlink(missing_ok=True)
    return actual


def install_checked(
    tmp: Path, dest: Path, actual: str, sha256: str | None, source: str, what: str
) -> None:
    """Move the completely received ``tmp`` (sha256 ``actual``) to ``dest``, unless a pinned
    ``sha256`` says ``source`` sent something other than ``what``."""
    if sha256 is not None and actual != sha256.lower():
        raise ImhiBenchError(
            f"sha256 mismatch for {source}: expected {sha256}, got {actual}. The source does "
            f"not hold the {what}; nothing was written."
        )
    os.replace(tmp, dest)


def _download_once(url: str, tmp: Path) -> str:
    """Stream `url` to `tmp`; its sha256. Raises ``TruncatedDownload`` on a short body."""
    digest = hashlib.sha256()
    received = 0
    with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
        announced = response.headers.get("Content-Length")
        while chunk := response.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
            received += len(chunk)
    if announced is not None and received != int(announced):
        raise TruncatedDownload(
            f"received {received} of the {announced} bytes announced by Content-Length"
        )
    return digest.hexdigest()


def copy_local(
    path: str | Path, dest: str | Path, sha256: str | None, what: str = "pinned IMHI file"
) -> str:
    """Copy a user-supplied local file through the same checksum code as a download."""
    path = Path(path)
    if not path.is_file():
        raise ImhiBenchError(f"{path} does not exist (expected the {what})")
    digest = download(path.resolve().as_uri(), dest, sha256, what=what)
    shutil.copymode(path, dest)
    return digest


def read_test_csv(path: str | Path) -> pd.DataFrame:
    """Read an IMHI test CSV, rejecting files that are empty, malformed or lack columns."""
    df = read_csv_text(path, "IMHI test file")
    missing = [c for c in (QUERY_COLUMN, GOLD_COLUMN) if c not in df.columns]
    if missing:
        raise ImhiBenchError(
            f"{path}: missing column(s) {missing}; an IMHI test file has "
            f"'{QUERY_COLUMN}' and '{GOLD_COLUMN}', found {list(df.columns)}"
        )
    if df.empty:
        raise ImhiBenchError(f"{path}: the file has a header but no rows")
    for column in (QUERY_COLUMN, GOLD_COLUMN):
        blank = df.index[df[column].str.strip() == ""]
        if len(blank):
            raise ImhiBenchError(
                f"{path}: empty '{column}' in data row(s) {[int(i) + 1 for i in blank[:5]]}"
            )
    return df


def prepare_test_set(
    csv_path: str | Path, dataset: str, task_name: str, split: str
) -> pd.DataFrame:
    """Convert a verified IMHI CSV to the test-set table (see TEST_SET_COLUMNS).

    `row_id` is `<dataset>-<row index, 5 digits>` in upstream file order: stable across runs,
    and equal for the same post in the instruction and completion splits.
    """
    import pandas as pd

    df = read_test_csv(csv_path)
    task = get_task(task_name)
    labels, explanations = [], []
    for i, answer in enumerate(df[GOLD_COLUMN]):
        try:
            label, explanation = task.parse_gold(answer, split)
        except ImhiBenchError as err:
            raise ImhiBenchError(f"{csv_path}: data row {i + 1}: {err}") from err
        labels.append(label)
        explanations.append(explanation)
    return pd.DataFrame(
        {
            "row_id": [f"{dataset}-{i:05d}" for i in range(len(df))],
            "query": df[QUERY_COLUMN],
            "gold_answer": df[GOLD_COLUMN],
            "gold_label": labels,
            "gold_explanation": explanations,
        }
    )


def run_fetch_test_set(
    url: str,
    sha256: str | None,
    dataset: str,
    task: str,
    split: str,
    csv_out: str,
    parquet_out: str,
) -> dict:
    """Download (or, for a local path, copy) + verify one IMHI file and write its test-set
    Parquet; returns the provenance."""
    from imhibench.common.io import write_table
    from imhibench.common.provenance import build_provenance

    log.info("fetching %s (%s split) from %s", dataset, split, url)
    if urlparse(url).scheme in ("http", "https", "file"):
        actual = download(url, csv_out, sha256)
    else:  # a user's own file (local_path), absolute or relative to the working directory
        actual = copy_local(url, csv_out, sha256)
        url = str(Path(url).resolve())
    if sha256 is None:
        log.warning(
            "%s (%s): no sha256 is pinned in the config; got %s. Pin it in "
            "dataset_catalog.%s.files.%s.sha256 to verify future fetches.",
            dataset, split, actual, dataset, split,
        )  # fmt: skip
    table = prepare_test_set(csv_out, dataset, task, split)
    provenance = build_provenance(
        "fetch", dataset=dataset, task=task, split=split, source=url,
        sha256=actual, sha256_pinned=sha256 is not None, rows=len(table),
    )  # fmt: skip
    write_table(table, parquet_out, provenance)
    log.info("%s: %d rows, sha256 %s", parquet_out, len(table), actual)
    return provenance
