"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent.testing import ScriptedServer

# Runs the tests marked local_model in a child process: a native crash fails only them.
pytest_plugins = ["tests.native_isolation"]


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
