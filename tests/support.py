"""Test helpers: the local IMHI mirror and a loopback HTTP server serving a directory."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IMHI_MIRROR = Path(os.environ.get("IMHI_MIRROR", REPO.parent / "shared" / "imhi"))


def require_mirror() -> Path:
    """The local IMHI mirror (../shared/imhi), or a visible skip when this machine lacks it."""
    if not (IMHI_MIRROR / "SHA256SUMS").is_file():
        pytest.skip(f"IMHI mirror not found at {IMHI_MIRROR} (set IMHI_MIRROR)")
    return IMHI_MIRROR


def mirror_sha256(relative_path: str) -> str:
    for line in (require_mirror() / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        if name.removeprefix("./") == relative_path:
            return digest
    raise KeyError(relative_path)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve_handler(handler) -> Iterator[str]:
    """Serve `handler` (an http.server request handler class) on 127.0.0.1, a free port; yield
    the base URL. The server and its request threads stop when the block ends."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """Serve `directory` on 127.0.0.1 (a free port) and yield its base URL."""
    with serve_handler(functools.partial(_QuietHandler, directory=str(directory))) as url:
        yield url


def copy_run(workdir: Path, destination: Path) -> Path:
    """A copy of a finished run's `workdir` at `destination`, for a test that reruns jobs while
    the shared run stays as it is. Everything is copied: file times (Snakemake compares them),
    symlinks as links and `.snakemake/` (the metadata behind Snakemake's rerun reasons), so that
    Snakemake plans the same jobs in the copy as in the original."""
    shutil.copytree(workdir, destination, symlinks=True)
    return destination


def journaled_rows(path: Path) -> list[str]:
    """Row ids of the answers saved in a row journal (`path`), one per line, in order; a torn
    last line (a killed write) is not an answer."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines()[1:]:
        with contextlib.suppress(ValueError):
            rows.append(json.loads(line)["row_id"])
    return rows
