"""The one place in behaviorlm that talks to a language model.

:class:`LLMClient` sends OpenAI-style chat requests either to any OpenAI-compatible HTTP server (vLLM,
Ollama, llama.cpp server, a hosted API; ``POST {base_url}/chat/completions``) or to the embedded model
(llama.cpp in-process through ``xllamacpp``; weights from :mod:`.weights`). Both go through the same
code path, which adds what production use needs:

* **timeouts and retries** with exponential backoff and jitter on timeouts, connection errors, 429 and
  5xx (honouring a short ``Retry-After``); other 4xx answers fail at once with the server's message;
* a **concurrency limit** (a semaphore; the embedded model additionally runs one request at a time);
* an **on-disk response cache** keyed by the SHA-256 of everything that determines the answer (backend,
  model, messages, schema, sampling settings): a repeated prompt costs nothing;
* **accounting**: requests, cache hits, retries, failures, prompt/completion tokens and latency;
* **structured output**: a JSON schema is sent as ``response_format`` (constrained decoding where the
  server supports it); a server that rejects ``response_format`` is asked again without it, and
  callers validate and repair (:mod:`.tasks`);
* **privacy**: for a remote server every message passes :func:`.privacy.scrub_pii` first.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from behaviorlm.config import LLMConfig
from behaviorlm.llm.privacy import scrub_pii
from behaviorlm.llm.weights import EMBEDDED_MODELS, cache_dir, model_path


class LLMError(RuntimeError):
    """The language model could not answer (bad request, server error after retries, unreadable reply)."""


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _SchemaRejected(Exception):
    """The server answered 4xx to a request carrying ``response_format``."""


@dataclass(frozen=True)
class ChatResponse:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    """Wall time of this call (near 0 for a cache hit)."""
    cached: bool
    attempts: int
    top_logprobs: tuple[tuple[str, float], ...] = ()
    """The first generated token's alternatives with their log-probabilities, when asked for."""


@dataclass
class Usage:
    """Running totals of one client (thread-safe updates through :meth:`LLMClient.chat`)."""

    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Message = dict[str, str]


class _HTTPTransport:
    def __init__(self, config: LLMConfig) -> None:
        import httpx

        assert config.base_url is not None
        key = os.environ.get(config.api_key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._url = config.base_url.rstrip("/") + "/chat/completions"
        self._http = httpx.Client(timeout=config.timeout_seconds, headers=headers)
        self._httpx = httpx
        self.name = config.base_url

    def send(self, payload: dict[str, Any]) -> dict[str, Any]:
        httpx = self._httpx
        try:
            reply = self._http.post(self._url, json=payload)
        except httpx.TimeoutException as e:
            raise _Retryable(f"timed out after {self._http.timeout.read}s") from e
        except httpx.TransportError as e:
            raise _Retryable(f"cannot reach {self._url}: {e}") from e
        if reply.status_code == 429 or reply.status_code >= 500:
            retry_after = reply.headers.get("retry-after")
            delay = float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None
            raise _Retryable(f"HTTP {reply.status_code}: {reply.text[:200]}", retry_after=delay)
        if reply.status_code >= 400:
            if "response_format" in payload and reply.status_code in (400, 422):
                raise _SchemaRejected(reply.text[:200])
            raise LLMError(f"{self._url} answered HTTP {reply.status_code}: {reply.text[:300]}")
        try:
            return reply.json()
        except ValueError as e:
            raise _Retryable(f"the reply is not JSON: {reply.text[:200]!r}") from e

    def close(self) -> None:
        self._http.close()


_COMPACT_JSON = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}

_EMBEDDED_SERVERS: dict[tuple[str, int, int], Any] = {}
_EMBEDDED_LOCK = threading.Lock()


