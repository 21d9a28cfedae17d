"""MCP: servers' tools in the agent loop (agent.mcp) and our tools served over MCP (agent.mcp_serve).

Real servers over real transports: the official `mcp-server-time` and a small script of our own
over stdio, and `python -m agent.mcp_serve` over Streamable HTTP on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import mcp_types
import pytest

from agent import Agent
from agent.errors import ConfigError
from agent.mcp import MCPServerHTTP, MCPServerStdio, result_text
from agent.testing import ScriptedServer, text_reply, tool_call_reply
from agent.tool import ToolRetry

# A stdio MCP server whose tools misbehave on purpose, on the SDK's low-level Server.
TEST_SERVER = """
import asyncio, os, sys, time
import mcp_types as t
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

grown = []

def tool(name, **props):
    return t.Tool(name=name, description=f"The {name} tool.",
                  input_schema={"type": "object", "properties": props})

def text(value):
    return t.CallToolResult(content=[t.TextContent(text=value)])

async def list_tools(ctx, params):
    tools = [tool("pid"), tool("nap", seconds={"type": "number"}, marker={"type": "string"}),
             tool("stall", seconds={"type": "number"}), tool("fail"), tool("grow")]
    return t.ListToolsResult(tools=tools + [tool("extra")] * bool(grown))

async def call_tool(ctx, params):
    args = params.arguments or {}
    if params.name == "pid":
        return text(str(os.getpid()))
    if params.name == "nap":
        open(args["marker"], "w").close()  # the call is in flight
        await asyncio.sleep(args["seconds"])
        return text("rested")
    if params.name == "stall":
        time.sleep(args["seconds"])  # the whole server stops answering
        return text("stalled")
    if params.name == "fail":
        return t.CallToolResult(content=[t.TextContent(text="the disk is full")], is_error=True)
    if params.name == "grow":
        grown.append(1)
        await ctx.session.send_tool_list_changed()
        return text("grown")
    return text("extra")

async def main():
    server = Server("misbehaving", on_list_tools=list_tools, on_call_tool=call_tool)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())

