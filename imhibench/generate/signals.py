"""Stop a job promptly on SIGTERM/SIGINT, but never in the middle of writing a file."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class GenerationStopped(SystemExit):
    """A stop signal arrived; the process exits with status 128 + signal number."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum
        self.signal_name = signal.Signals(signum).name


class StopOnSignal:
    """Within ``with``: a stop signal raises ``GenerationStopped`` at once, or, inside
    ``deferred()``, when that block ends. Only the main thread can install handlers; elsewhere
    the default handling stays.
    """

    def __init__(self, signals: tuple[int, ...] = STOP_SIGNALS):
        self.signals = signals
        self.pending: int | None = None
        self._deferring = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._deferring:
            self.pending = signum
            return
        raise GenerationStopped(signum)

    def requested(self) -> bool:
        """Whether a stop signal is waiting (inside ``deferred()``)."""
        return self.pending is not None

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold stop signals until the block (e.g. an atomic file write) has finished."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
        if self.pending is not None:
            raise GenerationStopped(self.pending)
