"""`qwenloop serve`: an agent behind an OpenAI-compatible HTTP API, with a chat page at `/`.

`POST /v1/chat/completions` runs the agent on the conversation a client sends (its last message is
the input, the rest history) and its tools run here, on the server; `GET /v1/models` lists it.
`make_app` builds the ASGI app (mount it anywhere), `serve` runs it under uvicorn
(`qwenloop[serve]`).

While streaming, tool activity rides along in chunks with an empty delta and an extra
`qwenloop_event` field (`tool_call_started`, `tool_call_finished`, `loop_guard`): OpenAI clients
ignore the field, the page shows it. Errors take OpenAI's shape, `{"error": {message, type, param,
code}}`: 400 bad request, 401 missing or wrong key, 403 a foreign Host or Origin, 413 too large,
415 not JSON, 429 over the concurrency limit, 500 a failed run (`code` names the typed error).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import re
import socket
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar

from agent.agent import Agent
from agent.errors import AgentError, ConfigError, PromptRenderError, RateLimitError, UserError
from agent.events import (
    AgentEvent,
    LoopGuardEvent,
    ReasoningDeltaEvent,
    RunEndEvent,
    TextDeltaEvent,
    ToolCallFinishedEvent,
    ToolCallStartedEvent,
)
from agent.messages import RunResult, ToolCallRecord, Usage
from agent.secrets import redact, scrub_surrogates
from agent.settings import ModelSettings, settings_from

__all__ = ["KEY_VARIABLE", "make_app", "serve"]

KEY_VARIABLE = "QWENLOOP_SERVE_API_KEY"
"""The environment variable `serve` reads the clients' bearer key from."""

Scope = MutableMapping[str, Any]
ASGIMessage = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[ASGIMessage]]
Send = Callable[[ASGIMessage], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

T = TypeVar("T")

_log = logging.getLogger("agent.serve")
_ROLES = ("system", "developer", "user", "assistant")
_SETTINGS = ("temperature", "top_p", "seed", "max_tokens", "presence_penalty", "frequency_penalty",
             "stop")  # fmt: skip
_SHOWN_CHARS = 2000  # a tool result shown in a stream event is cut to this
_INSTALL_HINT = "qwenloop serve needs uvicorn: pip install 'qwenloop[serve]'"
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # a proxy in front must not hold the stream back
]