asyncio.run(main())
"""


@pytest.fixture
def test_server(tmp_path: Path) -> Path:
    script = tmp_path / "misbehaving_server.py"
    script.write_text(TEST_SERVER)
    return script


def _children() -> set[int]:
    """Live child processes of this one (zombies count: they were not reaped)."""
    me = str(os.getpid())
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:
            found.add(int(entry.name))
    return found


def _sockets() -> int:
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except OSError:
            continue
    return count


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def http_server() -> Iterator[tuple[str, int]]:
    """`python -m agent.mcp_serve --http` serving calculator and current_time; (url, pid)."""
    port = _free_port()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "agent.mcp_serve", "--http", "--port", str(port)),
            *("--tools", "calculator,current_time"),
        ],
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("mcp-serve did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp", proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


def _time_server(**kw) -> MCPServerStdio:
    return MCPServerStdio(
        sys.executable, ["-m", "mcp_server_time", "--local-timezone", "UTC"], **kw
    )


async def test_official_time_server_through_the_loop(openai_server: ScriptedServer, make_agent):
    openai_server.script(
        tool_call_reply("get_current_time", {"timezone": "UTC"}), text_reply("It is now.")
    )
    agent = make_agent(_time_server())
    result = await agent.run("What time is it in UTC?")
    assert result.output == "It is now."
    first, second = openai_server.requests
    names = [t["function"]["name"] for t in first.json["tools"]]
    assert names == ["get_current_time", "convert_time"]
    schema = first.json["tools"][0]["function"]["parameters"]
    assert schema["required"] == ["timezone"]  # the server's own schema, passed on as it is
    message = second.json["messages"][-1]
    assert message["role"] == "tool"
    said = json.loads(message["content"])
    now = datetime.fromisoformat(said["datetime"])
    assert abs((now - datetime.now(UTC)).total_seconds()) < 60


async def test_our_server_over_streamable_http(http_server: tuple[str, int]):
    url, _ = http_server
    server = MCPServerHTTP(url, headers={"Authorization": "Bearer sk-secret"})
    try:
        tools = {t.name: t for t in await server.list_tools()}
        assert set(tools) == {"calculator", "current_time"}
        assert tools["calculator"].parameters["required"] == ["expression"]
        assert await tools["calculator"].invoke({"expression": "2 + 3 * 4"}) == "14"
        with pytest.raises(ToolRetry, match="invalid arguments: expression"):
            await tools["calculator"].invoke({"formula": "1"})
        with pytest.raises(ToolRetry, match="unknown tool 'nope'; available: calculator"):
            await server.call_tool("nope", {})
    finally:
        await server.aclose()


async def test_our_server_over_stdio_with_a_prefix(openai_server: ScriptedServer, make_agent):
    served = MCPServerStdio(
        sys.executable, ["-m", "agent.mcp_serve", "--tools", "calculator"], prefix="remote"
    )
    openai_server.script(
        tool_call_reply("remote_calculator", {"expression": "6 * 7"}), text_reply("42")
    )
    agent = make_agent("calculator", served)
    await agent.run("6 times 7?")
    first, second = openai_server.requests
    assert [t["function"]["name"] for t in first.json["tools"]] == [
        "calculator",
        "remote_calculator",
    ]
    assert second.json["messages"][-1]["content"] == "42"


async def test_a_name_collision_without_a_prefix_is_a_config_error(make_agent):
    served = MCPServerStdio(sys.executable, ["-m", "agent.mcp_serve", "--tools", "calculator"])
    agent = make_agent("calculator", served)
    with pytest.raises(ConfigError, match=r"'calculator'.*give the toolset a prefix"):
        await agent.run("6 times 7?")


async def test_a_server_that_does_not_start_is_a_config_error(make_agent):
    crashing = MCPServerStdio(sys.executable, ["-c", "import sys; sys.exit(3)"], name="crasher")
    with pytest.raises(ConfigError, match="MCP server 'crasher' did not start"):
        await make_agent(crashing).run("Hello?")
    missing = MCPServerStdio("/nonexistent/mcp-server", name="missing")
    with pytest.raises(ConfigError, match=r"'missing' did not start.*No such file"):
        await make_agent(missing).run("Hello?")


async def test_a_server_killed_mid_call_is_a_tool_error_and_restarts(
    openai_server: ScriptedServer, make_agent, test_server: Path, tmp_path: Path
):
    server = MCPServerStdio(sys.executable, [str(test_server)], timeout=20)
    agent = make_agent(server)
    marker = tmp_path / "in-flight"
    openai_server.script(
        tool_call_reply("nap", {"seconds": 30, "marker": str(marker)}), text_reply("Gave up.")
    )
    async with agent:
        pid = int(await server.call_tool("pid", {}))

        async def kill_when_in_flight() -> None:
            for _ in range(500):
                if marker.exists():
                    break
                await asyncio.sleep(0.02)
            os.kill(pid, signal.SIGKILL)

        killer = asyncio.create_task(kill_when_in_flight())
        started = time.monotonic()
        result = await agent.run("Take a nap.")
        await killer
        assert time.monotonic() - started < 10
        assert result.output == "Gave up."
        (record,) = result.tool_calls
        assert "closed the connection" in (record.error or "")
        assert openai_server.requests[1].json["messages"][-1]["content"].startswith("Error: ")

        openai_server.script(tool_call_reply("pid", {}), text_reply("Back."))
        result = await agent.run("Are you there?")
        (record,) = result.tool_calls
        assert record.error is None
        assert int(record.result or 0) != pid  # a new process


async def test_a_stalled_server_is_a_tool_error_within_the_timeout(
    openai_server: ScriptedServer, make_agent, test_server: Path
):
    agent = make_agent(MCPServerStdio(sys.executable, [str(test_server)], timeout=1.5))
    openai_server.script(tool_call_reply("stall", {"seconds": 60}), text_reply("Too slow."))
    async with agent:
        started = time.monotonic()
        result = await agent.run("Stall.")
        assert time.monotonic() - started < 5
    assert result.output == "Too slow."
    (record,) = result.tool_calls
    assert record.error == "tool 'stall' timed out after 1.5 s"


async def test_an_error_result_goes_to_the_model(
    openai_server: ScriptedServer, make_agent, test_server: Path
):
    agent = make_agent(MCPServerStdio(sys.executable, [str(test_server)]))
    openai_server.script(tool_call_reply("fail", {}), text_reply("The disk is full."))
    result = await agent.run("Save it.")
    assert result.tool_calls[0].error == "the disk is full"
    assert openai_server.requests[1].json["messages"][-1]["content"] == "Error: the disk is full"


async def test_tools_are_listed_again_when_the_server_says_they_changed(
    openai_server: ScriptedServer, make_agent, test_server: Path
):
    agent = make_agent(MCPServerStdio(sys.executable, [str(test_server)]))
    openai_server.script(tool_call_reply("grow", {}), text_reply("Grown."), text_reply("Hi."))
    await agent.run("Grow.")
    await agent.run("And now?")
    before, _, after = openai_server.requests
    assert "extra" not in [t["function"]["name"] for t in before.json["tools"]]
    assert "extra" in [t["function"]["name"] for t in after.json["tools"]]


async def test_nothing_outlives_aclose(
    openai_server: ScriptedServer, test_server: Path, http_server: tuple[str, int]
):
    url, http_pid = http_server
    children, sockets = _children(), _sockets()
    stdio = MCPServerStdio(sys.executable, [str(test_server)])
    http = MCPServerHTTP(url, prefix="web")
    agent = Agent("qwen-plus", base_url=openai_server.url, api_key="test", tools=[stdio, http])
    openai_server.script(
        tool_call_reply("web_calculator", {"expression": "1 + 1"}), text_reply("2")
    )
    async with agent:
        assert len(_children() - children) == 1  # the stdio server
        await agent.run("1 + 1?")
    assert _children() - {http_pid} == children - {http_pid}
    assert _sockets() <= sockets


def test_sync_runs_restart_the_server_on_their_own_loops(
    openai_server: ScriptedServer, test_server: Path
):
    children = _children()
    server = MCPServerStdio(sys.executable, [str(test_server)])
    agent = Agent("qwen-plus", base_url=openai_server.url, api_key="test", tools=[server])
    openai_server.script(
        tool_call_reply("pid", {}), text_reply("one"), tool_call_reply("pid", {}), text_reply("two")
    )
    first = agent.run_sync("pid?").tool_calls[0].result
    second = agent.run_sync("pid?").tool_calls[0].result
    asyncio.run(agent.aclose())
    assert first and second and first != second  # each loop started its own process
    assert _children() == children


def test_results_become_text() -> None:
    png = base64.b64encode(b"\x89PNG" + b"\0" * 96).decode()
    result = mcp_types.CallToolResult(
        content=[
            mcp_types.TextContent(text="A red dot."),
            mcp_types.ImageContent(data=png, mime_type="image/png"),
            mcp_types.TextContent(text='{"x": 1}'),
        ],
        structured_content={"x": 1},
    )
    assert result_text(result) == 'A red dot.\n[image: image/png, 100 bytes]\n{"x": 1}'


def test_repr_hides_secrets() -> None:
    http = MCPServerHTTP(
        "https://user:pw@mcp.example.com/mcp?key=k1", headers={"Authorization": "Bearer sk-1"}
    )
    stdio = MCPServerStdio("npx", ["server"], env={"API_KEY": "sk-2"})
    shown = repr(http) + repr(stdio)
    assert "Authorization" in shown and "API_KEY" in shown
    for secret in ("sk-1", "sk-2", "pw", "k1"):
        assert secret not in shown


def test_without_the_extra_a_config_error_names_the_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "mcp", None)
    with pytest.raises(ConfigError, match=r"pip install 'qwenloop\[mcp\]'"):
        MCPServerStdio("python", ["-m", "mcp_server_time"])


def test_the_cli_lists_a_servers_tools(capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli import main

    assert main(["tools", "--json", "--mcp", f"{sys.executable} -m mcp_server_time"]) == 0
    names = [t["function"]["name"] for t in json.loads(capsys.readouterr().out)]
    assert names == ["get_current_time", "convert_time"]
    assert main(["tools", "--mcp", "  "]) == 2
    assert "give the server's command line" in capsys.readouterr().err
