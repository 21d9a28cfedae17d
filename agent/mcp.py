"""MCP client: an MCP server's tools as a toolset, `Agent(tools=[MCPServerStdio(...)])`.

One background task per server holds the session (the SDK's anyio context managers must be
entered and exited in one task); calls reach it from any task, each bounded by the timeout.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import importlib.util
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from agent.errors import ConfigError
from agent.tool import Tool, ToolRetry

if TYPE_CHECKING:
    import mcp_types
    from mcp import ClientSession
    from mcp.client._transport import TransportStreams

__all__ = ["MCPServer", "MCPServerHTTP", "MCPServerStdio", "MCPTool", "result_text"]

_INSTALL_HINT = "MCP servers need the mcp extra: pip install 'qwenloop[mcp]'"
_INVALID_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
# Bounds a clean stop: the SDK's own stdio shutdown waits at most about 6.5 s before it kills.
_CLOSE_TIMEOUT = 10.0


def _require_mcp() -> None:
    try:
        found = importlib.util.find_spec("mcp") is not None
    except ValueError:  # sys.modules["mcp"] is None: the import is blocked
        found = False
    if not found:
        raise ConfigError(_INSTALL_HINT)


def _reason(exc: BaseException) -> str:
    """The innermost message of an exception, ExceptionGroups unwrapped."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class _Connection:
    """One live session: the task that owns it and the signal that ends it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.session: ClientSession | None = None
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.stale = False  # restart at the next run (a call stalled or failed)

    @property
    def alive(self) -> bool:
        return self.session is not None and self.task is not None and not self.task.done()


class MCPTool(Tool):
    """A tool of an MCP server: its JSON schema passed on as it is, each call sent to the server.

    Attributes:
        server: The server the tool belongs to.
        remote_name: The tool's name on the server (`name` may carry a prefix).
    """

    def __init__(
        self,
        server: MCPServer,
        *,
        name: str,
        remote_name: str,
        description: str,
        parameters: dict[str, Any],
    ) -> None:
        # Not Tool.__init__: the schema comes from the server, not from a Python signature.
        self.server = server
        self.remote_name = remote_name
        self.name = name
        self.description = description
        self.parameters = parameters
        self.timeout = server.timeout
        self.strict = False
        self.max_retries = 2
        self.needs_approval = False
        self.is_async = True
        self._field_names = ()

        async def call(**arguments: Any) -> str:
            return await server.call_tool(remote_name, arguments)

        self.fn = call

    def __repr__(self) -> str:
        return f"MCPTool(name={self.name!r}, server={self.server.name!r})"

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Pass the arguments on unchanged: the server validates them against its schema."""
        return arguments

    async def invoke(self, kwargs: dict[str, Any]) -> Any:
        """Call the tool on the server.

        Raises:
            ToolRetry: The server answered with an error result.
            TimeoutError: No answer within the timeout.
            ConnectionError: The server is gone.
        """
        return await self.server.call_tool(self.remote_name, kwargs)


