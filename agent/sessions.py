"""Sessions: a conversation kept between runs, committed turn by turn.

A `Session` is anything with these four methods; `SQLiteSession` is the embedded default.
`Agent.run(prompt, session=...)` loads the conversation, runs, and appends each completed turn
(the assistant's message with its tool results, or the final answer) atomically.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, runtime_checkable

__all__ = ["Session"]


@runtime_checkable
class Session(Protocol):
    """Where a conversation is kept between runs."""

    async def load(self) -> list[dict[str, Any]]:
        """Return the conversation so far (OpenAI-format messages, no system prompt)."""
        ...

    async def append(self, messages: list[dict[str, Any]]) -> None:
        """Add one completed turn's messages, all or none."""
        ...

    async def clear(self) -> None:
        """Forget the conversation."""
        ...

    def lock(self) -> AbstractAsyncContextManager[None]:
        """Hold the session for one run; raise `SessionBusyError` if another run holds it."""
        ...
