"""A scripted OpenAI-compatible HTTP server on 127.0.0.1, for testing agents without a network.

Queue the replies the "model" should give, point any OpenAI client at `server.url`, run your code,
then check what it sent::

    from agent.testing import ScriptedServer, text_reply, tool_call_reply

    def test_weather_agent() -> None:
        with ScriptedServer() as server:
            server.script(
                tool_call_reply("get_weather", {"city": "Paris"}),  # turn 1: the model calls a tool
                text_reply("It is sunny in Paris."),  # turn 2: the model answers
            )
            answer = my_agent(base_url=server.url, api_key="test").ask("Weather in Paris?")
            assert answer == "It is sunny in Paris."
            assert server.requests[1].json["messages"][-1]["role"] == "tool"
            server.assert_done()  # fails if a scripted reply was never asked for

Every POST pops the next scripted reply (FIFO); `respond_with(fn)` answers once the queue is
empty, and a request finding neither gets a 500 that `assert_done()` reports. `GET /v1/models`
lists a few models. Builders cover plain, reasoning and tool-call replies, SSE streams in
DashScope's exact shape (`stream_text_reply`, `stream_tool_calls_reply`, or raw `sse_reply` for
malformed streams), API errors (`error_reply`) and dropped connections (`disconnect_reply`); all
take `headers=` (extra response headers) and `delay=` (seconds before answering), streams also
`chunk_delay=`. Give clients `max_retries=0` when testing errors, or the SDK retries 429s and 5xx.

The server runs its own event loop in a daemon thread, so it serves async tests and sync code that
calls `asyncio.run` alike; replies are encoded once when built, so it can sit behind benchmarks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import json
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.client import responses
from typing import Any, Self

__all__ = [
    "RecordedRequest", "Reply", "ScriptedServer", "cut_reply", "disconnect_reply", "error_reply",
    "html_reply", "json_reply", "sse_reply", "stream_text_reply", "stream_tool_calls_reply",
    "text_reply", "tool_call_reply", "tool_calls_reply",
]  # fmt: skip

_call_ids = itertools.count(1)
_MAX_HEAD = 1 << 20
# The string fields worth showing when a scripted reply went unused (not ids or timestamps).
_SAID = re.compile(r'"(?:content|reasoning_content|name|arguments|message)":("(?:[^"\\]|\\.)*")')


@dataclass(frozen=True, eq=False)
class Reply:
    """One scripted HTTP response; build it with the `*_reply` helpers or directly.

    Attributes:
        status: HTTP status code.
        headers: Extra response headers (`content-type` defaults to `application/json`).
        body: The response body, for a non-streamed reply.
        delay: Seconds to wait before answering.
        chunks: For a streamed reply, the pieces sent one by one with chunked transfer encoding.
        chunk_delay: Seconds to wait between two chunks.
        disconnect: Close the connection instead of answering.
        cut_at: Send only this many bytes of the response (head included), then close: a
            truncated body or a chunked stream cut short. Build it with `cut_reply`.
        stall: Seconds to wait, silent, before closing a cut reply (a stalled connection).
    """

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0
    chunks: tuple[bytes, ...] | None = None
    chunk_delay: float = 0.0
    disconnect: bool = False
    cut_at: int | None = None
    stall: float = 0.0
    # Encoded once here so serving a reply (possibly thousands of times) is a single write.
    _head: bytes = field(init=False, repr=False)
    _framed: tuple[bytes, ...] = field(init=False, repr=False)
    _wire: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        names = {k.lower() for k in self.headers}
        lines = [f"HTTP/1.1 {self.status} {responses.get(self.status, 'Unknown')}"]
        if "content-type" not in names:
            lines.append("content-type: application/json")
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        framed: tuple[bytes, ...] = ()
        if self.chunks is None:
            lines.append(f"content-length: {len(self.body)}")
        else:
            lines.append("transfer-encoding: chunked")
            framed = tuple(b"%x\r\n%s\r\n" % (len(c), c) for c in self.chunks if c)
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        wire = head + (self.body if self.chunks is None else b"".join(framed) + b"0\r\n\r\n")
        object.__setattr__(self, "_head", head)
        object.__setattr__(self, "_framed", framed)
        object.__setattr__(self, "_wire", wire)

    def describe(self) -> str:
        """Return a one-line summary for failure messages: the texts the reply carries."""
        if self.disconnect:
            return "disconnect_reply()"
        kind = "body" if self.chunks is None else "stream"
        text = (self.body + b"".join(self.chunks or ())).decode("utf-8", "replace")
        said = _SAID.findall(text)
        return f"{self.status} {kind} {' '.join(said) if said else text}"[:240]


@dataclass
class RecordedRequest:
    """One request the server received.

    Attributes:
        method: HTTP method, e.g. "POST".
        path: Request target as sent, e.g. "/v1/chat/completions".
        headers: Request headers with lower-case names.
        body: The raw request body.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @functools.cached_property
    def json(self) -> Any:
        """The body parsed as JSON, or None when it is empty or not JSON (parsed on first use)."""
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


