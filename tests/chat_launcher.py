"""Start `qwenloop chat` against a test server, for the tmux tests in test_chat.py.

The server's URL comes in `QWENLOOP_TEST_URL`; typed lines go to `QWENLOOP_CHAT_HISTORY`.
"""

from __future__ import annotations

import asyncio
import os
import sys

from agent import Agent, tool
from agent.chat import chat


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@tool(needs_approval=True)
def delete_file(path: str) -> str:
    """Delete a file."""
    return f"deleted {path}"


def build(model: str | None, system: str | None) -> Agent:
    return Agent(
        model or "qwen-plus",
        base_url=os.environ["QWENLOOP_TEST_URL"],
        api_key="test",
        tools=[add, delete_file],
        instructions=system,
        retries=0,
    )


if __name__ == "__main__":
    sys.exit(asyncio.run(chat(build)))
