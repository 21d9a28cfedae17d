"""The OpenAI-compatible backend: the only module that imports `openai`.

Requests go through the SDK (auth, HTTP, status errors) but bodies are read raw: the runtime has
to parse provider quirks tolerantly anyway (see `agent.streaming`), and skipping the SDK's typed
response objects removes most of its per-request cost. Retries are ours: exponential backoff with
jitter, honouring `Retry-After`, for 429, 5xx and connection failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import importlib
import importlib.util
import json
import logging
import random
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import openai

from agent.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ModelAPIError,
    ModelConnectionError,
    ModelError,
    ModelStreamError,
    RateLimitError,
    ServerError,
)
from agent.models.base import ModelRequest, ModelResponse, RequestGate, ResponseMeta
from agent.secrets import redact, scrub_surrogates

__all__ = ["OpenAIChatModel", "RetryPolicy"]

log = logging.getLogger("qwenloop")

_KEPT_HEADERS = ("x-account-balance", "x-request-id", "x-dashscope-request-id", "retry-after")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How failed requests are retried.

    Attributes:
        max_retries: Retries after the first attempt (0 turns retrying off).
        base_delay: Seconds before the first retry; doubles each time.
        max_delay: Upper bound of one wait, and of a `Retry-After` we are willing to honour.
        jitter: Fraction of each wait drawn at random, so many clients do not retry in step.
        retry_read_timeouts: Also retry a request whose reply did not arrive within the
            timeout. Off by default: the provider may still be generating that reply, and a
            resent request is billed again. Failures to connect, and connections that break
            before the reply reached the caller, are always retried.
    """

    max_retries: int = 3
    base_delay: float = 0.5
    max_delay: float = 30.0
    jitter: float = 0.25
    retry_read_timeouts: bool = False

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number `attempt` (1-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay)
        wait = min(self.base_delay * 2 ** (attempt - 1), self.max_delay)
        return float(wait) * (1 - self.jitter + 2 * self.jitter * random.random())


def _retry_after(headers: Any) -> float | None:
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return parsed.timestamp() - time.time() if parsed else None


def _error_details(body: Any) -> tuple[str | None, str | None]:
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            msg = err.get("message") or body.get("message")
            code = err.get("code") or err.get("type") or body.get("code")
            return (str(msg) if msg else None), (str(code) if code else None)
        if isinstance(err, str):
            return err, None
    return (str(body) if body else None), None


