"""Set-up shared by pipeline jobs: log to the job's log file and stderr, honour the thread count."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

# transformers warns "Token indices sequence length is longer than the specified maximum
# sequence length ... will result in indexing errors" when it measures a text without
# truncating it; every model input here is truncated, and our own lines say so.
_MISLEADING = {
    "transformers.tokenization_utils_base": "Token indices sequence length is longer than",
}


class _DropMessage(logging.Filter):
    def __init__(self, start: str):
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.start)


def quiet_libraries() -> None:
    """No progress bars (hub downloads, transformers' "Loading weights") and no misleading
    length warnings in job logs; our progress lines give rows done, rate and time left."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read by huggingface_hub at import
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    for name, start in _MISLEADING.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessage) for f in logger.filters):
            logger.addFilter(_DropMessage(start))


def log_job_start(stage: str, **what: object) -> None:
    """The first line of a job's log: what it is about to do (model, dataset, rows, device...)."""
    details = ", ".join(f"{key} {value}" for key, value in what.items() if value is not None)
    logging.getLogger("imhibench").info("%s: starting: %s", stage, details)


def announce_job(
    stage: str,
    model: str,
    dataset: str,
    rows_of: str | Path,
    device: str | None,
    dtype: str | None = "auto",
    row_limit: int | None = None,
) -> None:
    """`log_job_start` with the rows of the Parquet file `rows_of` (at most `row_limit`), the
    device `device` resolves to here, and `dtype` (auto = bfloat16 on CUDA, float32 on CPU);
    device None (a job that runs no model, e.g. imported answers): neither is said."""
    import pyarrow.parquet as pq

    from imhibench.common.devices import resolve_device

    rows = pq.read_metadata(rows_of).num_rows
    resolved = resolve_device(device) if device else None  # torch: only for a model's job
    if resolved is None:
        dtype = None
    elif dtype == "auto":
        dtype = "bfloat16" if resolved.startswith("cuda") else "float32"
    log_job_start(
        stage,
        model=model,
        dataset=dataset,
        rows=min(rows, row_limit) if row_limit else rows,
        device=resolved,
        dtype=dtype,
    )


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
    quiet_libraries()
    if threads:
        limit_torch_threads(threads)


def limit_torch_threads(threads: int) -> None:
    """torch's intra-op threads to `threads`, without importing torch (seconds) in a job that
    never uses it: torch reads OMP_NUM_THREADS when first imported."""
    torch = sys.modules.get("torch")
    if torch is None:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    else:
        torch.set_num_threads(threads)


def _log_uncaught(kind: type[BaseException], error: BaseException, traceback: object) -> None:
    """A job's fatal error goes to its log file too: the message alone for our own errors."""
    from imhibench.common.errors import ImhiBenchError

    log = logging.getLogger("imhibench")
    if isinstance(error, ImhiBenchError):
        log.error("%s", error)
    else:
        log.error("job failed", exc_info=(kind, error, traceback))