class _HTTPError(Exception):
    """A response in OpenAI's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Iterable[tuple[bytes, bytes]] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
        self.headers = list(headers)


class _Disconnected(Exception):
    """The client went away."""


@dataclass(frozen=True)
class _ChatRequest:
    input: list[dict[str, Any]]
    history: list[dict[str, Any]]
    settings: ModelSettings | None
    stream: bool
    include_usage: bool


def make_app(
    agent: Agent,
    *,
    api_key: str | None = None,
    max_body_bytes: int = 1_000_000,
    max_concurrency: int = 16,
    model_name: str | None = None,
) -> ASGIApp:
    """Build the ASGI app serving `agent` over the OpenAI chat-completions API and a chat page.

    Without `api_key`, the app answers only requests addressed to a loopback name (`Host:
    127.0.0.1`, `localhost`, `[::1]`), so a web page cannot reach it by DNS rebinding; with one,
    every API request must carry `Authorization: Bearer <api_key>`. The page at `/` holds no
    secret and is served either way; it asks for the key when the API answers 401. Requests from
    another origin (a browser's `Origin` header naming another site) are refused.

    Args:
        agent: The agent to run; one agent serves every request.
        api_key: The bearer key clients must send (compared in constant time, never logged).
        max_body_bytes: A larger request body is refused with 413.
        max_concurrency: Runs in flight at once; one more is refused with 429.
        model_name: The name `/v1/models` lists and responses carry (default "qwenloop"). The
            `model` a client sends is accepted and not checked: there is one agent.

    Raises:
        UserError: A limit below 1 or an empty key.
    """
    if max_body_bytes < 1 or max_concurrency < 1:
        raise UserError("max_body_bytes and max_concurrency must be at least 1")
    if api_key is not None and not api_key.strip():
        raise UserError("the serve API key is empty")
    return _App(agent, api_key, max_body_bytes, max_concurrency, model_name or "qwenloop")


class _App:
    def __init__(
        self, agent: Agent, api_key: str | None, max_body: int, max_runs: int, name: str
    ) -> None:
        self.agent = agent
        self.api_key = api_key
        self.max_body = max_body
        self.max_runs = max_runs
        self.name = name
        self.running = 0
        self.created = int(time.time())
        upstream = agent.endpoint.api_key if agent.endpoint is not None else None
        self.secrets = [s for s in (api_key, upstream) if s]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # no websockets here: the server closes the connection
        try:
            await self._route(scope, receive, send)
        except _HTTPError as exc:
            await _send_json(send, exc.status, exc.body, exc.headers)
        except _Disconnected:
            pass

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):  # mounted under a prefix
            path = path[len(root) :] or "/"
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        routes = {"/": "GET", "/v1/models": "GET", "/v1/chat/completions": "POST"}
        if path not in routes:
            raise _HTTPError(404, f"no route {method} {path}", code="not_found")
        if method != routes[path]:
            raise _HTTPError(405, f"{path} takes {routes[path]}, not {method}", code="bad_method")
        self._check_host(headers)
        if path == "/":
            await _send_page(send)
            return
        self._check_key(headers)
        if path == "/v1/models":
            await _send_json(send, 200, self._models())
            return
        _check_origin(headers)
        media = headers.get("content-type", "").partition(";")[0].strip().lower()
        if media != "application/json":
            raise _HTTPError(415, "send the body as JSON (Content-Type: application/json)")
        request = _parse_request(await _read_body(receive, headers, self.max_body))
        if self.running >= self.max_runs:
            raise _HTTPError(
                429,
                f"{self.max_runs} runs are in flight, the most this server takes; retry shortly",
                kind="rate_limit_error",
                code="concurrency_limit_exceeded",
                headers=[(b"retry-after", b"1")],
            )
        self.running += 1
        try:
            if request.stream:
                await self._stream(request, receive, send)
            else:
                await self._complete(request, receive, send)
        finally:
            self.running -= 1

    def _check_host(self, headers: dict[str, str]) -> None:
        if self.api_key is not None:
            return
        host = _hostname(headers.get("host", ""))
        if not _is_loopback(host):
            raise _HTTPError(
                403,
                f"this server answers only requests to a loopback address, not {host!r}; "
                "serve it with an API key to open it beyond loopback",
                code="forbidden_host",
            )

    def _check_key(self, headers: dict[str, str]) -> None:
        if self.api_key is None:
            return
        scheme, _, token = headers.get("authorization", "").partition(" ")
        challenge = [(b"www-authenticate", b"Bearer")]
        if scheme.lower() != "bearer" or not token.strip():
            raise _HTTPError(
                401,
                "this server needs its API key: send Authorization: Bearer <key>",
                code="missing_api_key",
                headers=challenge,
            )
        # Header bytes arrive decoded as latin-1; encoding back gives the bytes the client sent.
        if not hmac.compare_digest(token.strip().encode("latin-1"), self.api_key.encode()):
            raise _HTTPError(401, "wrong API key", code="invalid_api_key", headers=challenge)

    def _models(self) -> dict[str, Any]:
        model = {
            "id": self.name,
            "object": "model",
            "created": self.created,
            "owned_by": "qwenloop",
        }
        return {"object": "list", "data": [model]}

    async def _complete(self, request: _ChatRequest, receive: Receive, send: Send) -> None:
        run = self.agent.run(request.input, history=request.history, settings=request.settings)
        try:
            result = await _unless_disconnected(receive, run)
            _check_finished(result)
        except _Disconnected:
            raise
        except Exception as exc:
            raise self._failure(exc) from None
        reply = _Reply(self.name)
        await _send_json(send, 200, reply.completion(result))

    async def _stream(self, request: _ChatRequest, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        await _unless_disconnected(receive, self._produce(request, send))

    async def _produce(self, request: _ChatRequest, send: Send) -> None:
        reply = _Reply(self.name)

        async def emit_raw(data: bytes) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": True})

        async def emit(payload: Any) -> None:
            await emit_raw(b"data: " + _dumps(payload) + b"\n\n")

        await emit(reply.chunk({"role": "assistant", "content": ""}))
        result: RunResult | None = None
        events = self.agent.stream(
            request.input, history=request.history, settings=request.settings
        )
        try:
            async for event in events:
                if isinstance(event, RunEndEvent):
                    result = event.result
                elif (payload := _chunk_for(event, reply)) is not None:
                    await emit(payload)
            assert result is not None
            _check_finished(result)
        except Exception as exc:  # the status is sent: the error goes in the stream, as OpenAI's
            await emit(self._failure(exc).body)
        else:
            await emit(reply.chunk({}, "length" if result.truncated else "stop"))
            if request.include_usage:
                await emit(reply.usage_chunk(result.usage))
            await emit_raw(b"data: [DONE]\n\n")
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _failure(self, exc: BaseException) -> _HTTPError:
        """Describe a failed run to the client: the error's type and message, no key, no trace."""
        if isinstance(exc, _HTTPError):
            return exc
        if not isinstance(exc, AgentError):
            _log.error("qwenloop serve: a run failed unexpectedly", exc_info=exc)
            return _HTTPError(
                500, "the run failed (the server's log has the details)", kind="server_error",
                code="InternalError",
            )  # fmt: skip
        message = str(exc)
        for secret in self.secrets:
            message = redact(message, secret)
        name = type(exc).__name__
        _log.warning("qwenloop serve: a run failed: %s: %s", name, message)
        if isinstance(exc, ConfigError | PromptRenderError):  # the server's fault, not the client's
            return _HTTPError(500, message, kind="server_error", code=name)
        if isinstance(exc, UserError):
            return _HTTPError(400, message, code=name)
        if isinstance(exc, RateLimitError):
            return _HTTPError(429, message, kind="rate_limit_error", code=name)
        return _HTTPError(500, message, kind="server_error", code=name)


def _check_finished(result: RunResult) -> None:
    if result.interruptions:
        names = ", ".join(sorted({call.name for call in result.interruptions}))
        raise _HTTPError(
            500,
            f"{names} needs a person's approval, which qwenloop serve cannot ask for: "
            "serve the agent without approval-gated tools",
            kind="server_error",
            code="ApprovalRequired",
        )


class _Reply:
    """The ids and shapes of one response: a `chat.completion` or its `chat.completion.chunk`s."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> Any:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return {**self._head("chat.completion.chunk"), "choices": [choice], **extra}

    def usage_chunk(self, usage: Usage) -> Any:
        return {**self._head("chat.completion.chunk"), "choices": [], "usage": _usage(usage)}

    def completion(self, result: RunResult) -> Any:
        message: dict[str, Any] = {"role": "assistant", "content": result.output}
        if result.reasoning:
            message["reasoning_content"] = result.reasoning
        finish = "length" if result.truncated else "stop"
        return {
            **self._head("chat.completion"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": _usage(result.usage),
            "qwenloop": {
                "turns": result.turns,
                "tool_calls": [_record(r) for r in result.tool_calls],
            },
        }


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_prompt_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def _short(text: str | None) -> str | None:
    if text is None or len(text) <= _SHOWN_CHARS:
        return text
    return text[: _SHOWN_CHARS - 1] + "…"


def _record(record: ToolCallRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "arguments": record.arguments,
        "result": _short(record.result),
        "error": _short(record.error),
        "seconds": round(record.seconds, 3),
    }


def _chunk_for(event: AgentEvent, reply: _Reply) -> Any:
    """The chunk that carries an event to the client, or None for events it does not see."""
    if isinstance(event, TextDeltaEvent):
        return reply.chunk({"content": event.delta})
    if isinstance(event, ReasoningDeltaEvent):
        return reply.chunk({"reasoning_content": event.delta})
    side: dict[str, Any]
    if isinstance(event, ToolCallStartedEvent):
        side = {"type": event.type, "id": event.id, "name": event.name}
        side["arguments"] = event.arguments
    elif isinstance(event, ToolCallFinishedEvent):
        side = {"type": event.type, **_record(event.record)}
    elif isinstance(event, LoopGuardEvent):
        side = {"type": event.type, "name": event.name, "reason": event.reason}
    else:
        return None
    return reply.chunk({}, qwenloop_event=side)


def _parse_request(body: bytes) -> _ChatRequest:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise _HTTPError(400, "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise _HTTPError(400, "the body must be a JSON object")
    for key in ("tools", "functions"):
        if data.get(key):
            raise _HTTPError(
                400,
                f"{key} are not supported: this endpoint runs the agent's own tools on the "
                "server; send messages only",
                param=key,
                code="tools_not_supported",
            )
    if data.get("tool_choice") not in (None, "none", "auto"):
        raise _HTTPError(400, "tool_choice is not supported", param="tool_choice")
    if data.get("n") not in (None, 1):
        raise _HTTPError(400, "n: this server returns one choice", param="n")
    stream = data.get("stream") or False
    options = data.get("stream_options") or {}
    if not isinstance(stream, bool) or not isinstance(options, dict):
        raise _HTTPError(400, "stream must be true or false, stream_options an object")
    messages = _messages(data.get("messages"))
    return _ChatRequest(
        input=messages[-1:],
        history=messages[:-1],
        settings=_settings(data),
        stream=stream,
        include_usage=options.get("include_usage") is True,
    )


def _messages(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise _HTTPError(400, "messages: give a non-empty list of messages", param="messages")
    messages = [_message(i, m) for i, m in enumerate(value)]
    if messages[-1]["role"] != "user":
        raise _HTTPError(
            400,
            "the last message must be the user's: it is the input the agent answers",
            param="messages",
        )
    return messages


def _message(index: int, message: Any) -> dict[str, Any]:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise _HTTPError(400, f"{where} must be an object", param=where)
    role = message.get("role")
    if role in ("tool", "function") or message.get("tool_calls") or message.get("function_call"):
        raise _HTTPError(
            400,
            f"{where}: tool calls and tool messages are not supported: the agent runs its own "
            "tools on the server",
            param=where,
            code="tools_not_supported",
        )
    if role not in _ROLES:
        raise _HTTPError(400, f"{where}.role must be one of {', '.join(_ROLES)}", param=where)
    content = message.get("content")
    if content is None and role == "assistant":
        content = ""
    parts_ok = isinstance(content, list) and all(
        isinstance(p, dict) and isinstance(p.get("type"), str) for p in content
    )
    if not isinstance(content, str) and not parts_ok:
        raise _HTTPError(
            400, f"{where}.content must be a string or a list of typed parts", param=where
        )
    # Only role and content go on: a client's extra fields must not reach the provider.
    out = {"role": "system" if role == "developer" else role, "content": content}
    result: dict[str, Any] = scrub_surrogates(out)
    return result


def _settings(data: dict[str, Any]) -> ModelSettings | None:
    fields = {k: data[k] for k in _SETTINGS if data.get(k) is not None}
    if data.get("max_completion_tokens") is not None:
        fields.setdefault("max_tokens", data["max_completion_tokens"])
    if not fields:
        return None
    try:
        return settings_from(fields)
    except (UserError, ValueError, TypeError) as exc:
        raise _HTTPError(400, str(exc)) from None


async def _read_body(receive: Receive, headers: dict[str, str], limit: int) -> bytes:
    too_large = _HTTPError(413, f"the request body is over {limit:,} bytes", code="too_large")
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise _HTTPError(400, "Content-Length is not a number")
        if int(declared) > limit:
            raise too_large
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:  # a chunked body has no Content-Length to check first
            raise too_large
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _unless_disconnected(receive: Receive, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (and raising _Disconnected) if the client goes away first."""

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when the server cancels us (shutdown)
        watcher.cancel()
        if watcher.done() and not watcher.cancelled():
            watcher.exception()  # retrieved: a failed receive() counts as a disconnect
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
    if task.cancelled():
        raise _Disconnected
    return task.result()


def _check_origin(headers: dict[str, str]) -> None:
    origin = headers.get("origin")
    if origin is None:
        return
    _, _, netloc = origin.partition("://")
    if netloc.lower() != headers.get("host", "").lower():
        raise _HTTPError(403, "requests from another origin are refused", code="forbidden_origin")


def _hostname(host: str) -> str:
    """The name in a Host header, without the port or IPv6 brackets."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _is_loopback(host: str) -> bool:
    name = host.strip("[]").lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.partition("%")[0]).is_loopback
    except ValueError:
        return False


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _dumps(obj: Any) -> bytes:
    # "replace": a lone surrogate in a model's text must not break the response.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")


async def _send_json(
    send: Send, status: int, body: Any, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    data = _dumps(body)
    head = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
    await send({"type": "http.response.start", "status": status, "headers": [*head, *headers]})
    await send({"type": "http.response.body", "body": data})


def _page() -> tuple[bytes, bytes]:
    """The chat page, and a Content-Security-Policy allowing its inline script and style only."""
    text = resources.files("agent").joinpath("serve_page.html").read_text("utf-8")

    def digest(tag: str) -> str:
        found = re.search(rf"<{tag}>(.*?)</{tag}>", text, re.DOTALL)
        assert found is not None, f"serve_page.html has no <{tag}>"
        sha = base64.b64encode(hashlib.sha256(found.group(1).encode()).digest()).decode()
        return f"'sha256-{sha}'"

    policy = (
        f"default-src 'none'; script-src {digest('script')}; style-src {digest('style')}; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    return text.encode(), policy.encode()


_PAGE: tuple[bytes, bytes] | None = None


async def _send_page(send: Send) -> None:
    global _PAGE
    if _PAGE is None:
        _PAGE = _page()
    page, policy = _PAGE
    headers = [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", b"%d" % len(page)),
        (b"content-security-policy", policy),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"cache-control", b"no-cache"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": page})


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host.strip("[]"), port), family=family, backlog=2048)
    except OSError as exc:
        raise UserError(f"cannot listen on {host} port {port}: {exc.strerror or exc}") from None


def serve(
    agent: Agent,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    *,
    max_body_bytes: int = 1_000_000,
    max_concurrency: int = 16,
    model_name: str | None = None,
    log_level: str = "info",
) -> None:
    """Serve `agent` over the OpenAI chat-completions API (and the chat page) until Ctrl-C.

    Closes the agent when the server stops.

    Args:
        agent: The agent to serve.
        host: The address to listen on; anything beyond loopback needs an API key.
        port: The TCP port (0 picks a free one).
        api_key: The bearer key clients must send; default `QWENLOOP_SERVE_API_KEY`.
        max_body_bytes: A larger request body is refused with 413.
        max_concurrency: Runs in flight at once; one more is refused with 429.
        model_name: The name `/v1/models` lists (default "qwenloop").
        log_level: uvicorn's log level ("info" logs one line per request, never a key).

    Raises:
        UserError: No API key for a host beyond loopback, a bad limit, or the port is taken.
        ConfigError: uvicorn is not installed.
    """
    key = api_key if api_key is not None else os.environ.get(KEY_VARIABLE) or None
    if key is None and not _is_loopback(host):
        raise UserError(
            f"serving on {host}, beyond loopback, needs an API key for clients: set "
            f"{KEY_VARIABLE} (or pass --serve-api-key), or serve on 127.0.0.1"
        )
    app = make_app(
        agent,
        api_key=key,
        max_body_bytes=max_body_bytes,
        max_concurrency=max_concurrency,
        model_name=model_name,
    )
    try:
        import uvicorn
    except ImportError:
        raise ConfigError(_INSTALL_HINT) from None
    sock = _listen(host, port)
    config = uvicorn.Config(
        app, log_level=log_level, ws="none", server_header=False, timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    shown = f"[{host}]" if ":" in host else host
    where = f"http://{shown}:{sock.getsockname()[1]}/"
    needs = "; clients send the API key as a bearer token" if key else ""
    print(f"qwenloop: serving at {where} (OpenAI API at {where}v1{needs})", file=sys.stderr)

    async def main() -> None:
        try:
            await server.serve(sockets=[sock])
        finally:
            await agent.aclose()

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a server stops
        asyncio.run(main())