class _EmbeddedTransport:
    """llama.cpp in this process. One server per (model, threads, context) per process, shared by clients."""

    def __init__(self, config: LLMConfig) -> None:
        if config.model not in EMBEDDED_MODELS:
            raise LLMError(
                f"embedded model {config.model!r} is unknown (choose one of {sorted(EMBEDDED_MODELS)}), "
                "or give --llm-url for a server"
            )
        key = (config.model, config.threads, config.context_tokens)
        with _EMBEDDED_LOCK:
            if key not in _EMBEDDED_SERVERS:
                _EMBEDDED_SERVERS[key] = _start_embedded(config)
        self._server = _EMBEDDED_SERVERS[key]
        self._lock = threading.Lock()  # one slot: requests run one after another
        self.name = f"embedded:{config.model}"

    def send(self, payload: dict[str, Any]) -> dict[str, Any]:
        # llama.cpp's own sampling option: a mild repetition penalty stops small models looping.
        payload = {"repeat_penalty": 1.1, **payload}
        schema = (payload.get("response_format") or {}).get("json_schema", {}).get("schema")
        if schema is not None:
            # As an llguidance grammar rather than response_format, whose GBNF grammar allows any
            # whitespace: the model indented, a newline and indentation before every key, ~15% of an
            # explanation's output tokens, each a full decoding step. One line, ", " and ": " between
            # items (llguidance's docs/json_schema.md, "Whitespace handling").
            import xllamacpp

            payload = {k: v for k, v in payload.items() if k != "response_format"}
            payload["grammar"] = xllamacpp.json_schema_to_grammar(
                json.dumps({"x-guidance": _COMPACT_JSON, **schema})
            )
        with self._lock:
            reply = self._server.handle_chat_completions(payload)
        if not isinstance(reply, dict):
            raise LLMError(f"the embedded model returned {type(reply).__name__}, not a completion")
        if "error" in reply:
            raise LLMError(f"the embedded model failed: {reply['error']}")
        return reply

    def close(self) -> None:
        """The embedded server is shared by the process and lives as long as it."""


def _start_embedded(config: LLMConfig) -> Any:
    try:
        import xllamacpp
    except ImportError as e:
        raise LLMError(
            "the embedded model needs xllamacpp (the llm extra; `make install` pins it), "
            "or give --llm-url for an OpenAI-compatible server"
        ) from e
    params = xllamacpp.CommonParams()
    params.model.path = str(model_path(config.model))
    params.n_ctx = config.context_tokens
    params.n_parallel = 1
    params.cpuparams.n_threads = config.threads
    params.cpuparams_batch.n_threads = config.threads
    # Threads sleep between work instead of spinning: with another busy process on a 2-core machine,
    # spinning threads starved each other (one 120-token explanation took 180 s instead of 8 s).
    params.cpuparams.poll = 0
    params.cpuparams_batch.poll = 0
    params.verbosity = -1  # llama.cpp is chatty on stderr; our accounting reports what matters
    params.warmup = False
    return xllamacpp.Server(params)


def _first_token_alternatives(reply: dict[str, Any]) -> tuple[tuple[str, float], ...]:
    try:
        first = reply["choices"][0]["logprobs"]["content"][0]
        return tuple((str(alt["token"]), float(alt["logprob"])) for alt in first["top_logprobs"])
    except (KeyError, IndexError, TypeError) as e:
        raise LLMError(
            "the reply has no choices[0].logprobs.content[0].top_logprobs: the server does not return "
            "token log-probabilities"
        ) from e