def _request_error_types() -> tuple[type[BaseException], ...]:
    """The transport's own exceptions, which the SDK lets escape while a body is being read."""
    found: list[type[BaseException]] = [openai.APIConnectionError]  # includes APITimeoutError
    for module_name in ("httpx2", "httpx"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        found.append(module.RequestError)  # transport errors, timeouts, bad encodings
    if _HAS_AIOHTTP:
        import aiohttp

        # The aiohttp transport maps most of its errors to httpx2's; these are the rest.
        found += [aiohttp.ClientError, TimeoutError]
    return tuple(found)


def _aiohttp_installed() -> bool:
    try:
        return importlib.util.find_spec("aiohttp") is not None
    except (ImportError, ValueError):
        return False


_HAS_AIOHTTP = _aiohttp_installed()


_TRANSPORT_ERRORS = _request_error_types()


@dataclass(slots=True)
class _Failure(Exception):
    """One attempt failed: the typed error to raise, and whether another attempt may help."""

    error: ModelError
    retryable: bool
    retry_after: float | None = None


_TIMEOUTS = frozenset(
    {"ReadTimeout", "WriteTimeout", "PoolTimeout", "TimeoutException", "TimeoutError",
     "ServerTimeoutError", "SocketTimeoutError", "APITimeoutError"}
)  # fmt: skip


def _failure_kind(exc: BaseException) -> str:
    """Tell a read timeout (the reply may be billed) from a failure to connect or a broken link."""
    names = {type(e).__name__ for e in (exc, exc.__cause__, exc.__context__) if e is not None}
    if "ConnectTimeout" in names:
        return "connect"
    return "read-timeout" if names & _TIMEOUTS else "connect"


async def _close_quietly(cm: Any) -> None:
    """Close an SDK response context; a connection that is already broken may complain."""
    with contextlib.suppress(*_TRANSPORT_ERRORS):
        await cm.__aexit__(None, None, None)


def _shown(chunk: dict[str, Any]) -> bool:
    """Whether a stream chunk carries text the caller shows as it arrives.

    Tool-call deltas are not shown (a call is announced when it runs), so a stream that holds
    only calls can be held back whole and retried if it breaks off.
    """
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or choice.get("message") or {}
        if any(delta.get(key) for key in ("content", "reasoning_content", "reasoning")):
            return True
    return False


async def _lines_then_blank(response: Any) -> AsyncIterator[str]:
    """Yield a response's lines, then one blank line: a last event without one still ends."""
    async for line in response.iter_lines():
        yield line
    yield ""


def _finishes(chunk: dict[str, Any]) -> bool:
    return any(choice.get("finish_reason") for choice in chunk.get("choices") or ())


def _estimate_tokens(body: dict[str, Any]) -> int:
    """Estimate a request's tokens for a rate limiter, cheaply and on the high side.

    A token is about 3 bytes of UTF-8 (one CJK character, or most of an English word's letters),
    plus the completion limit when one is set; the limiter corrects the charge from the usage.
    """
    try:
        text = json.dumps(body, ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        return 0
    limit = body.get("max_tokens") or body.get("max_completion_tokens")
    extra = limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else 0
    return len(text.encode("utf-8", "replace")) // 3 + extra


def _total_tokens(usage: Any) -> int | None:
    """The tokens a reply's `usage` object counts in all, or None when it does not say."""
    if not isinstance(usage, dict):
        return None
    total = usage.get("total_tokens")
    if isinstance(total, int) and not isinstance(total, bool):
        return total
    parts = [usage.get("prompt_tokens"), usage.get("completion_tokens")]
    counted = [p for p in parts if isinstance(p, int) and not isinstance(p, bool)]
    return sum(counted) if counted else None


def _redacted_preview(raw: bytes, secret: str, limit: int = 200) -> str:
    text = raw[: limit * 4].decode("utf-8", "replace")
    return repr(redact(text, secret)[:limit])


class OpenAIChatModel:
    """A chat model behind an OpenAI-compatible `/chat/completions` endpoint.

    Args:
        model: The model name to request.
        base_url: The endpoint's base URL (ending in `/v1` or `/compatible-mode/v1`).
        api_key: The key sent as `Authorization: Bearer ...`.
        provider: The provider preset's name, used in messages and for quirks.
        key_source: Where the key came from, named when it is refused.
        retry: The retry policy.
        timeout: Seconds one request may take.
        default_headers: Extra headers for every request.
        stream_usage: Ask for a usage chunk at the end of streams (`stream_options`).
        max_response_bytes: The largest reply accepted; a larger one is a `ModelAPIError`.
        max_connections: Connections kept open for reuse, per event loop. Size it to the
            number of runs you keep in flight: past it, requests open new connections.
        transport: "aiohttp" (about twice the requests per second of the SDK's default at 50
            in flight, and half the CPU per request; needs `qwenloop[fast]`), "httpx" (the
            SDK's default), or "auto": aiohttp where it is installed.
        gate: Paces every request (retries included) with others sharing the account's
            limits, e.g. an `agent.ratelimit.RateLimiter`.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key: str,
        provider: str = "custom",
        key_source: str = "the api_key argument",
        retry: RetryPolicy | None = None,
        timeout: float = 120.0,
        default_headers: dict[str, str] | None = None,
        stream_usage: bool = True,
        max_response_bytes: int = 32 * 1024 * 1024,
        max_connections: int = 256,
        transport: str = "auto",
        gate: RequestGate | None = None,
    ) -> None:
        if transport not in ("auto", "aiohttp", "httpx"):
            raise ConfigError(f"transport must be 'auto', 'aiohttp' or 'httpx', not {transport!r}")
        if transport == "aiohttp" and not _HAS_AIOHTTP:
            raise ConfigError("transport='aiohttp' needs aiohttp: pip install 'qwenloop[fast]'")
        self.transport = "aiohttp" if transport == "auto" and _HAS_AIOHTTP else transport
        if self.transport == "auto":
            self.transport = "httpx"
        self.model_name = model
        self.gate = gate
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self._secret = api_key
        self.provider = provider
        self.base_url = base_url
        self.key_source = key_source
        self.retry = retry or RetryPolicy()
        self.stream_usage = stream_usage
        self.max_connections = max_connections
        self._client_args: dict[str, Any] = {
            "api_key": api_key,
            "base_url": base_url,
            "max_retries": 0,
            "timeout": timeout,
            "default_headers": default_headers,
        }
        # An SDK client's connection pool belongs to one event loop; `run_sync` makes a new
        # loop per call, so clients are kept per loop.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, openai.AsyncOpenAI]
        self._clients = weakref.WeakKeyDictionary()

    @property
    def _client(self) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            # The SDK keeps 100 idle connections: with more runs in flight, every other request
            # would open a new one. Keep as many as the user expects to run at once.
            limits = openai.DEFAULT_CONNECTION_LIMITS
            http_class = (
                openai.DefaultAioHttpClient
                if self.transport == "aiohttp"
                else openai.DefaultAsyncHttpx2Client
            )
            http_client = http_class(
                limits=type(limits)(
                    max_connections=max(self.max_connections, limits.max_connections or 0),
                    max_keepalive_connections=self.max_connections,
                    keepalive_expiry=limits.keepalive_expiry,
                ),
                timeout=self._client_args["timeout"],
            )
            client = openai.AsyncOpenAI(**self._client_args, http_client=http_client)
            self._clients[loop] = client
        return client

    def _kwargs(self, request: ModelRequest, stream: bool) -> dict[str, Any]:
        # The body travels whole in `extra_body`, which the SDK merges into the JSON as is.
        # Passed as typed arguments instead, the SDK walks every message against its TypedDicts
        # before sending: about half of the client's CPU time per request (see bench/).
        body: dict[str, Any] = {"model": request.model, "messages": request.messages}
        if request.tools:
            body["tools"] = request.tools
        body.update(request.params)
        body.update(request.extra_body)
        kwargs: dict[str, Any] = {"model": request.model, "messages": [], "extra_body": body}
        if stream:
            kwargs["stream"] = True
            if self.stream_usage:
                body.setdefault("stream_options", {"include_usage": True})
        else:
            body.pop("stream_options", None)  # refused without `stream`
        return kwargs

    def _map_status(self, exc: openai.APIStatusError) -> ModelAPIError:
        try:
            body = exc.response.json()
        except ValueError:
            body = exc.response.text
        msg, code = _error_details(body)
        if msg is not None:
            msg = redact(msg, self._secret)
        status = exc.status_code
        request_id = exc.response.headers.get("x-request-id") or exc.response.headers.get(
            "x-dashscope-request-id"
        )
        detail = msg or redact(exc.message, self._secret)
        kw: dict[str, Any] = {
            "status_code": status,
            "provider_message": msg,
            "code": code,
            "request_id": request_id,
            "body": body,
        }
        where = f"{self.provider} ({self.base_url})"
        if status in (401, 403):
            return AuthenticationError(
                f"{where} refused the API key ({status}: {detail}); the key came from "
                f"{self.key_source}: check it or set the right one",
                **kw,
            )
        if status == 429:
            return RateLimitError(
                f"{where} is rate-limiting or out of quota (429: {detail}); "
                "back off, lower concurrency or recharge the account",
                **kw,
            )
        if status >= 500:
            return ServerError(f"{where} failed ({status}: {detail}); try again later", **kw)
        if status == 404:
            return BadRequestError(
                f"{where} answered 404 ({detail}); check the base URL and the model name "
                f"{self.model_name!r}",
                **kw,
            )
        return BadRequestError(f"{where} refused the request ({status}: {detail})", **kw)

    def _estimate(self, kwargs: dict[str, Any]) -> int:
        """The request's estimated tokens for the gate; nothing is computed without one."""
        return 0 if self.gate is None else _estimate_tokens(kwargs["extra_body"])

    async def _send(self, kwargs: dict[str, Any], tokens: int) -> tuple[Any, Any]:
        """Send one request; return the SDK's response context and the open raw response.

        With a gate, waits for its turn first (every attempt: a retry spends the limits too),
        and reports a 429 to it so that every request sharing it slows down.

        Raises:
            _Failure: The endpoint answered with an error status or could not be reached.
        """
        create = self._client.chat.completions.with_streaming_response.create
        gate = self.gate
        if gate is not None:
            # Only now: the first use of a client (its pool, the SDK's lazy imports) takes long
            # enough that requests admitted in turn before it would reach the provider together.
            await gate.acquire(tokens)
        try:
            try:
                cm = create(**kwargs)
                response = await cm.__aenter__()
            except UnicodeEncodeError:
                # Text with lone surrogates (bytes from a shell that are not UTF-8) cannot be
                # encoded; send it with U+FFFD in their place. Checked only when it happens.
                kwargs["extra_body"] = scrub_surrogates(kwargs["extra_body"])
                cm = create(**kwargs)
                response = await cm.__aenter__()
        except openai.APIStatusError as exc:
            retryable = exc.status_code in (408, 409, 429) or exc.status_code >= 500
            retry_after = _retry_after(exc.response.headers)
            if exc.status_code == 429 and gate is not None:
                gate.rate_limited(retry_after)
            raise _Failure(self._map_status(exc), retryable, retry_after) from None
        except _TRANSPORT_ERRORS as exc:
            raise self._transport_failure(exc, "the request") from None
        return cm, response

    def _transport_failure(self, exc: BaseException, during: str) -> _Failure:
        """Map a connection failure to ModelConnectionError, retryable unless it may be billed.

        A read timeout means the provider may still be generating the reply: resending it is
        billed again, so it is retried only with `RetryPolicy.retry_read_timeouts`.
        """
        kind = _failure_kind(exc)
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if kind == "read-timeout":
            message = (
                f"{self.provider} ({self.base_url}) sent nothing for {self.timeout:g} s during "
                f"{during} ({detail}); raise `timeout` for long generations, or stream them"
            )
            return _Failure(ModelConnectionError(message), self.retry.retry_read_timeouts)
        message = (
            f"connection to {self.provider} ({self.base_url}) failed during {during} ({detail}); "
            "check the base URL and the network"
        )
        return _Failure(ModelConnectionError(message), True)

    async def _retrying(self, attempt: int, failure: _Failure) -> None:
        """Wait before retry number `attempt`, or raise the failure's error when done."""
        retries = self.retry.max_retries
        if not failure.retryable or attempt > retries:
            if failure.retryable and retries and log.isEnabledFor(logging.WARNING):
                log.warning(
                    "%s request failed %d times (%s); giving up: %s",
                    self.provider, attempt, self._kind_of(failure), self._detail(failure),
                )  # fmt: skip
            raise failure.error
        wait = self.retry.delay(attempt, failure.retry_after)
        if log.isEnabledFor(logging.WARNING):
            log.warning(
                "%s request failed (%s); retry %d of %d in %.2f s: %s",
                self.provider, self._kind_of(failure), attempt, retries, wait,
                self._detail(failure),
            )  # fmt: skip
        await asyncio.sleep(wait)

    @staticmethod
    def _kind_of(failure: _Failure) -> str:
        error = failure.error
        status = getattr(error, "status_code", None)
        if isinstance(error, ModelStreamError):
            return "broken stream" if status is None else f"broken stream, status {status}"
        if isinstance(error, ModelConnectionError):
            return "connection failure"
        return type(error).__name__ if status is None else f"status {status}"

    def _detail(self, failure: _Failure, limit: int = 300) -> str:
        """The error's message for a log line: provider text may echo the key, so redacted."""
        text = redact(str(failure.error), self._secret)
        return text if len(text) <= limit else text[:limit] + "…"

    @staticmethod
    def _meta(response: Any) -> ResponseMeta:
        headers = response.headers
        return ResponseMeta({k: headers[k] for k in _KEPT_HEADERS if k in headers})

    async def _read_body(self, response: Any) -> bytes:
        """Read a whole body, at most `max_response_bytes` of it."""
        parts: list[bytes] = []
        size = 0
        async for part in response.iter_bytes():
            size += len(part)
            if size > self.max_response_bytes:
                raise _Failure(self._too_large(response), False)
            parts.append(part)
        return b"".join(parts)

    def _too_large(self, response: Any) -> ModelAPIError:
        return ModelAPIError(
            f"{self.provider} sent a reply larger than {self.max_response_bytes:,} bytes; "
            "raise max_response_bytes if that is expected",
            status_code=response.status_code,
        )

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Send the request and return the whole `chat.completion` body.

        A connection that fails before the whole body arrived is retried like a failed request
        (nothing of the reply reached the caller), except after a read timeout (see `RetryPolicy`).
        """
        kwargs = self._kwargs(request, stream=False)
        tokens = self._estimate(kwargs)
        attempt = 0
        while True:
            try:
                cm, response = await self._send(kwargs, tokens)
                try:
                    raw = await self._read_body(response)
                except _TRANSPORT_ERRORS as exc:
                    raise self._transport_failure(exc, "the reply") from None
                finally:
                    await _close_quietly(cm)
                body = self._parse_body(raw, response)
                if self.gate is not None and (total := _total_tokens(body.get("usage"))):
                    self.gate.used(total)
                return ModelResponse(body, self._meta(response))
            except _Failure as failure:
                attempt += 1
                await self._retrying(attempt, failure)

    def _parse_body(self, raw: bytes, response: Any) -> dict[str, Any]:
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            kind = response.headers.get("content-type", "no content type")
            raise _Failure(
                ModelAPIError(
                    f"{self.provider} answered {response.status_code} with a body that is not "
                    f"JSON ({kind}): {_redacted_preview(raw, self._secret)}",
                    status_code=response.status_code,
                ),
                True,
            ) from None
        if not isinstance(body, dict):
            raise _Failure(
                ModelAPIError(
                    f"{self.provider} answered with JSON that is not an object",
                    status_code=response.status_code,
                ),
                False,
            )
        if "error" in body and not body.get("choices"):
            msg, code = _error_details(body)
            raise _Failure(
                ModelAPIError(
                    f"{self.provider} answered with an error: {msg}",
                    status_code=response.status_code,
                    provider_message=msg,
                    code=code,
                    body=body,
                ),
                False,
            )
        choices = body.get("choices")
        first = choices[0] if isinstance(choices, list) and choices else None
        if isinstance(first, dict) and not first.get("finish_reason"):
            # An incomplete reply sent as if whole: DashScope ends a non-streamed call at 300 s
            # and returns what it has. Not resent: that would take as long again.
            raise _Failure(
                ModelAPIError(
                    f"{self.provider} sent a reply without a finish_reason: it was cut short; "
                    "stream long generations instead",
                    status_code=response.status_code,
                    body=body,
                ),
                False,
            )
        return body

    async def stream(
        self, request: ModelRequest, meta: ResponseMeta
    ) -> AsyncIterator[dict[str, Any]]:
        """Send the request with streaming on and yield each chunk as a dict.

        Reads Server-Sent Events line by line so that non-standard lines survive: an `error:`
        line (llama.cpp) or a `data:` event holding an `error` object raises `ModelStreamError`.
        A stream must end with `data: [DONE]` or a `finish_reason`; one that ends without either
        was cut, and raises `ModelStreamError`. Chunks are held back until the first one with
        text (content or reasoning), so until then a failed or cut stream is retried like a
        failed request; after that it ends with `ModelStreamError` (the caller has shown part
        of the reply). A stream of tool calls alone is held whole, and so always retried.
        """
        kwargs = self._kwargs(request, stream=True)
        tokens = self._estimate(kwargs)
        attempt = 0
        while True:
            delivered = False
            try:
                cm, response = await self._send(kwargs, tokens)
                meta.headers.update(self._meta(response).headers)
                usage: Any = None  # the last one seen: some servers send a running count
                try:
                    held: list[dict[str, Any]] = []
                    async for chunk in self._chunks(response):
                        if self.gate is not None:
                            usage = chunk.get("usage") or usage
                        if not delivered and not _shown(chunk):
                            held.append(chunk)  # sent with the first text, or at the end
                            continue
                        for early in held:
                            yield early
                        held = []
                        delivered = True
                        yield chunk
                    for early in held:
                        yield early
                    return
                except _TRANSPORT_ERRORS as exc:
                    raise self._transport_failure(exc, "the stream") from None
                finally:
                    if self.gate is not None and (total := _total_tokens(usage)):
                        self.gate.used(total)
                    await _close_quietly(cm)
            except _Failure as failure:
                if delivered:
                    error = failure.error
                    if not isinstance(error, ModelStreamError):
                        error = ModelStreamError(f"{error} (after part of the reply was streamed)")
                    raise error from None
                attempt += 1
                await self._retrying(attempt, failure)

    async def _chunks(self, response: Any) -> AsyncIterator[dict[str, Any]]:
        """Yield the decoded events of one streamed response; raise `_Failure` if it was cut."""
        kind = response.headers.get("content-type", "")
        if "json" in kind:
            # Some servers ignore `stream: true` and send one JSON body: treat it as a
            # single chunk holding the whole message.
            body = self._parse_body(await self._read_body(response), response)
            for choice in body.get("choices") or ():
                choice.setdefault("delta", choice.pop("message", {}))
            yield body
            return
        data: list[str] = []
        stray: list[str] = []  # lines that are not part of an event stream, for the error
        events = 0
        finished = False
        size = 0
        async for line in _lines_then_blank(response):
            size += len(line) + 1
            if size > self.max_response_bytes:
                raise _Failure(self._too_large(response), False)
            if line.startswith("data:"):
                data.append(line[5:].lstrip())
                continue
            if line.startswith("error:"):
                _raise_stream_error(self.provider, line[6:].strip())
            if line == "" and data:
                payload, data = "\n".join(data), []
                if payload == "[DONE]":
                    return
                event = _decode_event(self.provider, payload)
                events += 1
                finished = finished or _finishes(event)
                yield event
            elif line and not line.startswith((":", "event:", "id:", "retry:")) and len(stray) < 5:
                stray.append(line)
        if finished:
            return  # some servers end without `data: [DONE]` after the finish_reason
        if events == 0:
            seen = "nothing"
            if stray:
                seen = _redacted_preview("\n".join(stray).encode(), self._secret)
            raise _Failure(
                ModelStreamError(
                    f"{self.provider} answered {response.status_code} "
                    f"({kind or 'no content type'}) without an event stream: {seen}"
                ),
                True,
            )
        raise _Failure(
            ModelStreamError(
                f"the stream from {self.provider} ended after {events} events without a "
                "finish_reason or [DONE]: the reply was cut"
            ),
            True,
        )

    async def close_connections(self) -> None:
        """Close the connection pool of the running event loop."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self.close_connections()


def _decode_event(provider: str, payload: str) -> dict[str, Any]:
    try:
        event = json.loads(payload)
    except (ValueError, RecursionError):
        raise ModelStreamError(
            f"{provider} sent a stream event that is not JSON: {payload[:200]!r}",
            provider_message=None,
            body=payload,
        ) from None
    if not isinstance(event, dict):
        raise ModelStreamError(f"{provider} sent a stream event that is not an object", body=event)
    if "error" in event and not event.get("choices"):
        msg, _ = _error_details(event)
        raise ModelStreamError(
            f"{provider} reported an error mid-stream: {msg}", provider_message=msg, body=event
        )
    return event


def _raise_stream_error(provider: str, text: str) -> None:
    try:
        body: Any = json.loads(text)
    except (ValueError, RecursionError):
        body = text
    msg, _ = _error_details(body)
    raise ModelStreamError(
        f"{provider} reported an error mid-stream: {msg}", provider_message=msg, body=body
    )
