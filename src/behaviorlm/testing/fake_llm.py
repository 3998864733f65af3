"""A scripted OpenAI-compatible chat server on loopback, for testing everything that talks to an LLM.

Real HTTP (``http.server`` in a thread), so the client's timeouts, retries and error handling are
exercised for real. Each request takes the next scripted step: a reply text, an HTTP status with a
body, or a delay longer than the client's timeout. Every request body is captured, so a test can assert
what left the process (no raw ids, no PII).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Step:
    text: str | None = None
    """Reply content (HTTP 200, OpenAI chat-completion JSON)."""
    status: int = 200
    body: str | None = None
    """Raw body for a non-200 status (or a malformed 200)."""
    delay_s: float = 0.0
    headers: tuple[tuple[str, str], ...] = ()
    top_logprobs: tuple[tuple[str, float], ...] = ()
    """First-token alternatives returned as ``choices[0].logprobs`` (OpenAI format) when asked for."""


class FakeLLMServer:
    """``with FakeLLMServer([Step(text=...), Step(status=500)]) as server: ... server.url ...``."""

    def __init__(self, steps: list[Step] | None = None, *, default: Step | None = None) -> None:
        self.steps = list(steps or [])
        self.default = default
        self.requests: list[dict[str, Any]] = []
        self.raw_requests: list[bytes] = []
        self._lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        """The most requests the server was answering at once (checks a client's concurrency limit)."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with fake._lock:
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                    fake.raw_requests.append(body)
                    try:
                        fake.requests.append(json.loads(body))
                    except ValueError:
                        fake.requests.append({})
                    step = fake.steps.pop(0) if fake.steps else fake.default
                self._in_flight = True
                try:
                    self._answer(step, body)
                finally:
                    self._done()

            def _done(self) -> None:
                # A request stops being in flight when its answer starts to go out: once the client has
                # the answer it may send the next request, which must not overlap this one in the count.
                if self._in_flight:
                    self._in_flight = False
                    with fake._lock:
                        fake.in_flight -= 1

            def _answer(self, step: Step | None, body: bytes) -> None:
                if step is None:
                    self._send(500, "no scripted reply left")
                    return
                if step.delay_s:
                    time.sleep(step.delay_s)
                if step.status != 200 or step.body is not None:
                    self._send(step.status, step.body or "", step.headers)
                    return
                reply = {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "model": "fake",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": step.text}}],
                    **({"_logprobs": True} if step.top_logprobs else {}),
                    "usage": {
                        "prompt_tokens": len(body) // 4,
                        "completion_tokens": len(step.text or "") // 4,
                    },
                }
                if reply.pop("_logprobs", False):
                    first = [{"token": t, "logprob": lp} for t, lp in step.top_logprobs]
                    reply["choices"][0]["logprobs"] = {"content": [{**first[0], "top_logprobs": first}]}
                self._send(200, json.dumps(reply), (("content-type", "application/json"),))

            def _send(self, status: int, body: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
                data = body.encode()
                self._done()
                try:
                    self.send_response(status)
                    for k, v in headers:
                        self.send_header(k, v)
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): that is what the step tests

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> FakeLLMServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