class LLMClient:
    """Chat with the configured model; see the module docstring for retries, cache and accounting."""

    def __init__(self, config: LLMConfig | None = None) -> None:
        self.config = config or LLMConfig()
        self.remote = self.config.base_url is not None
        self._transport: _HTTPTransport | _EmbeddedTransport = (
            _HTTPTransport(self.config) if self.remote else _EmbeddedTransport(self.config)
        )
        self._slots = threading.BoundedSemaphore(self.config.max_concurrency)
        self._usage_lock = threading.Lock()
        self._schema_supported = True
        self.usage = Usage()
        if self.config.cache_dir == "":
            self._cache: Path | None = None
        else:
            self._cache = (
                Path(self.config.cache_dir) if self.config.cache_dir else cache_dir() / "llm-responses"
            )

    @property
    def name(self) -> str:
        """``embedded:<model>`` or ``<base_url> <model>``: where answers come from."""
        return self._transport.name if not self.remote else f"{self.config.base_url} {self.config.model}"

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def chat(
        self,
        messages: list[Message],
        *,
        json_schema: dict[str, Any] | None = None,
        max_tokens: int | None = None,
        use_cache: bool = True,
        top_logprobs: int | None = None,
        grammar: str | None = None,
    ) -> ChatResponse:
        """The model's reply to ``messages`` (OpenAI chat format).

        ``json_schema`` asks for JSON matching it (constrained decoding where supported); the caller
        still validates the text. ``grammar`` (embedded model only) constrains the reply to an llguidance
        grammar (``%llguidance {}`` Lark syntax). ``top_logprobs`` asks for the first token's ``top_logprobs`` most likely
        alternatives (``ChatResponse.top_logprobs``; OpenAI ``logprobs`` format, which llama.cpp, vLLM and
        hosted APIs speak). Raises :class:`LLMError` when the model cannot answer.
        """
        if grammar is not None and self.remote:
            raise ValueError("grammar= is for the embedded model; give a remote server json_schema=")
        if self.remote and self.config.scrub_remote:
            messages = [{**m, "content": scrub_pii(m["content"]).text} for m in messages]
        payload: dict[str, Any] = {
            "model": self.config.model,
            "messages": messages,
            "temperature": self.config.temperature,
            "max_tokens": max_tokens or self.config.max_tokens,
        }
        if top_logprobs is not None:
            payload["logprobs"] = True
            payload["top_logprobs"] = int(top_logprobs)
        if grammar is not None:
            payload["grammar"] = grammar
        if json_schema is not None and self._schema_supported:
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": json_schema, "strict": True},
            }
        key = hashlib.sha256(
            json.dumps({"backend": self._transport.name, **payload}, sort_keys=True).encode()
        ).hexdigest()
        if use_cache and (hit := self._cache_get(key)) is not None:
            with self._usage_lock:
                self.usage.requests += 1
                self.usage.cache_hits += 1
            hit["top_logprobs"] = tuple((str(t), float(lp)) for t, lp in hit.get("top_logprobs", ()))
            return ChatResponse(**{**hit, "cached": True, "latency_s": 0.0, "attempts": 0})
        start = time.perf_counter()
        with self._slots:
            reply, attempts = self._send_with_retries(payload)
        latency = time.perf_counter() - start
        try:
            text = reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as e:
            with self._usage_lock:
                self.usage.failures += 1
            raise LLMError(f"the reply has no choices[0].message.content: {str(reply)[:200]}") from e
        usage = reply.get("usage") or {}
        response = ChatResponse(
            text=text,
            model=str(reply.get("model") or self.config.model),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            latency_s=latency,
            cached=False,
            attempts=attempts,
            top_logprobs=_first_token_alternatives(reply) if top_logprobs is not None else (),
        )
        with self._usage_lock:
            self.usage.requests += 1
            self.usage.prompt_tokens += response.prompt_tokens
            self.usage.completion_tokens += response.completion_tokens
            self.usage.latency_s += latency
        if use_cache:
            self._cache_put(key, response)
        return response

    def _send_with_retries(self, payload: dict[str, Any]) -> tuple[dict[str, Any], int]:
        delay = self.config.backoff_seconds
        for attempt in range(1, self.config.max_retries + 2):
            try:
                return self._transport.send(payload), attempt
            except _SchemaRejected:
                # The server does not do structured output: ask in plain text (callers validate).
                self._schema_supported = False
                payload = {k: v for k, v in payload.items() if k != "response_format"}
                return self._send_with_retries(payload)
            except _Retryable as e:
                if attempt > self.config.max_retries:
                    with self._usage_lock:
                        self.usage.failures += 1
                    raise LLMError(f"{self._transport.name} failed after {attempt} attempts: {e}") from e
                with self._usage_lock:
                    self.usage.retries += 1
                wait = e.retry_after if e.retry_after is not None and e.retry_after <= 30 else delay
                time.sleep(wait * (1 + 0.25 * random.random()))
                delay *= 2
            except LLMError:
                with self._usage_lock:
                    self.usage.failures += 1
                raise
        raise AssertionError("unreachable")

    def _cache_path(self, key: str) -> Path:
        assert self._cache is not None
        return self._cache / key[:2] / f"{key}.json"

    def _cache_get(self, key: str) -> dict[str, Any] | None:
        if self._cache is None:
            return None
        try:
            return json.loads(self._cache_path(key).read_text())
        except (OSError, ValueError):
            return None

    def _cache_put(self, key: str, response: ChatResponse) -> None:
        if self._cache is None:
            return
        path = self._cache_path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps(asdict(response)))
            os.replace(tmp, path)
        except OSError:
            pass  # a cache that cannot be written only costs time, never an answer
