"""MCP server: our tools offered to other MCP clients, over stdio or Streamable HTTP (`/mcp`).

`qwenloop mcp-serve --tools calculator,current_time` runs it; each call is validated and run as
the agent loop would, and a tool's failure becomes an MCP error result, never a crashed server.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from agent.errors import ConfigError, UserError
from agent.tool import Tool, ToolRetry, format_tool_output, validation_summary

if TYPE_CHECKING:
    import mcp_types
    from mcp.server.context import ServerRequestContext
    from mcp.server.lowlevel import Server

__all__ = ["build_server", "call_tool", "run_mcp_serve", "serve", "serve_async"]

_INSTALL_HINT = "mcp-serve needs the mcp extra: pip install 'qwenloop[mcp]'"


def _require_mcp() -> None:
    try:
        import mcp  # noqa: F401
    except ImportError:
        raise ConfigError(_INSTALL_HINT) from None


async def call_tool(tool: Tool, arguments: dict[str, Any]) -> tuple[str, bool]:
    """Run one call as the agent loop would; return its text and whether it failed."""
    try:
        value = await tool.invoke(tool.validate(arguments))
    except ValidationError as exc:
        return validation_summary(exc), True
    except ToolRetry as exc:
        return str(exc), True
    except TimeoutError:
        return f"tool {tool.name!r} timed out after {tool.timeout} s", True
    except Exception as exc:  # a tool's failure is the caller's to read, never a crash
        return f"{type(exc).__name__}: {exc}", True
    return format_tool_output(value), False


def build_server(tools: Sequence[Tool], *, name: str = "qwenloop") -> Server[Any]:
    """Build an MCP server (the SDK's low-level `Server`) that lists and calls `tools`.

    Raises:
        ConfigError: The mcp extra is not installed.
        UserError: Two tools share a name.
    """
    _require_mcp()
    import mcp_types
    from mcp import MCPError
    from mcp.server.lowlevel import Server

    by_name: dict[str, Tool] = {}
    for t in tools:
        if t.name in by_name:
            raise UserError(f"mcp-serve: two tools are called {t.name!r}")
        by_name[t.name] = t
    listing = mcp_types.ListToolsResult(
        tools=[
            mcp_types.Tool(
                name=t.name, description=t.description or None, input_schema=t.parameters
            )
            for t in by_name.values()
        ]
    )

    async def on_list_tools(
        ctx: ServerRequestContext[Any], params: mcp_types.PaginatedRequestParams | None
    ) -> mcp_types.ListToolsResult:
        return listing

    async def on_call_tool(
        ctx: ServerRequestContext[Any], params: mcp_types.CallToolRequestParams
    ) -> mcp_types.CallToolResult:
        found = by_name.get(params.name)
        if found is None:  # a protocol error, as the spec asks for unknown tools
            known = ", ".join(by_name) or "none"
            raise MCPError(
                mcp_types.INVALID_PARAMS, f"unknown tool {params.name!r}; available: {known}"
            )
        text, failed = await call_tool(found, params.arguments or {})
        return mcp_types.CallToolResult(content=[mcp_types.TextContent(text=text)], is_error=failed)

    return Server(name, on_list_tools=on_list_tools, on_call_tool=on_call_tool)


async def serve_async(
    tools: Sequence[Tool], *, http: bool = False, host: str = "127.0.0.1", port: int = 8000
) -> None:
    """Serve `tools` until stdin closes (stdio) or the process is interrupted (HTTP).

    Raises:
        ConfigError: The mcp extra is not installed.
    """
    server = build_server(tools)
    if http:
        import uvicorn

        app = server.streamable_http_app(host=host)
        config = uvicorn.Config(app, host=host, port=port, log_level="warning")
        print(f"qwenloop: serving {len(tools)} tools at http://{host}:{port}/mcp", file=sys.stderr)
        await uvicorn.Server(config).serve()
        return
    from mcp.server.stdio import stdio_server

    async with stdio_server() as (read, write):
        # stdout carries the protocol now: a tool's print() goes to stderr instead.
        with contextlib.redirect_stdout(sys.stderr):
            await server.run(read, write, server.create_initialization_options())


def serve(
    tools: Sequence[Tool], *, http: bool = False, host: str = "127.0.0.1", port: int = 8000
) -> None:
    """Serve `tools` as an MCP server over stdio (the default) or Streamable HTTP at `/mcp`.

    Args:
        tools: The tools to offer.
        http: Serve Streamable HTTP instead of stdio.
        host: The address to listen on (HTTP).
        port: The port to listen on (HTTP).

    Raises:
        ConfigError: The mcp extra is not installed.
    """
    import anyio

    async def main() -> None:
        await serve_async(tools, http=http, host=host, port=port)

    anyio.run(main)


def run_mcp_serve(
    tools_csv: str,
    tool_specs: Sequence[str],
    http: bool,
    port: int,
    *,
    host: str = "127.0.0.1",
    load_file_tool: Callable[[str], Tool] | None = None,
) -> int:
    """Serve built-in tools by name and FILE.py:FUNCTION tools (`qwenloop mcp-serve`).

    Args:
        tools_csv: Built-in tools by name, comma-separated.
        tool_specs: FILE.py:FUNCTION specs.
        http: Serve Streamable HTTP instead of stdio.
        port: The HTTP port.
        host: The HTTP address.
        load_file_tool: Loads one FILE.py:FUNCTION spec (the CLI passes its own).

    Returns:
        The exit code (0).

    Raises:
        UserError: No tools, or a tool that cannot be found or loaded.
    """
    from agent.tool_plugins import load_tool, load_tool_file

    _require_mcp()
    if load_file_tool is None:
        load_file_tool = load_tool_file
    tools = [load_tool(n.strip()) for n in tools_csv.split(",") if n.strip()]
    tools += [load_file_tool(spec) for spec in tool_specs]
    if not tools:
        raise UserError("mcp-serve: name at least one tool (--tools NAME,... or --tool FILE.py:FN)")
    with contextlib.suppress(KeyboardInterrupt):
        serve(tools, http=http, host=host, port=port)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m agent.mcp_serve`: the same as `qwenloop mcp-serve`."""
    parser = argparse.ArgumentParser(prog="python -m agent.mcp_serve", description=__doc__)
    parser.add_argument("--tools", default="", help="built-in tools by name, comma-separated")
    parser.add_argument("--tool", action="append", default=[], metavar="FILE.py:FUNCTION")
    parser.add_argument("--http", action="store_true", help="serve Streamable HTTP at /mcp")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    try:
        return run_mcp_serve(args.tools, args.tool, args.http, args.port, host=args.host)
    except UserError as exc:
        print(f"qwenloop: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
