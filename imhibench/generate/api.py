"""Backend ``kind: api``: answers from an OpenAI-compatible endpoint (OpenAI, vLLM, TGI, ...).

Each query is sent as it is (the paper's zero-shot setting): the raw IMHI query as the only user
message (``mode: chat``) or as the prompt (``mode: completions``), ``temperature=0``, the
workflow seed when ``send_seed`` is set, and ``max_tokens`` = the generation settings'
``max_new_tokens``. Requests run ``concurrency`` at a time through the official ``openai``
client, whose own retries are off (``max_retries=0``): tenacity retries 408/409/429/5xx,
timeouts, dropped connections and unparsable answers with exponential back-off and full jitter,
waiting what ``Retry-After`` asks when the endpoint says. Any other error status (400, 401,
403, 404, 422, ...) stops the job at the first such answer (``ApiRejected``). The API key is
read from the environment variable ``api_key_env`` and never written anywhere: every message
that could carry it goes through ``redact``.
"""

from __future__ import annotations

import email.utils
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from imhibench.common.errors import ImhiBenchError
from imhibench.generate.base import BatchCallback, GenerationResult, GenerationSettings

log = logging.getLogger(__name__)

MODES = ("chat", "completions")
# Statuses worth asking again (as the openai client's own retry logic): timeout, conflict,
# rate limit, and every server error.
RETRY_STATUSES = frozenset({408, 409, 429})
# Seconds to wait for requests already in flight when the job stops (SLURM's KillWait is 30 s).
DRAIN_S = 20.0
# How often a running job checks for a stop request (seconds).
POLL_S = 0.2


@dataclass(frozen=True)
class ApiSettings:
    """The ``api`` block of a model entry (see workflow_config/config.yaml)."""

    base_url: str
    model: str
    mode: str = "chat"
    api_key_env: str | None = "OPENAI_API_KEY"
    send_seed: bool = True
    concurrency: int = 4
    timeout_s: float = 120.0
    max_attempts: int = 8
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    price_per_million_tokens: dict | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ImhiBenchError(f"api settings: mode {self.mode!r} not in {MODES}")
        for name in ("concurrency", "max_attempts"):
            if type(getattr(self, name)) is not int or getattr(self, name) < 1:
                raise ImhiBenchError(f"api settings: {name} must be an integer >= 1")
        for name in ("timeout_s", "backoff_s", "max_backoff_s"):
            if getattr(self, name) <= 0:
                raise ImhiBenchError(f"api settings: {name} must be > 0")

    def resume_key(self) -> dict:
        """The settings a saved answer depends on (not concurrency, timeouts or prices)."""
        return {"base_url": self.base_url, "model": self.model, "mode": self.mode}

    def estimated_cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """Cost from the configured prices per million tokens, or None without prices."""
        prices = self.price_per_million_tokens
        if not prices:
            return None
        return (prompt_tokens * prices["prompt"] + completion_tokens * prices["completion"]) / 1e6


@dataclass(frozen=True)
class Answer:
    """One finished row: the text (empty when filtered or refused) and the endpoint's accounting."""

    row_id: str
    response: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    model: str | None
    system_fingerprint: str | None
    attempts: int = 1

    def to_json(self) -> dict:
        return asdict(self)


class ApiRejected(ImhiBenchError):
    """The endpoint refused a request in a way that asking again cannot fix."""


class ApiGaveUp(ImhiBenchError):
    """A row still failed after ``max_attempts`` tries."""


class Malformed(Exception):
    """A 200 answer without the fields of a completion (retried: proxies garble answers)."""


@dataclass
class _Counters:
    retries: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_retry(self) -> None:
        with self.lock:
            self.retries += 1


