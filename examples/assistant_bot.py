"""An office assistant that remembers its conversations and asks before it acts.

Run it against DashScope:

    DASHSCOPE_API_KEY=... python examples/assistant_bot.py --user ada

Each user's conversation is kept in a SQLite file (`--db`, default `assistant.db`), so the bot
remembers it the next time it starts, even after a crash. Booking a meeting room needs your
approval: the run stops before the booking, the bot asks y/N, and resumes with your answer (a
"no" goes back to the model with your reason). Looking the rooms up needs none. End with /quit or
EOF (Ctrl-D); /forget clears the conversation. Any other endpoint works through
QWENLOOP_PROVIDER, QWENLOOP_BASE_URL, QWENLOOP_API_KEY and QWENLOOP_MODEL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from agent import Agent, AgentError, RunResult, SQLiteSession, tool

ROOMS = {"Lotus": 4, "Bamboo": 8, "Pine": 12}
BOOKINGS: list[str] = []


@tool
def free_rooms(people: int) -> list[str]:
    """List the meeting rooms that seat at least `people`.

    Args:
        people: How many people will attend.
    """
    return [name for name, seats in ROOMS.items() if seats >= people]


@tool(needs_approval=True)
def book_room(room: str, start: str, hours: float) -> str:
    """Book a meeting room.

    Args:
        room: The room's name.
        start: When the meeting starts, e.g. "2026-12-01 10:00".
        hours: How long it lasts.
    """
    if room not in ROOMS:
        raise ValueError(f"no room called {room!r}; rooms: {', '.join(ROOMS)}")
    BOOKINGS.append(f"{room} {start} {hours}h")
    return f"booked {room} from {start} for {hours} h"


def ask(question: str) -> str | None:
    """Print the question and read a line; None at the end of input."""
    print(question, end=" ", flush=True)
    line = sys.stdin.readline()
    print()
    return line.strip() if line else None


async def answer(agent: Agent, message: str, session: SQLiteSession) -> RunResult:
    """Run one message; whenever a call waits for approval, ask, then resume."""
    result = await agent.run(message, session=session)
    while result.interruptions and (state := result.state) is not None:
        approve: list[str] = []
        reject: dict[str, str] = {}
        for call in result.interruptions:
            args = json.dumps(call.arguments, ensure_ascii=False)
            reply = ask(f"  [approve?] {call.name} {args} [y/N]") or ""
            if reply.lower() in ("y", "yes"):
                approve.append(call.id)
            else:
                reject[call.id] = "the user declined"
        result = await agent.resume(state, approve=approve, reject=reject, session=session)
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--user", default="me", help="whose conversation to continue")
    parser.add_argument("--db", default="assistant.db", help="where conversations are kept")
    args = parser.parse_args()
    session = SQLiteSession(args.db, args.user)
    async with Agent(
        tools=[free_rooms, book_room],
        instructions="You are an office assistant. Book rooms with the tools; be brief.",
    ) as agent:
        while True:
            line = ask("you>")
            if line is None or line in ("/quit", "/exit"):
                break
            if not line:
                continue
            if line == "/forget":
                await session.clear()
                print("(forgotten)")
                continue
            try:
                result = await answer(agent, line, session)
            except AgentError as exc:
                print(f"bot> sorry, that failed: {exc}")
                continue
            for record in result.tool_calls:
                outcome = record.result if record.error is None else f"error: {record.error}"
                print(f"  [tool] {record.name} -> {outcome}")
            print(f"bot> {result.output}")


if __name__ == "__main__":
    asyncio.run(main())
