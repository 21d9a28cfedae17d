"""The OpenAI-compatible backend: the only module that imports `openai`.

Requests go through the SDK (auth, HTTP, status errors) but bodies are read raw: the runtime has
to parse provider quirks tolerantly anyway (see `agent.streaming`), and skipping the SDK's typed
response objects removes most of its per-request cost. Retries are ours: exponential backoff with
jitter, honouring `Retry-After`, for 429, 5xx and connection failures.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
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
    ModelAPIError,
    ModelConnectionError,
    ModelStreamError,
    RateLimitError,
    ServerError,
)
from agent.models.base import ModelRequest, ModelResponse, ResponseMeta

__all__ = ["OpenAIChatModel", "RetryPolicy"]

_KEPT_HEADERS = ("x-account-balance", "x-request-id", "x-dashscope-request-id", "retry-after")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How failed requests are retried.

    Attributes:
        max_retries: Retries after the first attempt (0 turns retrying off).
        base_delay: Seconds before the first retry; doubles each time.
        max_delay: Upper bound of one wait, and of a `Retry-After` we are willing to honour.
        jitter: Fraction of each wait drawn at random, so many clients do not retry in step.
    """

    max_retries: int = 3
    base_delay: float = 0.5
    max_delay: float = 30.0
    jitter: float = 0.25

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
    ) -> None:
        self.model_name = model
        self.provider = provider
        self.base_url = base_url
        self.key_source = key_source
        self.retry = retry or RetryPolicy()
        self.stream_usage = stream_usage
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
            client = openai.AsyncOpenAI(**self._client_args)
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
                body["stream_options"] = {"include_usage": True}
        return kwargs

    def _map_status(self, exc: openai.APIStatusError) -> ModelAPIError:
        try:
            body = exc.response.json()
        except ValueError:
            body = exc.response.text
        msg, code = _error_details(body)
        status = exc.status_code
        request_id = exc.response.headers.get("x-request-id") or exc.response.headers.get(
            "x-dashscope-request-id"
        )
        detail = msg or exc.message
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

    async def _open(self, request: ModelRequest, stream: bool) -> Any:
        """Start a request, retrying what is worth retrying; return the open raw response."""
        kwargs = self._kwargs(request, stream)
        attempt = 0
        while True:
            try:
                cm = self._client.chat.completions.with_streaming_response.create(**kwargs)
                response = await cm.__aenter__()
                return cm, response
            except openai.APIStatusError as exc:
                error: Exception = self._map_status(exc)
                retryable = exc.status_code in (408, 409, 429) or exc.status_code >= 500
                retry_after = _retry_after(exc.response.headers)
            except (openai.APIConnectionError, openai.APITimeoutError) as exc:
                kind = "timed out" if isinstance(exc, openai.APITimeoutError) else "failed"
                error = ModelConnectionError(
                    f"connection to {self.provider} ({self.base_url}) {kind}: {exc}; "
                    "check the base URL and the network"
                )
                retryable, retry_after = True, None
            attempt += 1
            if not retryable or attempt > self.retry.max_retries:
                raise error
            await asyncio.sleep(self.retry.delay(attempt, retry_after))

    @staticmethod
    def _meta(response: Any) -> ResponseMeta:
        headers = response.headers
        return ResponseMeta({k: headers[k] for k in _KEPT_HEADERS if k in headers})

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Send the request and return the whole `chat.completion` body."""
        cm, response = await self._open(request, stream=False)
        try:
            raw = await response.read()
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            raise ModelConnectionError(
                f"reading the reply from {self.provider} failed: {exc}"
            ) from None
        finally:
            await cm.__aexit__(None, None, None)
        try:
            body = json.loads(raw)
        except ValueError:
            raise ModelAPIError(
                f"{self.provider} sent a reply that is not JSON: {raw[:200]!r}",
                status_code=response.status_code,
                body=raw[:2000],
            ) from None
        if isinstance(body, dict) and "error" in body and not body.get("choices"):
            msg, code = _error_details(body)
            raise ModelAPIError(
                f"{self.provider} answered with an error: {msg}",
                status_code=response.status_code,
                provider_message=msg,
                code=code,
                body=body,
            )
        return ModelResponse(body, self._meta(response))

    async def stream(
        self, request: ModelRequest, meta: ResponseMeta
    ) -> AsyncIterator[dict[str, Any]]:
        """Send the request with streaming on and yield each chunk as a dict.

        Reads Server-Sent Events line by line so that non-standard lines survive: an `error:`
        line (llama.cpp) or a `data:` event holding an `error` object raises `ModelStreamError`;
        a stream that ends without `data: [DONE]` simply ends.
        """
        cm, response = await self._open(request, stream=True)
        meta.headers.update(self._meta(response).headers)
        try:
            if "json" in response.headers.get("content-type", ""):
                # Some servers ignore `stream: true` and send one JSON body: treat it as a
                # single chunk holding the whole message.
                body = _decode_event(self.provider, (await response.read()).decode())
                for choice in body.get("choices") or ():
                    choice.setdefault("delta", choice.pop("message", {}))
                yield body
                return
            data: list[str] = []
            async for line in response.iter_lines():
                if line.startswith("data:"):
                    data.append(line[5:].lstrip())
                    continue
                if line.startswith("error:"):
                    _raise_stream_error(self.provider, line[6:].strip())
                if line == "" and data:
                    payload = "\n".join(data)
                    data = []
                    if payload == "[DONE]":
                        return
                    yield _decode_event(self.provider, payload)
            if data:
                payload = "\n".join(data)
                if payload != "[DONE]":
                    yield _decode_event(self.provider, payload)
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            raise ModelConnectionError(
                f"the stream from {self.provider} broke off: {exc}"
            ) from None
        finally:
            await cm.__aexit__(None, None, None)

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
    except ValueError:
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
    except ValueError:
        body = text
    msg, _ = _error_details(body)
    raise ModelStreamError(
        f"{provider} reported an error mid-stream: {msg}", provider_message=msg, body=body
    )
