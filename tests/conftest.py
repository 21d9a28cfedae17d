"""Shared pytest fixtures."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from agent.testing import ScriptedServer

# Runs the tests marked local_model in a child process: a native crash fails only them.
pytest_plugins = ["tests.native_isolation"]


# What a developer's shell may hold that would point a test at a real provider.
PROVIDER_VARIABLES = (
    "QWENLOOP_PROVIDER", "QWENLOOP_BASE_URL", "QWENLOOP_API_KEY", "QWENLOOP_MODEL",
    "DASHSCOPE_API_KEY", "WCODE_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL",
)  # fmt: skip


def _is_loopback(address: object) -> bool:
    if not isinstance(address, tuple):
        return True  # a Unix socket path
    host = str(address[0])
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def hermetic(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """No provider variables from the shell, and no connection beyond loopback.

    The opt-in live tests (marker `live`) keep both.
    """
    if request.node.get_closest_marker("live"):
        return
    for name in PROVIDER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def refuse(address: object) -> None:
        if not _is_loopback(address):
            raise ConnectionRefusedError(f"tests may only connect to loopback, not {address!r}")

    def connect(self: socket.socket, address: Any) -> None:
        refuse(address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        refuse(address)
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)


@pytest.fixture
def openai_server() -> Iterator[ScriptedServer]:
    """Yield a started ScriptedServer; fail the test if a scripted reply went unused."""
    with ScriptedServer() as server:
        yield server
        server.assert_done()


@pytest.fixture
async def make_agent(openai_server: ScriptedServer):
    """Build agents against the scripted server; close them after the test, pass or fail."""
    from agent import Agent

    agents: list[Agent] = []

    def build(*tools, **kw):
        kw.setdefault("api_key", "test")
        agent = Agent(
            kw.pop("model", "qwen-plus"), base_url=openai_server.url, tools=list(tools), **kw
        )
        agents.append(agent)
        return agent

    yield build
    for agent in agents:
        await agent.aclose()