Headers = dict[str, str] | None
Arguments = Mapping[str, Any] | str


def json_reply(
    body: Any, status: int = 200, *, headers: Headers = None, delay: float = 0.0
) -> Reply:
    """Build a reply whose body is `body` encoded as JSON."""
    return Reply(status=status, headers=headers or {}, body=_dumps(body), delay=delay)


def _usage(usage: tuple[int, int]) -> dict[str, int]:
    return {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}


def _completion(
    message: dict[str, Any], finish: str, model: str, usage: tuple[int, int], **kw: Any
) -> Reply:
    choice = {"index": 0, "message": message, "finish_reason": finish}
    body = {"id": f"chatcmpl-{uuid.uuid4()}", "object": "chat.completion",
            "created": int(time.time()), "model": model, "choices": [choice],
            "usage": _usage(usage)}  # fmt: skip
    return json_reply(body, **kw)


def text_reply(
    text: str, *, model: str = "qwen-plus", reasoning: str | None = None,
    finish_reason: str = "stop", usage: tuple[int, int] = (20, 8), headers: Headers = None,
    delay: float = 0.0,
) -> Reply:  # fmt: skip
    """Build a `chat.completion` answering `text` (plus `reasoning_content` when `reasoning`)."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    return _completion(message, finish_reason, model, usage, headers=headers, delay=delay)


def _calls(calls: Iterable[tuple[str, Arguments, str | None]]) -> list[Any]:
    return [
        {"id": cid or f"call_{next(_call_ids)}", "type": "function", "function": {"name": name,
         "arguments": args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)}}
        for name, args, cid in calls
    ]  # fmt: skip


def tool_call_reply(
    name: str, arguments: Arguments, *, id: str | None = None, content: str | None = None,
    model: str = "qwen-plus", usage: tuple[int, int] = (20, 8), headers: Headers = None,
    delay: float = 0.0,
) -> Reply:  # fmt: skip
    """Build a completion calling one tool; a str `arguments` is sent verbatim (e.g. bad JSON)."""
    calls = _calls([(name, arguments, id)])
    message = {"role": "assistant", "content": content, "tool_calls": calls}
    return _completion(message, "tool_calls", model, usage, headers=headers, delay=delay)


def tool_calls_reply(
    calls: list[tuple[str, Arguments]], *, content: str | None = None, model: str = "qwen-plus",
    usage: tuple[int, int] = (20, 8), headers: Headers = None, delay: float = 0.0,
) -> Reply:  # fmt: skip
    """Build a completion calling several tools at once, from (name, arguments) pairs."""
    tool_calls = _calls((name, args, None) for name, args in calls)
    message = {"role": "assistant", "content": content, "tool_calls": tool_calls}
    return _completion(message, "tool_calls", model, usage, headers=headers, delay=delay)


def error_reply(
    status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
    headers: Headers = None, delay: float = 0.0,
) -> Reply:  # fmt: skip
    """Build an API error in the reference's shape: `{"error": {message, type, param, code}}`."""
    body = {"error": {"message": message, "type": type, "param": None, "code": code}}
    return json_reply(body, status, headers=headers, delay=delay)


