"""Set-up shared by pipeline jobs: log to the job's log file and stderr, honour the thread count."""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def configure_job(log_file: str | Path | None, threads: int | None = None) -> None:
    """Log everything to `log_file` and stderr; limit torch to the job's `threads`."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w", encoding="utf-8"))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    sys.excepthook = _log_uncaught
    if threads:
        import torch

        torch.set_num_threads(threads)


def _log_uncaught(kind: type[BaseException], error: BaseException, traceback: object) -> None:
    """A job's fatal error goes to its log file too: the message alone for our own errors."""
    from imhibench.errors import ImhiBenchError

    log = logging.getLogger("imhibench")
    if isinstance(error, ImhiBenchError):
        log.error("%s", error)
    else:
        log.error("job failed", exc_info=(kind, error, traceback))
