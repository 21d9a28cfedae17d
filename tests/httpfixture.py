"""A tiny threaded HTTP server on 127.0.0.1 for tests: canned routes, recorded requests."""

from __future__ import annotations

import json as jsonlib
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["LocalHTTPServer", "RecordedRequest", "Response"]

Body = bytes | Iterable[bytes]
Response = tuple[int, dict[str, str], Body]


@dataclass
class RecordedRequest:
    """One request the server received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes = b""

    @property
    def host(self) -> str:
        """The Host header."""
        return self.headers.get("host", "")


@dataclass
class _Route:
    handler: Callable[[RecordedRequest], Response]
    delay: float = 0.0
    chunk_delay: float = 0.0
    hits: int = field(default=0)


class LocalHTTPServer:
    """A threaded stdlib HTTP server bound to 127.0.0.1 on a free port.

    Usage::

        with LocalHTTPServer() as server:
            server.route("/v1/search", json={"results": []})
            server.route("/slow", body=b"late", delay=2.0)
            server.route("/dyn", handler=lambda req: (200, {"Content-Type": "text/plain"}, b"hi"))
            ...  # call server.url("/v1/search")
            assert server.requests[0].query["name"] == ["Berlin"]

    Bodies may be bytes or an iterable of byte chunks (streamed without Content-Length,
    optionally `chunk_delay` seconds apart). Delays wait on an event that `close()` sets, so
    closing never waits for a sleeping handler. Unknown paths get a 404 (and are recorded).
    """

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        """Create the server (not started).

        Args:
            ssl_context: A server-side TLS context to serve https instead of http.
        """
        self.ssl_context = ssl_context
        self.requests: list[RecordedRequest] = []
        self._routes: dict[str, _Route] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- configuration ---

    def route(
        self,
        path: str,
        body: Body = b"",
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
        json: Any = None,
        content_type: str | None = None,
        delay: float = 0.0,
        chunk_delay: float = 0.0,
        handler: Callable[[RecordedRequest], Response] | None = None,
    ) -> None:
        """Serve `path` (matched without the query string).

        Args:
            path: The path, e.g. "/v1/forecast".
            body: The body, or an iterable of chunks to stream.
            status: The status code.
            headers: Extra response headers.
            json: A value to send as JSON instead of `body`.
            content_type: The Content-Type (defaults to JSON for `json`, else text/plain); ""
                sends none.
            delay: Seconds to wait before answering.
            chunk_delay: Seconds to wait before each chunk of a streamed body.
            handler: Computes the response from the request instead of the fixed one.
        """
        if handler is None:
            hdrs = dict(headers or {})
            if json is not None:
                body = jsonlib.dumps(json).encode()
                content_type = content_type or "application/json"
            elif content_type is None:
                content_type = "text/plain; charset=utf-8"
            if content_type:  # "" sends no Content-Type at all
                hdrs.setdefault("Content-Type", content_type)
            fixed: Response = (status, hdrs, body)

            def reply(_req: RecordedRequest) -> Response:
                return fixed

        else:
            reply = handler
        with self._lock:
            self._routes[path] = _Route(reply, delay, chunk_delay)

    # --- addresses ---

    @property
    def port(self) -> int:
        """The port the server listens on."""
        assert self._server is not None, "server not started"
        return int(self._server.server_address[1])

    @property
    def origin(self) -> str:
        """E.g. "http://127.0.0.1:43121" (https with a TLS context)."""
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def url(self, path: str = "/") -> str:
        """Return the absolute URL of `path` on this server."""
        return self.origin + path

    def paths(self) -> list[str]:
        """Return the paths requested so far, in order."""
        with self._lock:
            return [r.path for r in self.requests]

    # --- lifecycle ---

    def start(self) -> LocalHTTPServer:
        """Start serving in a background thread."""
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner._serve(self)

            def do_POST(self) -> None:
                owner._serve(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                # Clients that hang up early (size limits, timeouts) are expected in tests.
                pass

        self._server = Server(("127.0.0.1", 0), Handler)
        if self.ssl_context is not None:
            self._server.socket = self.ssl_context.wrap_socket(
                self._server.socket, server_side=True
            )
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the port; wakes any delayed handler."""
        self._closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> LocalHTTPServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- serving ---

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        split = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        req = RecordedRequest(
            method=h.command,
            path=split.path,
            query=parse_qs(split.query),
            headers={k.lower(): v for k, v in h.headers.items()},
            body=h.rfile.read(length) if length else b"",
        )
        with self._lock:
            self.requests.append(req)
            route = self._routes.get(split.path)
            if route is not None:
                route.hits += 1
        chunk_delay = 0.0
        if route is None:
            status, headers, body = 404, {"Content-Type": "text/plain"}, b"no such route"
        else:
            chunk_delay = route.chunk_delay
            if route.delay and self._closing.wait(route.delay):
                return
            status, headers, body = route.handler(req)
        h.send_response(status)
        streamed = not isinstance(body, bytes | bytearray)
        for name, value in headers.items():
            h.send_header(name, value)
        if not streamed:
            h.send_header("Content-Length", str(len(body)))  # type: ignore[arg-type]
        h.send_header("Connection", "close")
        h.end_headers()
        if streamed:
            for chunk in body:
                if self._closing.wait(chunk_delay) if chunk_delay else self._closing.is_set():
                    return
                h.wfile.write(chunk)
                h.wfile.flush()
        else:
            h.wfile.write(body)  # type: ignore[arg-type]