def sse_reply(
    events: Iterable[Mapping[str, Any] | str], *, done: bool = True, chunk_delay: float = 0.0,
    status: int = 200, headers: Headers = None, delay: float = 0.0,
) -> Reply:  # fmt: skip
    """Build a raw SSE stream: a dict is sent as a `data: <json>` event, a str verbatim.

    A str lets tests send malformed lines, `error: {...}` lines or `: comments`. With `done`, the
    stream ends with `data: [DONE]`.
    """
    chunks = [e.encode() if isinstance(e, str) else b"data: " + _dumps(e) + b"\n\n" for e in events]
    if done:
        chunks.append(b"data: [DONE]\n\n")
    all_headers = {"content-type": "text/event-stream", "cache-control": "no-cache"}
    all_headers.update(headers or {})
    return Reply(status, all_headers, delay=delay, chunks=tuple(chunks), chunk_delay=chunk_delay)


def _chunker(model: str) -> Callable[..., dict[str, Any]]:
    cid, created = f"chatcmpl-{uuid.uuid4()}", int(time.time())

    def chunk(delta: Any = None, finish: str | None = None, usage: Any = None) -> dict[str, Any]:
        out = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
        if usage is not None:
            return {**out, "choices": [], "usage": _usage(usage)}
        return {**out, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    return chunk


def _split(text: str) -> list[str]:
    return re.findall(r"\s*\S+\s*|\s+", text)


def stream_text_reply(
    text: str, *, pieces: list[str] | None = None, model: str = "qwen-plus",
    usage: tuple[int, int] = (20, 7), reasoning: str | None = None, finish_reason: str = "stop",
    chunk_delay: float = 0.0, headers: Headers = None, delay: float = 0.0,
) -> Reply:  # fmt: skip
    """Build a streamed answer in the reference's streaming shape.

    Chunks: `{"role": "assistant", "content": ""}`, the `reasoning` as `reasoning_content` deltas
    when given, `text` split into `pieces` (by words by default), an empty-content chunk with
    `finish_reason`, a usage-only chunk with `"choices": []`, then `data: [DONE]`.

    Raises:
        ValueError: If `pieces` do not join to `text`.
    """
    if pieces is not None and "".join(pieces) != text:
        raise ValueError("stream_text_reply: pieces must join to text")
    chunk = _chunker(model)
    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"reasoning_content": p}) for p in _split(reasoning or "")]
    events += [chunk({"content": p}) for p in (_split(text) if pieces is None else pieces)]
    events += [chunk({"content": ""}, finish_reason), chunk(usage=usage)]
    return sse_reply(events, chunk_delay=chunk_delay, headers=headers, delay=delay)


def stream_tool_calls_reply(
    calls: list[tuple[str, Arguments]], *, content: str | None = None, model: str = "qwen-plus",
    usage: tuple[int, int] = (20, 7), chunk_delay: float = 0.0, headers: Headers = None,
    delay: float = 0.0,
) -> Reply:  # fmt: skip
    """Build a streamed tool-call turn: per call, id and name first, arguments over two chunks."""
    chunk = _chunker(model)
    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": p}) for p in _split(content or "")]
    for index, call in enumerate(_calls((name, args, None) for name, args in calls)):
        function = call["function"]
        args, half = function["arguments"], len(function["arguments"]) // 2
        first = {"index": index, "id": call["id"], "type": "function",
                 "function": {"name": function["name"], "arguments": args[:half]}}  # fmt: skip
        events.append(chunk({"tool_calls": [first]}))
        if args[half:]:
            rest = {"index": index, "function": {"arguments": args[half:]}}
            events.append(chunk({"tool_calls": [rest]}))
    events += [chunk({"content": ""}, "tool_calls"), chunk(usage=usage)]
    return sse_reply(events, chunk_delay=chunk_delay, headers=headers, delay=delay)


def disconnect_reply(*, delay: float = 0.0) -> Reply:
    """Build a reply that closes the connection without answering (a connection error)."""
    return Reply(disconnect=True, delay=delay)


