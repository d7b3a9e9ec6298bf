"""kind: api against a loopback fake OpenAI-compatible server: retries, refusals, accounting."""

from __future__ import annotations

import contextlib
import logging
import time

import pytest
from fake_openai import FINGERPRINT, SERVED_MODEL, FakeOpenAI, answer_text, serve

from imhibench.common.errors import ImhiBenchError
from imhibench.generate import GenerationSettings, load_backend
from imhibench.generate.api import ApiGaveUp, ApiRejected, ApiSettings, _retry_after_s

KEY = "sk-test-SECRET-0123456789"
QUERIES = [f"Post {i}: I feel tired and alone, question {i}?" for i in range(6)]


def backend(url: str, monkeypatch, **api):
    monkeypatch.setenv("IMHI_TEST_KEY", KEY)
    options = {
        "base_url": url, "model": "gpt-test", "api_key_env": "IMHI_TEST_KEY",
        "backoff_s": 0.01, "max_backoff_s": 0.05, "timeout_s": 5, **api,
    }  # fmt: skip
    return load_backend(
        "api", model_dir=None, settings=GenerationSettings(max_new_tokens=64, seed=7),
        api=options, label="gpt-test-row",
    )  # fmt: skip


def answers(b, queries=QUERIES):
    found = {}
    b.answer([(str(i), q) for i, q in enumerate(queries)], lambda a: found.update({a.row_id: a}))
    return [found[str(i)] for i in range(len(queries))]


@pytest.mark.parametrize("mode", ["chat", "completions"])
def test_every_query_answered_once_with_the_endpoints_accounting(monkeypatch, mode):
    fake = FakeOpenAI(key=KEY)
    with serve(fake) as url:
        result = answers(backend(url, monkeypatch, mode=mode, concurrency=3))
    assert [a.response for a in result] == [answer_text(q) for q in QUERIES]
    assert fake.counts() == dict.fromkeys(QUERIES, 1)
    first = result[0]
    assert (first.model, first.system_fingerprint, first.finish_reason) == (
        SERVED_MODEL, FINGERPRINT, "stop",
    )  # fmt: skip
    assert first.prompt_tokens == len(QUERIES[0].split())
    assert first.completion_tokens == len(answer_text(QUERIES[0]).split())


def test_request_is_the_raw_query_greedy_seeded_and_capped(monkeypatch):
    fake = FakeOpenAI(key=KEY)
    captured = {}
    with serve(fake) as url:
        b = backend(url, monkeypatch)
        create = b.client.chat.completions.create

        def capture(**kwargs):
            captured.update(kwargs)
            return create(**kwargs)

        monkeypatch.setattr(b.client.chat.completions, "create", capture)
        answers(b, QUERIES[:1])
    assert captured == {
        "model": "gpt-test", "temperature": 0, "max_tokens": 64, "seed": 7,
        "messages": [{"role": "user", "content": QUERIES[0]}],
    }  # fmt: skip


def test_transient_failures_are_retried_until_answered(monkeypatch):
    faults = {
        QUERIES[0]: ["429", "429", "ok"],
        QUERIES[1]: ["500", "ok"],
        QUERIES[2]: ["slow", "ok"],
        QUERIES[3]: ["malformed", "ok"],
        QUERIES[4]: ["drop", "ok"],
    }
    fake = FakeOpenAI(key=KEY, faults=faults, slow_s=2.0)
    with serve(fake) as url:
        b = backend(url, monkeypatch, timeout_s=0.5, concurrency=2)
        result = answers(b)
    assert [a.response for a in result] == [answer_text(q) for q in QUERIES]
    assert [a.attempts for a in result] == [3, 2, 2, 2, 2, 1]
    assert fake.counts()[QUERIES[5]] == 1
    assert b.counters.retries == 6


def test_retry_after_is_honoured(monkeypatch):
    fake = FakeOpenAI(key=KEY, faults={QUERIES[0]: ["429", "ok"]}, retry_after="1.2")
    with serve(fake) as url:
        b = backend(url, monkeypatch, backoff_s=0.001, max_backoff_s=0.002)
        started = time.monotonic()
        answers(b, QUERIES[:1])
    assert time.monotonic() - started >= 1.2


