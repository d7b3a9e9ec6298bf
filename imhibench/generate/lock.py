"""One writer per output: an exclusive lock held for a generation job's whole life.

A ``snakemake`` killed with SIGKILL leaves its jobs running (re-parented to PID 1); a rerun
started at once would run a second job on the same output, both writing its shards or journal.
``output_lock`` takes ``flock(LOCK_EX | LOCK_NB)`` on ``<out>.lock`` before anything else: a
second job stops at once with an error naming the holder (pid, host, since when, its command);
the first is not touched. The operating system releases the lock when the holder dies, however
it dies (SIGKILL included), so a stale lock file never blocks a rerun; the file itself stays
(deleting it would let two processes lock two different files of the same name).
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import logging
import os
import platform
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from imhibench.common.errors import ImhiBenchError

log = logging.getLogger(__name__)

# Errors of a filesystem that offers no locks (some NFS or Lustre mounts).
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


def lock_path(out_path: str | Path) -> Path:
    """The lock file of an output: ``<out_path>.lock``."""
    return Path(f"{out_path}.lock")


def _holder(path: Path) -> str:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "a process that has not yet written its name"
    text = f"pid {record.get('pid')} on host {record.get('host')} since {record.get('since')}"
    if record.get("slurm_job_id"):
        text += f" (SLURM job {record['slurm_job_id']})"
    return text + f", command: {record.get('command')}"


@contextmanager
def output_lock(out_path: str | Path) -> Iterator[None]:
    """Hold the exclusive lock of ``out_path`` for the block; raise at once if another
    process holds it."""
    path = lock_path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ImhiBenchError(
                f"{out_path}: another job is writing this output: {_holder(path)}. It may be "
                "orphaned by a killed snakemake: stop it (`kill <pid>` on that host; find such "
                "jobs with `pgrep -af .snakemake/scripts`) or let it finish, then run again"
            ) from None
        except OSError as err:
            if err.errno not in _NO_LOCKS:
                raise
            log.warning(
                "%s: this filesystem offers no file locks (%s): nothing stops a second job "
                "from writing this output at the same time; make sure none runs", path, err,
            )  # fmt: skip
        else:
            record = {
                "pid": os.getpid(),
                "host": platform.node(),
                "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
                "command": " ".join(sys.argv)[:300],
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
        yield
    finally:
        os.close(fd)
