"""A loopback fake of an OpenAI-compatible endpoint (chat and plain completions) that records
every request and misbehaves on demand, as real APIs do.

``sequence`` lists what the 1st, 2nd, ... request of all gets; after it, per query,
``faults[query]`` lists what the 1st, 2nd, ... request for that query gets; after the list
(or for other queries) ``default`` applies. Actions: ``ok``, ``429`` (with ``Retry-After``),
``500``, ``slow`` (answers after ``slow_s``), ``malformed`` (200, invalid JSON), ``filter``
(``finish_reason: content_filter``, no content), ``drop`` (connection closed, no answer),
``400``, ``401`` and ``404``. With ``prompt_logprobs`` (a function of the prompt returning
its tokens, start offsets and log-probabilities), a completions request with ``echo`` gets them
back, followed by one generated token, as vLLM answers. With ``chat_reply`` (a function of the
request body returning the message text and the ``logprobs`` field, or None), chat requests get
its answer instead of ``answer_text``. A request with another key than ``key`` gets 401 with a
message that echoes the key it got (as real APIs half do), to check that it is redacted.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from support import serve_handler

FINGERPRINT = "fp_fake_0001"
SERVED_MODEL = "fake-gpt-0613"


def answer_text(query: str) -> str:
    """The fake model's answer: deterministic, mentions the query's start."""
    return f"Reasoning: the post reads {' '.join(query.split()[:6])!r}. It shows no sign of it."


@dataclass
class FakeOpenAI:
    key: str = "sk-test-fake-key"
    faults: dict[str, list[str]] = field(default_factory=dict)
    sequence: list[str] = field(default_factory=list)
    default: str = "ok"
    retry_after: str = "0.1"
    slow_s: float = 3.0
    delay_s: float = 0.0
    prompt_logprobs: Callable[[str], tuple[list[str], list[int], list]] | None = None
    chat_reply: Callable[[dict], tuple[str, dict | None]] | None = None
    bodies: list[dict] = field(default_factory=list)
    requests: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def counts(self) -> Counter:
        """Requests per query."""
        with self.lock:
            return Counter(r["query"] for r in self.requests)

    def action(self, query: str) -> str:
        with self.lock:
            n = sum(r["query"] == query for r in self.requests)
            total = len(self.requests)
            self.requests.append({"query": query})
        if total < len(self.sequence):
            return self.sequence[total]
        planned = self.faults.get(query, [])
        return planned[n] if n < len(planned) else self.default


def _reply(query: str, mode: str, filtered: bool) -> dict:
    text = None if filtered else answer_text(query)
    choice = {"index": 0, "finish_reason": "content_filter" if filtered else "stop"}
    if mode == "chat":
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text or ""
        choice["logprobs"] = None
    completion_tokens = len((text or "").split())
    return {
        "id": "cmpl-fake",
        "object": "chat.completion" if mode == "chat" else "text_completion",
        "created": 1700000000,
        "model": SERVED_MODEL,
        "system_fingerprint": FINGERPRINT,
        "choices": [choice],
        "usage": {
            "prompt_tokens": len(query.split()),
            "completion_tokens": completion_tokens,
            "total_tokens": len(query.split()) + completion_tokens,
        },
    }


# The token an echo request "generates" (max_tokens: 1), dropped by the client.
GENERATED_TOKEN, GENERATED_LOGPROB = " x", -0.5


def _echo_reply(fake: FakeOpenAI, body: dict) -> dict:
    """Prompt tokens and their log-probabilities, then one generated token."""
    prompt = body["prompt"]
    tokens, offsets, logprobs = fake.prompt_logprobs(prompt)
    n = len(tokens)
    choice = {
        "index": 0,
        "finish_reason": "length",
        "text": prompt + GENERATED_TOKEN if body.get("echo") else GENERATED_TOKEN,
        "logprobs": {
            "tokens": [*tokens, GENERATED_TOKEN],
            "token_logprobs": [*logprobs, GENERATED_LOGPROB],
            "top_logprobs": [None]
            + [{t: v} for t, v in zip(tokens[1:], logprobs[1:], strict=True)]
            + [{GENERATED_TOKEN: GENERATED_LOGPROB}],
            "text_offset": [*offsets, len(prompt)],
        },
    }
    return {
        "id": "cmpl-fake", "object": "text_completion", "created": 1700000000,
        "model": SERVED_MODEL, "choices": [choice],
        "usage": {"prompt_tokens": n, "completion_tokens": 1, "total_tokens": n + 1},
    }  # fmt: skip


def _chat_hook_reply(fake: FakeOpenAI, body: dict) -> dict:
    """The chat answer of ``fake.chat_reply`` (text and logprobs) for this request."""
    text, logprobs = fake.chat_reply(body)
    prompt_tokens = sum(len(m["content"].split()) for m in body["messages"])
    completion_tokens = len(text.split())
    choice = {"index": 0, "finish_reason": "stop", "logprobs": logprobs}
    choice["message"] = {"role": "assistant", "content": text}
    return {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 1700000000,
        "model": SERVED_MODEL, "system_fingerprint": FINGERPRINT, "choices": [choice],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }  # fmt: skip


def _handler(fake: FakeOpenAI) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, message: str, headers: dict | None = None) -> None:
            body = {"error": {"message": message, "type": "fake_error", "code": status}}
            self._send(status, json.dumps(body).encode(), headers)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with fake.lock:
                fake.bodies.append(body)
            mode = "chat" if self.path.endswith("/chat/completions") else "completions"
            query = body["messages"][-1]["content"] if mode == "chat" else body["prompt"]
            action = fake.action(query)
            given = self.headers.get("Authorization", "").removeprefix("Bearer ")
            if given != fake.key or action == "401":
                return self._error(401, f"Incorrect API key provided: {given}.")
            if fake.delay_s:
                time.sleep(fake.delay_s)
            if action == "429":
                return self._error(429, "Rate limit reached", {"Retry-After": fake.retry_after})
            if action in ("500", "400", "404"):
                return self._error(int(action), f"fake {action}")
            if action == "malformed":
                return self._send(200, b'{"id": "cmpl-fake", "choices": [')
            if action == "drop":
                self.close_connection = True
                self.connection.shutdown(2)
                return None
            if action == "slow":
                time.sleep(fake.slow_s)
            if mode == "completions" and fake.prompt_logprobs is not None:
                reply = _echo_reply(fake, body)
            elif mode == "chat" and fake.chat_reply is not None:
                reply = _chat_hook_reply(fake, body)
            else:
                reply = _reply(query, mode, filtered=action == "filter")
            return self._send(200, json.dumps(reply).encode())

    return Handler


@contextlib.contextmanager
def serve(fake: FakeOpenAI) -> Iterator[str]:
    """Serve ``fake`` on 127.0.0.1 (a free port); yields the base URL (``.../v1``)."""
    with serve_handler(_handler(fake)) as url:
        yield f"{url}/v1"