def cut_reply(
    reply: Reply, *, after_events: int | None = None, after_bytes: int | None = None,
    stall: float = 0.0,
) -> Reply:  # fmt: skip
    """Build `reply` cut short: the connection closes (after `stall` seconds) mid-response.

    By default the cut falls in the middle of the body, so a body is shorter than its
    Content-Length, or a chunked stream ends inside a chunk. `after_events=N` cuts a stream
    cleanly after its first N chunks; `after_bytes=N` after N bytes of the body. With a long
    `stall`, the connection hangs there instead (a stream that stalls after its first event).
    """
    head = len(reply._head)
    if after_events is not None:
        if reply.chunks is None:
            raise ValueError("cut_reply: after_events needs a streamed reply")
        at = head + sum(len(framed) for framed in reply._framed[:after_events])
    elif after_bytes is not None:
        at = head + after_bytes
    else:
        at = head + (len(reply._wire) - head) // 2
    return dataclasses.replace(reply, cut_at=at, stall=stall)


def html_reply(status: int = 200, *, text: str = "Service temporarily unavailable") -> Reply:
    """Build an HTML page (a proxy's or gateway's error page), 200 by default."""
    page = f"<!DOCTYPE html><html><head><title>{text}</title></head><h1>{text}</h1></html>"
    return Reply(status, {"content-type": "text/html; charset=utf-8"}, body=page.encode())


_MODELS = json_reply({"object": "list", "data": [
    {"id": m, "object": "model", "created": 1734513252, "owned_by": "system"}
    for m in ("qwen-plus", "qwen-max", "qwen-turbo")
]})  # fmt: skip


class _Connection(asyncio.Protocol):
    """One client connection: parses requests one at a time and writes their replies."""

    def __init__(self, server: ScriptedServer) -> None:
        self.server = server
        self.buf = bytearray()
        self.task: asyncio.Task[None] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server._conns.add(self)
        self.server._opened += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._conns.discard(self)
        if self.task is not None:
            self.task.cancel()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.task is None:
            self.process()

    def process(self) -> None:
        transport = self.transport
        assert transport is not None
        # One request at a time: a slow reply keeps later (pipelined) bytes in the buffer.
        while self.task is None and not transport.is_closing():
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > _MAX_HEAD:
                    transport.close()
                return
            lines = self.buf[:end].decode("latin-1").split("\r\n")
            method, target, *_ = [*lines[0].split(" ", 2), "", ""]
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "transfer-encoding" in headers:  # httpx sends JSON with a Content-Length
                transport.write(error_reply(501, "chunked request bodies unsupported")._wire)
                transport.close()
                return
            size = int(headers.get("content-length", "0"))
            if len(self.buf) < end + 4 + size:
                return
            body = bytes(self.buf[end + 4 : end + 4 + size])
            del self.buf[: end + 4 + size]
            close = headers.get("connection", "").lower() == "close"
            reply = self.server._reply_for(RecordedRequest(method, target, headers, body))
            if reply.delay or reply.chunk_delay or reply.cut_at is not None:
                self.task = asyncio.get_running_loop().create_task(self.send_slowly(reply, close))
            elif reply.disconnect:
                transport.close()
            else:
                transport.write(reply._wire)
                if close:
                    transport.close()

    async def send_slowly(self, reply: Reply, close: bool) -> None:
        transport = self.transport
        assert transport is not None
        try:
            await asyncio.sleep(reply.delay)
            if reply.cut_at is not None:
                transport.write(reply._wire[: reply.cut_at])
                await asyncio.sleep(reply.stall)
                transport.close()
            elif reply.disconnect:
                transport.close()
            elif reply.chunks is None or not reply.chunk_delay:
                transport.write(reply._wire)
            else:
                transport.write(reply._head)
                for i, framed in enumerate(reply._framed):
                    if i and reply.chunk_delay:
                        await asyncio.sleep(reply.chunk_delay)
                    transport.write(framed)
                transport.write(b"0\r\n\r\n")
            if close:
                transport.close()
        finally:
            self.task = None
        if not transport.is_closing():
            self.process()


