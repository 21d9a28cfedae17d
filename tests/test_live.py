"""Against the real DashScope: off unless QWENLOOP_LIVE=1 and DASHSCOPE_API_KEY are set."""

from __future__ import annotations

import os

import pytest

from agent import Agent

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(
        os.environ.get("QWENLOOP_LIVE") != "1" or not os.environ.get("DASHSCOPE_API_KEY"),
        reason="live test: set QWENLOOP_LIVE=1 and DASHSCOPE_API_KEY to run",
    ),
]


async def test_dashscope_tool_round_trip():
    agent = Agent("qwen-plus", provider="dashscope", tools=["calculator"])
    try:
        result = await agent.run("Use the calculator: what is 1234 * 5678?")
        assert "7006652" in result.output.replace(",", "")
        assert result.tool_calls and result.cost is not None
    finally:
        await agent.aclose()
