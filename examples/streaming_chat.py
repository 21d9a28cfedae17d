"""A chat in the terminal: the answer streams in as it is written, tool calls show as they run.

Run it against DashScope:

    DASHSCOPE_API_KEY=... python examples/streaming_chat.py

or feed it lines from a pipe:

    printf '6*7?\\nDoubled?\\n' | DASHSCOPE_API_KEY=... python examples/streaming_chat.py

Each line you type is one message; the conversation carries over from turn to turn (each run
continues from the previous run's `messages`). End with /quit or EOF (Ctrl-D). The model has the
calculator and current_time built-ins. Any other endpoint works through QWENLOOP_PROVIDER,
QWENLOOP_BASE_URL, QWENLOOP_API_KEY and QWENLOOP_MODEL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from agent import (
    Agent,
    AgentError,
    RunEndEvent,
    Template,
    TextDeltaEvent,
    ToolCallFinishedEvent,
    ToolCallStartedEvent,
)


async def turn(agent: Agent, message: str, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stream one answer to the terminal; return the conversation including this exchange."""
    speaking = False  # whether the cursor sits after streamed text, on the "bot>" line
    try:
        async for event in agent.stream(message, history=history):
            if isinstance(event, TextDeltaEvent):
                if not speaking:
                    print("bot> ", end="")
                    speaking = True
                print(event.delta, end="", flush=True)
            elif isinstance(event, ToolCallStartedEvent):
                if speaking:
                    print()
                    speaking = False
                arguments = json.dumps(event.arguments, ensure_ascii=False)
                print(f"  [tool] {event.name} {arguments}", flush=True)
            elif isinstance(event, ToolCallFinishedEvent):
                record = event.record
                outcome = record.result if event.ok else f"error: {record.error}"
                print(f"  [tool] {record.name} -> {outcome}", flush=True)
            elif isinstance(event, RunEndEvent):
                history = event.result.messages
    except AgentError as exc:
        # The failed exchange is dropped: the next message continues from the last good one.
        print(f"\n[error] {exc}", flush=True)
        speaking = False
    if speaking:
        print(flush=True)
    return history


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Chat with a streaming agent.")
    parser.parse_args(argv)
    interactive = sys.stdin.isatty()

    try:
        agent = Agent(
            provider=os.environ.get("QWENLOOP_PROVIDER", "dashscope"),
            tools=["calculator", "current_time"],
            instructions=Template(name="default"),
        )
    except AgentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if interactive:
        print("Chatting with", agent.model.model_name, "- /quit or Ctrl-D to leave.")

    history: list[dict[str, Any]] = []
    # One event loop for the whole chat, so the agent's connections are reused across turns
    # while input() reads the terminal synchronously in between.
    with asyncio.Runner() as runner:
        try:
            while True:
                try:
                    line = input("you> " if interactive else "").strip()
                except EOFError:
                    break
                if line == "/quit":
                    break
                if not line:
                    continue
                if not interactive:
                    print(f"you> {line}")  # echo piped input, so the transcript reads well
                history = runner.run(turn(agent, line, history))
        except KeyboardInterrupt:
            pass
        finally:
            runner.run(agent.aclose())
    if interactive:
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