class MCPServer:
    """The shared part of an MCP server toolset: lifecycle, tool listing, calls.

    The server starts on the first `list_tools` (each run calls it, and so does
    `async with agent:`); its tools are cached until it reports that they changed. A server that
    dies or stalls turns the calls into tool errors and is restarted when the next run starts.
    `aclose()` stops it.

    Attributes:
        name: A short name for messages.
        prefix: Prepended to the tools' names as `prefix_name`, or None.
        timeout: Seconds a listing or a call may take.
        start_timeout: Seconds the server may take to start and answer the handshake.
    """

    def __init__(
        self, *, prefix: str | None, timeout: float, start_timeout: float, name: str
    ) -> None:
        _require_mcp()
        if timeout <= 0 or start_timeout <= 0:
            raise ConfigError(f"MCP server {name!r}: timeouts must be positive")
        if prefix is not None and not re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", prefix):
            raise ConfigError(
                f"MCP server {name!r}: prefix {prefix!r} is invalid: use 1-40 letters, digits, "
                "'_' or '-'"
            )
        self.name = name
        self.prefix = prefix
        self.timeout = timeout
        self.start_timeout = start_timeout
        self._conn: _Connection | None = None
        self._tools: list[Tool] | None = None
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    async def _open(self, stack: AsyncExitStack) -> TransportStreams:
        """Open the transport inside `stack`; return its read and write streams."""
        raise NotImplementedError

    def _lock_for(self, loop: asyncio.AbstractEventLoop) -> asyncio.Lock:
        # `run_sync` gives every run its own event loop, and a lock belongs to one.
        if self._lock is None or self._lock_loop is not loop:
            self._lock = asyncio.Lock()
            self._lock_loop = loop
        return self._lock

    async def list_tools(self) -> list[Tool]:
        """Start the server if it is not running, and return its tools.

        Raises:
            ConfigError: The server could not be started or did not list its tools.
        """
        loop = asyncio.get_running_loop()
        async with self._lock_for(loop):
            conn = self._conn
            if conn is not None and (conn.stale or not conn.alive or conn.loop is not loop):
                self._conn = self._tools = None
                await self._close(conn)
            try:
                if self._conn is None:
                    self._conn = await self._connect(loop)
                if self._tools is None:
                    self._tools = await self._list(self._conn)
            except Exception as exc:
                if self._conn is not None:
                    conn, self._conn = self._conn, None
                    await self._close(conn)
                why = "no answer in time" if isinstance(exc, TimeoutError) else _reason(exc)
                raise ConfigError(
                    f"MCP server {self.name!r} did not start or list its tools: {why}"
                ) from exc
            return list(self._tools)

    async def aclose(self) -> None:
        """Stop the server (its process or HTTP session) and forget its tools."""
        conn, self._conn, self._tools = self._conn, None, None
        if conn is not None:
            await self._close(conn)

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> str:
        """Call the server's tool `name` and return its result as text.

        Raises:
            ToolRetry: The server answered with an error result (or a protocol error).
            TimeoutError: No answer within `timeout`.
            ConnectionError: The server is not running.
        """
        from mcp import MCPError
        from mcp_types import CONNECTION_CLOSED

        conn = self._conn
        if conn is None or not conn.alive or conn.loop is not asyncio.get_running_loop():
            raise ConnectionError(
                f"MCP server {self.name!r} is not running; it restarts when the next run starts"
            )
        assert conn.session is not None
        session = conn.session
        try:
            async with asyncio.timeout(self.timeout):
                # Races the call against the session's end: a dead server fails the call now.
                result = await _first(session.call_tool(name, arguments), conn)
        except TimeoutError:
            conn.stale = True
            raise
        except MCPError as exc:
            if exc.error.code != CONNECTION_CLOSED:  # a JSON-RPC error answer: the server is fine
                raise ToolRetry(f"MCP error: {exc}") from exc
            conn.stale = True
            raise ConnectionError(
                f"MCP server {self.name!r} closed the connection (it exited or crashed); "
                "it restarts when the next run starts"
            ) from exc
        except ConnectionError as exc:
            conn.stale = True
            raise ConnectionError(
                f"MCP server {self.name!r}: {exc}; it restarts when the next run starts"
            ) from exc
        except Exception as exc:  # the SDK refused the answer (say, off its output schema)
            if conn.alive:
                raise ToolRetry(f"MCP client error: {_reason(exc)}") from exc
            conn.stale = True
            raise ConnectionError(f"MCP server {self.name!r}: {_reason(exc)}") from exc
        text = result_text(result)
        if result.is_error:
            raise ToolRetry(text or "the tool failed")
        return text

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        conn = _Connection(loop)
        ready: asyncio.Future[None] = loop.create_future()
        conn.task = loop.create_task(self._hold(conn, ready), name=f"mcp-server {self.name}")
        try:
            async with asyncio.timeout(self.start_timeout):
                await asyncio.shield(ready)
        except BaseException:
            await self._close(conn)
            raise
        return conn

    async def _hold(self, conn: _Connection, ready: asyncio.Future[None]) -> None:
        """Own the transport and the session from start to stop (the background task)."""
        from mcp import ClientSession

        try:
            async with AsyncExitStack() as stack:
                read, write = await self._open(stack)
                session = await stack.enter_async_context(
                    ClientSession(read, write, message_handler=self._on_message)
                )
                await session.initialize()
                conn.session = session
                ready.set_result(None)
                await conn.stop.wait()
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
        finally:
            conn.stale = True
            conn.stop.set()  # wakes calls racing the session's end
            if not ready.done():
                ready.set_exception(ConnectionError(f"MCP server {self.name!r} stopped"))
                ready.exception()  # retrieved: nobody may be waiting any more

    async def _on_message(self, message: Any) -> None:
        import mcp_types

        if isinstance(message, mcp_types.ToolListChangedNotification):
            self._tools = None  # listed again when the next run starts

    async def _close(self, conn: _Connection) -> None:
        task = conn.task
        if task is None or task.done():
            return
        if conn.loop is not asyncio.get_running_loop():
            return  # that loop has ended, and `asyncio.run` cancelled the task as it closed
        conn.stop.set()
        if conn.session is None:
            task.cancel()  # still starting: nothing to wind down gracefully
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
        with suppress(asyncio.CancelledError):
            await task

    async def _list(self, conn: _Connection) -> list[Tool]:
        import mcp_types

        assert conn.session is not None
        tools: list[Tool] = []
        cursor: str | None = None
        async with asyncio.timeout(self.timeout):
            while True:
                params = mcp_types.PaginatedRequestParams(cursor=cursor) if cursor else None
                page = await _first(conn.session.list_tools(params=params), conn)
                tools.extend(self._tool(t) for t in page.tools)
                cursor = page.next_cursor
                if not cursor:
                    return tools

    def _tool(self, remote: mcp_types.Tool) -> MCPTool:
        # Our names (and OpenAI's) allow 1-64 of [a-zA-Z0-9_-]; MCP's also allow '.' and '/'.
        name = _INVALID_NAME_CHARS.sub("_", remote.name)
        if self.prefix:
            name = f"{self.prefix}_{name}"
        return MCPTool(
            self,
            name=name[:64],
            remote_name=remote.name,
            description=remote.description or remote.title or "",
            parameters=dict(remote.input_schema),
        )