def redact(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` replaced by ``***``."""
    return text.replace(secret, "***") if secret else text


class RedactSecret(logging.Filter):
    """A handler filter that removes the secret from every record it passes on."""

    def __init__(self, secret: str):
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.secret in message:
            record.msg, record.args = redact(message, self.secret), None
        return True


def read_api_key(settings: ApiSettings, model: str, remedy: str | None = None) -> str:
    """The key from ``settings.api_key_env``; ``"none"`` for keyless servers (``null``).
    ``remedy``: the other way out named in the error (default: remove ``model`` from
    ``models``)."""
    if settings.api_key_env is None:
        return "none"
    key = os.environ.get(settings.api_key_env, "")
    if not key.strip():
        raise ImhiBenchError(
            f"{model}: environment variable {settings.api_key_env} (api.api_key_env) is not set; "
            f"export the API key of {settings.base_url} there, or "
            f"{remedy or f'remove {model} from `models`'}"
        )
    return key.strip()


def _retry_after_s(error: BaseException) -> float | None:
    """Seconds the endpoint asked to wait (``retry-after-ms`` or ``Retry-After``), if any."""
    response = getattr(error, "response", None)
    if response is None:
        return None
    headers = response.headers
    try:
        if (ms := headers.get("retry-after-ms")) is not None:
            return max(float(ms) / 1000, 0.0)
        if (value := headers.get("retry-after")) is None:
            return None
        try:
            return max(float(value), 0.0)
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(when.timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


class ApiBackend:
    """Answers queries through an OpenAI-compatible endpoint, ``concurrency`` at a time."""

    def __init__(
        self,
        label: str,
        settings: ApiSettings,
        max_tokens: int,
        seed: int,
        client=None,
    ):
        import openai

        self.label, self.settings = label, settings
        self.max_tokens, self.seed = max_tokens, seed
        self._key = read_api_key(settings, label)
        self.client = client or openai.OpenAI(
            api_key=self._key,
            base_url=settings.base_url,
            timeout=settings.timeout_s,
            max_retries=0,  # retries are ours (tenacity), so that Retry-After and limits hold
        )
        self.counters = _Counters()

    # ---- the GenerationBackend protocol ------------------------------------------------

    def prompt_lengths(self, queries: list[str]) -> list[int]:
        """Characters per query (no tokenizer of the remote model is at hand)."""
        return [len(q) for q in queries]

    def generate(
        self, queries: list[str], on_batch: BatchCallback | None = None
    ) -> GenerationResult:
        answers: dict[str, Answer] = {}

        def keep(answer: Answer) -> None:
            answers[answer.row_id] = answer
            if on_batch is not None:
                on_batch(1, answer.completion_tokens or 0)

        ids = [str(i) for i in range(len(queries))]
        self.answer(list(zip(ids, queries, strict=True)), keep)
        ordered = [answers[i] for i in ids]
        return GenerationResult(
            [a.response for a in ordered], [a.completion_tokens or 0 for a in ordered]
        )

    # ---- row by row --------------------------------------------------------------------

    def answer(
        self,
        rows: Iterable[tuple[str, str]],
        on_answer: Callable[[Answer], None],
        stop_requested: Callable[[], bool] | None = None,
    ) -> None:
        """Ask for every (row_id, query); ``on_answer`` gets each answer, in the calling thread,
        as it arrives.

        ``stop_requested`` is polled at least every ``POLL_S``; once it is true no new request
        is sent and no retry is made, the answers of requests in flight are still handed to
        ``on_answer`` (waiting up to ``DRAIN_S``), and the call returns. On an error the same
        happens, then the error propagates. (A stop is polled, never raised from a signal
        handler: an exception raised there can leave a future's lock held by this thread, and
        the worker that later finishes that request would block forever, and so would exit.)
        """
        halt = threading.Event()
        queue = iter(rows)
        in_flight: dict[Future, str] = {}
        pool = ThreadPoolExecutor(self.settings.concurrency, thread_name_prefix="api")

        def stopping() -> bool:
            return stop_requested is not None and bool(stop_requested())

        def top_up() -> None:
            while len(in_flight) < self.settings.concurrency and not stopping():
                row = next(queue, None)
                if row is None:
                    return
                in_flight[pool.submit(self._ask, row[0], row[1], halt)] = row[0]

        try:
            top_up()
            while in_flight and not stopping():
                finished, _ = wait(in_flight, timeout=POLL_S, return_when=FIRST_COMPLETED)
                for future in finished:
                    in_flight.pop(future)
                    on_answer(future.result())
                top_up()
        finally:  # done, stopped or failed: no new request, no retry; keep what is in flight
            halt.set()
            pool.shutdown(wait=False, cancel_futures=True)
            self._drain(in_flight, on_answer)

    def _drain(self, in_flight: dict[Future, str], on_answer: Callable[[Answer], None]) -> None:
        """Save what requests already in flight bring back (they are paid for)."""
        finished, _ = wait(in_flight, timeout=DRAIN_S)
        for future in finished:
            if not future.cancelled() and future.exception() is None:
                on_answer(future.result())
        if lost := len(in_flight) - len(finished):
            log.warning("%s: %d request(s) still in flight were abandoned", self.label, lost)

    def _ask(self, row_id: str, query: str, halt: threading.Event) -> Answer:
        import tenacity

        exponential = tenacity.wait_random_exponential(
            multiplier=self.settings.backoff_s, max=self.settings.max_backoff_s
        )

        def wait_s(state: tenacity.RetryCallState) -> float:
            asked = _retry_after_s(state.outcome.exception())
            return exponential(state) if asked is None else asked

        def before_sleep(state: tenacity.RetryCallState) -> None:
            self.counters.add_retry()
            log.warning(
                "%s: row %s: %s; retry %d of %d in %.1f s",
                self.label, row_id, self._describe(state.outcome.exception()),
                state.attempt_number, self.settings.max_attempts - 1, state.upcoming_sleep,
            )  # fmt: skip

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(self._retryable),
            stop=tenacity.stop_after_attempt(self.settings.max_attempts)
            | tenacity.stop_when_event_set(halt),
            wait=wait_s,
            sleep=halt.wait,  # a stop wakes a sleeping retry at once
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                number = attempt.retry_state.attempt_number
                if halt.is_set() and number > 1:
                    break  # woken from a back-off by a stop: send nothing more
                with attempt:
                    return replace(self._request(row_id, query), attempts=number)
        except Exception as error:
            raise self._fatal(row_id, error) from None
        raise ApiGaveUp(f"{self.label}: row {row_id}: stopped before an answer arrived")

    def _request(self, row_id: str, query: str) -> Answer:
        common = {"model": self.settings.model, "temperature": 0, "max_tokens": self.max_tokens}
        if self.settings.send_seed:
            common["seed"] = self.seed
        if self.settings.mode == "chat":
            reply = self.client.chat.completions.create(
                messages=[{"role": "user", "content": query}], **common
            )
        else:
            reply = self.client.completions.create(prompt=query, **common)
        choices = getattr(reply, "choices", None)
        if isinstance(reply, str) or not choices:
            raise Malformed(f"answer is not a completion: {str(reply)[:200]!r}")
        choice = choices[0]
        text = choice.message.content if self.settings.mode == "chat" else choice.text
        usage = getattr(reply, "usage", None)
        return Answer(
            row_id=row_id,
            response=text or "",  # refusal / content filter: kept as an empty answer
            finish_reason=choice.finish_reason,
            prompt_tokens=getattr(usage, "prompt_tokens", None),
            completion_tokens=getattr(usage, "completion_tokens", None),
            model=getattr(reply, "model", None),
            system_fingerprint=getattr(reply, "system_fingerprint", None),
        )

    @staticmethod
    def _retryable(error: BaseException) -> bool:
        import openai

        if isinstance(error, openai.APIStatusError):
            return error.status_code in RETRY_STATUSES or error.status_code >= 500
        # timeouts and dropped connections (APITimeoutError is an APIConnectionError), and
        # answers that are no completion (bad JSON, missing fields)
        transient = (
            openai.APIConnectionError,
            openai.APIResponseValidationError,
            Malformed,
            ValueError,  # invalid JSON
        )
        return isinstance(error, transient)

    def _describe(self, error: BaseException | None) -> str:
        status = getattr(error, "status_code", None)
        kind = type(error).__name__
        text = redact(str(error), self._key)[:300]
        return f"{status} {kind}: {text}" if status else f"{kind}: {text}"

    def _fatal(self, row_id: str, error: BaseException) -> ImhiBenchError:
        where = f"model {self.settings.model!r} at {self.settings.base_url}"
        if self._retryable(error):
            return ApiGaveUp(
                f"{self.label}: {where}: row {row_id} failed {self.settings.max_attempts} times, "
                f"last: {self._describe(error)}; rows answered so far are saved, run the job "
                "again to resume"
            )
        return ApiRejected(
            f"{self.label}: {where} refused the request ({self._describe(error)}); not retried, "
            "no further requests sent. Check the key (api.api_key_env), api.model and "
            "api.base_url"
        )


def load_api(
    *,
    model_dir: str | None = None,
    base_model_dir: str | None = None,
    settings: GenerationSettings,
    device: str | None = None,
    api: dict,
    label: str = "api",
) -> ApiBackend:
    """Registry loader of ``kind: api`` (no model directory: the model lives at the endpoint)."""
    return ApiBackend(label, ApiSettings(**api), settings.max_new_tokens, settings.seed)


@contextmanager
def secret_redacted(backend):
    """While the job runs, no log handler passes on a record holding the API key."""
    handlers = logging.getLogger().handlers
    redactor = RedactSecret(backend._key)
    for handler in handlers:
        handler.addFilter(redactor)
    # httpx logs one INFO line per request: too many for a log, and useless.
    for name in ("httpx", "httpx2", "openai"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(redactor)


def answer_until_stopped(
    backend: ApiBackend,
    todo: list,
    keep: Callable,
    stop,
    answered: Callable[[], int],
    total: int,
    saved_in: Path | str | None,
) -> None:
    """``backend.answer`` with SIGTERM/SIGINT held for the whole loop and polled (see
    ``ApiBackend.answer``): on a stop, the answers in flight are kept first, then one line says
    how many rows are saved and where, and ``GenerationStopped`` goes on to the caller."""
    from imhibench.generate.signals import GenerationStopped

    try:
        with stop.deferred():
            backend.answer(todo, keep, stop_requested=stop.requested)
    except GenerationStopped as err:
        where = "kept in memory only" if saved_in is None else f"saved in {saved_in}"
        log.warning(
            "%s: stopped by %s; %d of %d rows %s; run the job again to resume",
            backend.label, err.signal_name, answered(), total, where,
        )  # fmt: skip
        raise