class ScriptedServer:
    """An OpenAI-compatible server on 127.0.0.1 that answers from a script of replies.

    Use as `with ScriptedServer() as server:` or call `start()` and `stop()`. Any non-GET request
    pops the next scripted reply; `GET .../models` lists a few Qwen models.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[Reply] = deque()
        self._requests: list[RecordedRequest] = []
        self._failures: list[str] = []
        self._fallback: Callable[[RecordedRequest], Reply] | None = None
        self._conns: set[_Connection] = set()
        self._opened = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._port = 0

    @property
    def port(self) -> int:
        """The TCP port the server listens on (0 before `start`)."""
        return self._port

    @property
    def url(self) -> str:
        """The base URL to give an OpenAI client, e.g. `http://127.0.0.1:PORT/v1`."""
        return f"http://127.0.0.1:{self._port}/v1"

    @property
    def connections_opened(self) -> int:
        """How many TCP connections clients have opened so far."""
        return self._opened

    @property
    def open_connections(self) -> int:
        """How many client connections are open now."""
        return len(self._conns)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def unused(self) -> list[Reply]:
        """The scripted replies no request has consumed yet."""
        with self._lock:
            return list(self._queue)

    @property
    def failures(self) -> list[str]:
        """Descriptions of requests that found no reply (answered with a 500)."""
        with self._lock:
            return list(self._failures)

    def script(self, *replies: Reply) -> None:
        """Append replies to the queue; each incoming request pops the next one."""
        with self._lock:
            self._queue.extend(replies)

    def respond_with(self, fn: Callable[[RecordedRequest], Reply] | None) -> None:
        """Answer with `fn(request)` whenever the queue is empty (None removes it)."""
        self._fallback = fn

    def reset(self) -> None:
        """Forget the script, the recorded requests and the failures (the fallback stays)."""
        with self._lock:
            self._queue.clear()
            self._requests.clear()
            self._failures.clear()

    def assert_done(self) -> None:
        """Raise AssertionError if a scripted reply was never used or a request went unanswered."""
        with self._lock:
            problems = [f"unused reply: {r.describe()}" for r in self._queue] + self._failures
        if problems:
            raise AssertionError("scripted server:\n  " + "\n  ".join(problems))

    def _reply_for(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self._requests.append(request)
            number = len(self._requests)
            if request.method == "GET":
                if request.path.partition("?")[0].rstrip("/").endswith("/models"):
                    return _MODELS
                return error_reply(404, f"scripted server: no route GET {request.path}")
            if self._queue:
                return self._queue.popleft()
            fallback = self._fallback
        if fallback is not None:
            try:
                return fallback(request)
            except Exception as exc:
                problem = f"respond_with function raised {exc!r} on request {number}"
        else:
            problem = f"no reply scripted for request {number} ({request.method} {request.path})"
        with self._lock:
            self._failures.append(problem)
        return error_reply(500, f"scripted server: {problem}", type="server_error")

    def start(self) -> Self:
        """Start serving in a background thread; the port is bound when this returns."""
        if self._thread is not None:
            return self
        # Bound here, so a failure raises in the caller and clients may connect at once.
        sock = socket.create_server(("127.0.0.1", 0), backlog=2048)
        self._port = sock.getsockname()[1]
        self._loop, self._stopping = asyncio.new_event_loop(), asyncio.Event()
        self._thread = threading.Thread(
            target=self._run, args=(self._loop, sock), name="scripted-server", daemon=True
        )
        self._thread.start()
        return self

    def _run(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        try:
            loop.run_until_complete(self._serve(sock))
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self, sock: socket.socket) -> None:
        assert self._stopping is not None
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Connection(self), sock=sock, backlog=2048)
        await self._stopping.wait()
        server.close()
        tasks = [c.task for c in self._conns if c.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for conn in list(self._conns):
            if conn.transport is not None:
                conn.transport.close()
        await server.wait_closed()
        for i in range(50):  # let connection_lost run; abort sockets a client never drains
            if not self._conns:
                break
            await asyncio.sleep(0.01 if i else 0)
        for conn in list(self._conns):
            if conn.transport is not None:
                conn.transport.abort()
        await asyncio.sleep(0)

    def stop(self) -> None:
        """Close every connection and the listening socket, then end the thread."""
        if self._thread is None or self._loop is None or self._stopping is None:
            return
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join()
        self._thread = self._loop = self._stopping = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