def test_retry_after_forms():
    class Error:
        def __init__(self, headers):
            self.response = type("R", (), {"headers": headers})()

    assert _retry_after_s(Error({"retry-after": "3"})) == 3.0
    assert _retry_after_s(Error({"retry-after-ms": "250"})) == 0.25
    assert 0 <= _retry_after_s(Error({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) < 1
    assert _retry_after_s(Error({})) is None
    assert _retry_after_s(ValueError()) is None


def test_gives_up_after_max_attempts_naming_the_row(monkeypatch):
    fake = FakeOpenAI(key=KEY, default="500")
    with serve(fake) as url, pytest.raises(ApiGaveUp, match=r"row 0 failed 3 times.*500"):
        answers(backend(url, monkeypatch, max_attempts=3, concurrency=1), QUERIES[:1])
    assert fake.counts()[QUERIES[0]] == 3


@pytest.mark.parametrize("status", ["401", "404", "400"])
def test_non_retryable_answer_stops_at_once_naming_model_and_endpoint(monkeypatch, status):
    fake = FakeOpenAI(key=KEY, default=status)
    with serve(fake) as url, pytest.raises(ApiRejected) as caught:
        answers(backend(url, monkeypatch, concurrency=1))
    assert sum(fake.counts().values()) == 1  # not one request per row
    assert f"{status} " in str(caught.value)
    assert "'gpt-test'" in str(caught.value) and url in str(caught.value)


def test_a_bad_key_echoed_by_the_server_never_reaches_the_message_or_log(monkeypatch, caplog):
    fake = FakeOpenAI(key="sk-the-right-one")
    caplog.set_level(logging.DEBUG)
    with serve(fake) as url, pytest.raises(ApiRejected) as caught:
        answers(backend(url, monkeypatch, concurrency=2))
    assert "Incorrect API key" in str(caught.value)
    assert KEY not in str(caught.value) and "***" in str(caught.value)
    assert sum(fake.counts().values()) <= 2  # at most the requests already in flight
    assert KEY not in caplog.text


def test_content_filter_and_empty_answers_are_kept_empty(monkeypatch):
    fake = FakeOpenAI(key=KEY, faults={QUERIES[1]: ["filter"]})
    with serve(fake) as url:
        result = answers(backend(url, monkeypatch), QUERIES[:3])
    assert result[1].response == "" and result[1].finish_reason == "content_filter"
    assert result[0].response and result[2].response
    assert fake.counts()[QUERIES[1]] == 1  # a refusal is an answer, not retried


def test_missing_key_variable_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("IMHI_NO_SUCH_KEY", raising=False)
    with pytest.raises(ImhiBenchError, match=r"IMHI_NO_SUCH_KEY .*is not set"):
        backend("http://127.0.0.1:9/v1", monkeypatch, api_key_env="IMHI_NO_SUCH_KEY")


def test_bad_settings_are_refused():
    with pytest.raises(ImhiBenchError, match="mode"):
        ApiSettings(base_url="http://x", model="m", mode="edit")
    with pytest.raises(ImhiBenchError, match="concurrency"):
        ApiSettings(base_url="http://x", model="m", concurrency=0)
    assert ApiSettings(base_url="x", model="m").estimated_cost(10, 10) is None
    priced = ApiSettings(
        base_url="x", model="m", price_per_million_tokens={"prompt": 0.5, "completion": 1.5}
    )
    assert priced.estimated_cost(2_000_000, 1_000_000) == pytest.approx(2.5)


def test_generate_protocol_keeps_query_order(monkeypatch):
    fake = FakeOpenAI(key=KEY, faults={QUERIES[0]: ["slow"]}, slow_s=0.5)
    with serve(fake) as url:
        result = backend(url, monkeypatch, concurrency=4).generate(QUERIES)
    assert result.texts == [answer_text(q) for q in QUERIES]


def test_keyless_server_needs_no_key_variable(monkeypatch):
    """api_key_env: null, as for a vLLM server started without --api-key."""
    fake = FakeOpenAI(key="none")
    with serve(fake) as url:
        result = answers(backend(url, monkeypatch, api_key_env=None), QUERIES[:2])
    assert [a.response for a in result] == [answer_text(q) for q in QUERIES[:2]]


@contextlib.contextmanager
def slow_backend(monkeypatch, delay_s: float):
    """(backend asking 3 at a time, fake server answering after ``delay_s``)."""
    fake = FakeOpenAI(key=KEY, delay_s=delay_s)
    with serve(fake) as url:
        yield backend(url, monkeypatch, concurrency=3), fake


def answer_until_stopped(b, queries: list[str], kept: list[str], stop_requested) -> None:
    """``b.answer`` over ``queries``, the row ids of the answers in ``kept``."""
    b.answer(
        [(str(i), q) for i, q in enumerate(queries)],
        lambda a: kept.append(a.row_id),
        stop_requested=stop_requested,
    )


def test_a_stop_request_sends_nothing_new_and_keeps_every_answer_in_flight(monkeypatch):
    queries = [f"Post {i}: stop test {i}?" for i in range(30)]
    kept: list[str] = []
    with slow_backend(monkeypatch, delay_s=0.05) as (b, fake):
        answer_until_stopped(b, queries, kept, lambda: len(kept) >= 4)
        asked = fake.counts()
    assert 4 <= len(kept) <= 4 + 3  # at most the requests in flight when the stop came
    assert sorted(kept, key=int) == sorted((str(queries.index(q)) for q in asked), key=int)
    assert all(c == 1 for c in asked.values())


def test_a_signal_during_the_loop_stops_it_cleanly_and_leaves_no_worker_behind(monkeypatch):
    import os
    import signal
    import threading

    from imhibench.generate.signals import GenerationStopped, StopOnSignal

    queries = [f"Post {i}: signal test {i}?" for i in range(40)]
    kept: list[str] = []
    with slow_backend(monkeypatch, delay_s=0.02) as (b, fake):
        timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
        with StopOnSignal() as stop, pytest.raises(GenerationStopped):
            timer.start()
            with stop.deferred():
                answer_until_stopped(b, queries, kept, stop.requested)
        timer.join()
        asked = fake.counts()
    assert 0 < len(kept) < len(queries)
    assert len(asked) == len(kept)  # every request sent was answered and kept
    deadline = time.monotonic() + 10
    while any(t.name.startswith("api") for t in threading.enumerate()):
        assert time.monotonic() < deadline, "an API worker thread never finished"
        time.sleep(0.05)