async def _first(coro: Any, conn: _Connection) -> Any:
    """Await `coro`, unless the connection ends first (then raise ConnectionError)."""
    call = asyncio.ensure_future(coro)
    stopped = asyncio.ensure_future(conn.stop.wait())
    try:
        done, _ = await asyncio.wait({call, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not call.done():
            call.cancel()
            with suppress(BaseException):
                await call
    if call in done:
        return call.result()
    raise ConnectionError("the server stopped (its process exited or the connection closed)")


def result_text(result: mcp_types.CallToolResult) -> str:
    """The text of a tool result: text parts joined, structured content as JSON, media noted."""
    parts: list[str] = []
    for block in result.content:
        if block.type == "text":
            parts.append(block.text)
        elif block.type in ("image", "audio"):
            parts.append(f"[{block.type}: {block.mime_type}, {_decoded_size(block.data)} bytes]")
        elif block.type == "resource_link":
            parts.append(f"[resource: {block.uri}]")
        elif block.type == "resource":
            res = block.resource
            text = getattr(res, "text", None)
            parts.append(text if isinstance(text, str) else f"[resource: {res.uri}]")
    structured = result.structured_content
    if structured is not None:
        # Servers repeat structured content as JSON text (or wrap a bare value as {"result": v}
        # beside it): send the structured form once, and keep only the text that is prose.
        parts = [part for part in parts if not _is_json(part)]
        parts.append(json.dumps(structured, ensure_ascii=False))
    return "\n".join(parts)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _decoded_size(data: str) -> int:
    try:
        return len(base64.b64decode(data, validate=False))
    except (binascii.Error, ValueError):
        return len(data) * 3 // 4


class MCPServerStdio(MCPServer):
    """An MCP server run as a child process, spoken to over its stdin and stdout.

    Example:
        ```python
        agent = Agent(tools=["calculator", MCPServerStdio("python", ["-m", "mcp_server_time"])])
        ```

    Args:
        command: The program to run.
        args: Its arguments.
        env: Extra environment variables (the SDK passes on only a safe few of ours, such as
            PATH and HOME).
        cwd: Its working directory.
        prefix: Prepended to its tools' names as `prefix_name`, to avoid collisions.
        timeout: Seconds a listing or a call may take.
        start_timeout: Seconds the server may take to start and answer the handshake.
        name: A short name for messages; defaults to the command line.

    Raises:
        ConfigError: The mcp extra is not installed, or an argument is invalid.
    """

    def __init__(
        self,
        command: str,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        prefix: str | None = None,
        timeout: float = 30.0,
        start_timeout: float = 60.0,
        name: str | None = None,
    ) -> None:
        if isinstance(args, str):
            raise ConfigError(f"MCPServerStdio: args must be a list of strings, got {args!r}")
        self.command = command
        self.args = list(args)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        default_name = shlex.join([Path(command).name, *self.args])
        super().__init__(
            prefix=prefix,
            timeout=timeout,
            start_timeout=start_timeout,
            name=name or default_name[:60],
        )

    def __repr__(self) -> str:
        # Environment values may hold keys: names only.
        env = f", env_keys={sorted(self.env)!r}" if self.env else ""
        return (
            f"MCPServerStdio(command={self.command!r}, args={self.args!r}{env}, "
            f"prefix={self.prefix!r})"
        )

    async def _open(self, stack: AsyncExitStack) -> TransportStreams:
        from mcp import StdioServerParameters, stdio_client

        params = StdioServerParameters(
            command=self.command, args=self.args, env=self.env, cwd=self.cwd
        )
        return await stack.enter_async_context(stdio_client(params))


class MCPServerHTTP(MCPServer):
    """An MCP server at a Streamable HTTP endpoint (such as `http://127.0.0.1:8000/mcp`).

    Args:
        url: The endpoint.
        headers: Sent with every request (an Authorization header, say); never shown in repr.
        prefix: Prepended to its tools' names as `prefix_name`, to avoid collisions.
        timeout: Seconds a listing or a call may take.
        start_timeout: Seconds the server may take to start and answer the handshake.
        name: A short name for messages; defaults to the URL's host and path.

    Raises:
        ConfigError: The mcp extra is not installed, or an argument is invalid.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        prefix: str | None = None,
        timeout: float = 30.0,
        start_timeout: float = 60.0,
        name: str | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"MCPServerHTTP needs an http(s) URL, got {_public_url(url)!r}")
        self.url = url
        self.headers = dict(headers or {})
        super().__init__(
            prefix=prefix,
            timeout=timeout,
            start_timeout=start_timeout,
            name=name or f"{parts.hostname}{parts.path}",
        )

    def __repr__(self) -> str:
        # Header values (and a URL's user:password) may hold keys: never shown.
        headers = f", header_names={sorted(self.headers)!r}" if self.headers else ""
        return f"MCPServerHTTP(url={_public_url(self.url)!r}{headers}, prefix={self.prefix!r})"

    async def _open(self, stack: AsyncExitStack) -> TransportStreams:
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        client = await stack.enter_async_context(
            httpx2.AsyncClient(
                headers=self.headers, timeout=httpx2.Timeout(self.timeout, read=300.0)
            )
        )
        return await stack.enter_async_context(streamable_http_client(self.url, http_client=client))


def _public_url(url: str) -> str:
    """The URL without user:password or query (either may hold a key)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
