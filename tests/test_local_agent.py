"""The whole runtime on the embedded local model: Agent → loop → real Qwen weights → tool → answer.

Greedy decoding (temperature 0, fixed seed), so the run is repeatable.
"""

from __future__ import annotations

import pytest

from agent import Agent, ToolCallFinishedEvent

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (qwenloop[local])")

pytestmark = pytest.mark.local_model


async def test_agent_on_the_local_model_calls_a_tool_and_answers():
    agent = Agent(
        provider="local",
        tools=["calculator", "current_time"],
        settings={"temperature": 0, "seed": 0, "max_tokens": 256},
        max_turns=4,
    )
    try:
        result = await agent.run("What is 17 * 23?")
        assert [c.name for c in result.tool_calls][:1] == ["calculator"]
        assert result.tool_calls[0].result == "391"
        assert "391" in result.output
        assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0
        assert result.model and result.turns >= 2

        events = [e async for e in agent.stream("How many seconds are in a week?")]
        finished = [e.record for e in events if isinstance(e, ToolCallFinishedEvent)]
        assert finished and finished[0].result == "604800"
        assert "604" in events[-1].result.output.replace(",", "")
    finally:
        await agent.aclose()
