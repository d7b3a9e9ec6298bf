"""A real OpenAI-compatible server for the tests: `transformers serve` (the `transformers[serving]`
extra: FastAPI + Uvicorn) on 127.0.0.1, a free port, serving a local checkpoint on CPU.

`served(model_dir, log)` starts it in its own process group, waits for `/health`, yields a
`Served` and kills the whole group when the block ends, also when the block raises. The server's
Uvicorn access log (`--log-level info`) goes to `log`; `Served.requests` counts its lines.
conftest.py's `served_demo_llama` fixture serves the demo's tiny LLaMA with it, once per session.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# Modules of the `transformers[serving]` extra that transformers itself does not pull in.
SERVING_MODULES = ("fastapi", "uvicorn", "starlette")
STARTUP_S = 180  # loading a tiny model takes seconds; a busy 2-core machine may take longer


def require_serving() -> None:
    """Skip, saying why, where the `transformers[serving]` extra is not installed."""
    missing = [m for m in SERVING_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(
            f"`transformers serve` needs the transformers[serving] extra ({', '.join(missing)} "
            "missing): pip install -c .ci/constraints.txt -e '.[dev]'"
        )


@dataclass(frozen=True)
class Served:
    """A running server: `base_url` ends in /v1; `model` is the name requests must give."""

    base_url: str
    model: str
    log: Path
    pid: int

    def requests(self, path: str, status: int = 200) -> int:
        """POST requests to `path` (e.g. /v1/completions) answered `status`, from the access log."""
        line = f'"POST {path} HTTP/1.1" {status} '
        return self.log.read_text(errors="replace").count(line)

    def settled_requests(self, path: str, quiet_s: float = 1.0, timeout_s: float = 30) -> int:
        """`requests(path)` once the count has not changed for `quiet_s` (requests in flight of a
        killed client still finish and get logged)."""
        deadline = time.monotonic() + timeout_s
        count, since = self.requests(path), time.monotonic()
        while time.monotonic() - since < quiet_s:
            assert time.monotonic() < deadline, f"{path}: still busy after {timeout_s}s"
            time.sleep(0.1)
            now = self.requests(path)
            if now != count:
                count, since = now, time.monotonic()
        return count


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _kill_group(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group, SIGKILL it if it is still there after 15 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # also any child the server left behind
    process.wait(timeout=15)


@contextlib.contextmanager
def served(model_dir: Path, log: Path) -> Iterator[Served]:
    """`transformers serve <model_dir>` on 127.0.0.1 (a free port, CPU, one torch thread)."""
    require_serving()
    port = free_port()
    command = [
        sys.executable, "-m", "transformers.cli.transformers", "serve", str(model_dir),
        "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--log-level", "info",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.update(OMP_NUM_THREADS="1", NO_COLOR="1")  # the 2 cores are shared with the pipeline
    with log.open("ab") as sink:
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + STARTUP_S
        while not _healthy(f"{base}/health"):
            tail = log.read_text(errors="replace")[-3000:]
            assert process.poll() is None, f"transformers serve exited early:\n{tail}"
            assert time.monotonic() < deadline, f"no /health after {STARTUP_S}s:\n{tail}"
            time.sleep(0.5)
        yield Served(f"{base}/v1", str(model_dir), log, process.pid)
    finally:
        _kill_group(process)
