"""Human approval: runs that stop before a tool call and resume later, even in another process."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent import (
    Agent,
    ApprovalRequiredEvent,
    RunEndEvent,
    RunState,
    ToolCallFinishedEvent,
    UserError,
    tool,
)
from agent.errors import SessionBusyError
from agent.testing import ScriptedServer, text_reply, tool_calls_reply

RAN: list[str] = []


@tool(needs_approval=True)
def send_money(to: str, amount: float) -> str:
    """Send money."""
    RAN.append(f"send_money {to} {amount}")
    return f"sent {amount} to {to}"


@tool
def balance() -> str:
    """The account balance."""
    RAN.append("balance")
    return "100.00"


@tool(needs_approval=lambda args: args["amount"] > 50)
def pay(to: str, amount: float) -> str:
    """Pay someone; large amounts need approval."""
    RAN.append(f"pay {to} {amount}")
    return "paid"


@pytest.fixture(autouse=True)
def clear_ran() -> None:
    RAN.clear()


def stop_then_answer(server: ScriptedServer) -> None:
    server.script(
        tool_calls_reply([("balance", {}), ("send_money", {"to": "bob", "amount": 20})]),
        text_reply("Sent 20 to bob; your balance was 100."),
    )


async def test_a_run_stops_before_the_call_and_keeps_the_others():
    with ScriptedServer() as server:
        stop_then_answer(server)
        agent = Agent("qwen-plus", base_url=server.url, tools=[balance, send_money])
        result = await agent.run("pay bob 20")
        assert RAN == ["balance"]  # the other call of the turn ran; the money did not move
        (waiting,) = result.interruptions
        assert (waiting.name, waiting.arguments) == ("send_money", {"to": "bob", "amount": 20})
        assert result.output == "" and result.state is not None
        assert result.messages[-1]["role"] == "assistant"  # no half turn in the conversation
        assert [r.name for r in result.tool_calls] == []
        assert len(server.requests) == 1

        resumed = await agent.resume(result.state, approve=[waiting.id])
        assert RAN == ["balance", "send_money bob 20.0"]
        assert resumed.output == "Sent 20 to bob; your balance was 100."
        assert [r.name for r in resumed.tool_calls] == ["balance", "send_money"]
        sent = server.requests[1].json["messages"]
        tool_messages = [m for m in sent if m["role"] == "tool"]
        assert [m["content"] for m in tool_messages] == ["100.00", "sent 20.0 to bob"]
        assert resumed.turns == 2 and resumed.usage.requests == 2
        await agent.aclose()


async def test_a_rejected_call_goes_back_to_the_model_with_the_reason():
    with ScriptedServer() as server:
        stop_then_answer(server)
        agent = Agent("qwen-plus", base_url=server.url, tools=[balance, send_money])
        result = await agent.run("pay bob 20")
        assert result.state is not None
        call_id = result.interruptions[0].id
        resumed = await agent.resume(result.state, reject={call_id: "bob is not a known payee"})
        assert RAN == ["balance"]
        sent = server.requests[1].json["messages"]
        assert sent[-1] == {
            "role": "tool",
            "tool_call_id": call_id,
            "content": "Error: the user rejected this call: bob is not a known payee",
        }
        assert (
            resumed.tool_calls[1].error == "the user rejected this call: bob is not a known payee"
        )
        await agent.aclose()


async def test_the_decision_can_depend_on_the_arguments():
    with ScriptedServer() as server:
        server.script(
            tool_calls_reply(
                [("pay", {"to": "ann", "amount": 10}), ("pay", {"to": "bo", "amount": 90})]
            ),
            text_reply("done"),
        )
        agent = Agent("qwen-plus", base_url=server.url, tools=[pay])
        result = await agent.run("pay")
        assert RAN == ["pay ann 10.0"]
        assert [i.arguments["to"] for i in result.interruptions] == ["bo"]
        assert result.state is not None
        await agent.resume(result.state, approve=[result.interruptions[0].id])
        assert RAN == ["pay ann 10.0", "pay bo 90.0"]
        await agent.aclose()


async def test_streaming_shows_the_wait_and_resume_streams():
    with ScriptedServer() as server:
        stop_then_answer(server)
        agent = Agent("qwen-plus", base_url=server.url, tools=[balance, send_money])
        events = [e async for e in agent.stream("pay bob 20")]
        waits = [e for e in events if isinstance(e, ApprovalRequiredEvent)]
        assert [(e.name, e.arguments) for e in waits] == [
            ("send_money", {"to": "bob", "amount": 20})
        ]
        result = events[-1].result  # type: ignore[union-attr]
        assert result.interruptions and result.state is not None
        later = [e async for e in agent.resume_stream(result.state, approve=[waits[0].call_id])]
        finished = [e.record.name for e in later if isinstance(e, ToolCallFinishedEvent)]
        assert finished == ["send_money"]  # balance is not run (or reported) again
        assert isinstance(later[-1], RunEndEvent)
        assert later[-1].result.output.startswith("Sent 20")
        await agent.aclose()


def test_resume_sync_and_the_rules_of_resuming():
    with ScriptedServer() as server:
        stop_then_answer(server)
        agent = Agent("qwen-plus", base_url=server.url, tools=[balance, send_money])
        result = agent.run_sync("pay bob 20")
        state = result.state
        assert state is not None
        call_id = result.interruptions[0].id
        with pytest.raises(UserError, match="decide every waiting call"):
            agent.resume_sync(state)
        with pytest.raises(UserError, match="not waiting for approval: nope"):
            agent.resume_sync(state, approve=[call_id, "nope"])
        with pytest.raises(UserError, match="both approved and rejected"):
            agent.resume_sync(state, approve=[call_id], reject={call_id: "no"})
        other = Agent("qwen-max", base_url=server.url, tools=[balance, send_money])
        with pytest.raises(UserError, match="for model 'qwen-plus'"):
            other.resume_sync(state, approve=[call_id])
        assert agent.resume_sync(state, approve=[call_id]).output.startswith("Sent")
        with pytest.raises(UserError, match="already resumed"):
            agent.resume_sync(state, approve=[call_id])
        assert RAN.count("send_money bob 20.0") == 1


def test_a_state_that_is_not_one_is_refused():
    for text in ("", "{}", "[1]", '{"version": 1}', "x" * 10):
        with pytest.raises(UserError, match="not a qwenloop run state"):
            RunState.from_json(text)


SECOND_PROCESS = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from agent import Agent, RunState, tool

    log = Path(sys.argv[2])

    @tool(needs_approval=True)
    def send_money(to: str, amount: float) -> str:
        '''Send money.'''
        with log.open("a") as f:
            f.write(f"send_money {to} {amount}\\n")
        return f"sent {amount} to {to}"

    @tool
    def balance() -> str:
        '''The account balance.'''
        with log.open("a") as f:
            f.write("balance\\n")
        return "100.00"

    state = RunState.from_json(sys.stdin.read())
    agent = Agent("qwen-plus", base_url=sys.argv[1], tools=[balance, send_money])
    result = agent.resume_sync(state, approve=[state.interruptions[0].id])
    print(result.output)
    """
)


def test_an_approval_round_trip_through_json_in_a_new_process(tmp_path: Path):
    with ScriptedServer() as server:
        stop_then_answer(server)
        agent = Agent("qwen-plus", base_url=server.url, tools=[balance, send_money])
        result = agent.run_sync("pay bob 20")
        assert result.state is not None
        text = result.state.to_json()
        assert "sk-" not in text and json.loads(text)["interruptions"][0]["name"] == "send_money"
        script = tmp_path / "resume.py"
        script.write_text(SECOND_PROCESS)
        log = tmp_path / "ran.log"
        done = subprocess.run(
            [sys.executable, str(script), server.url, str(log)],
            input=text,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "Sent 20 to bob; your balance was 100."
        assert log.read_text().splitlines() == ["send_money bob 20.0"]  # balance not again
        assert RAN == ["balance"]


class MemorySession:
    """A Session kept in memory, to check what the loop commits around a stop."""

    def __init__(self) -> None:
        self.turns: list[list[dict[str, Any]]] = []
        self.busy = False

    async def load(self) -> list[dict[str, Any]]:
        return [m for turn in self.turns for m in turn]

    async def append(self, messages: list[dict[str, Any]]) -> None:
        self.turns.append(list(messages))

    async def clear(self) -> None:
        self.turns.clear()

    @contextlib.asynccontextmanager
    async def lock(self) -> AsyncIterator[None]:
        if self.busy:
            raise SessionBusyError("busy")
        self.busy = True
        try:
            yield
        finally:
            self.busy = False


async def test_a_session_keeps_no_half_turn_across_a_stop():
    with ScriptedServer() as server:
        stop_then_answer(server)
        agent = Agent("qwen-plus", base_url=server.url, tools=[balance, send_money])
        session = MemorySession()
        result = await agent.run("pay bob 20", session=session)
        assert session.turns == []  # the open turn is not kept
        assert result.state is not None
        await agent.resume(result.state, approve=[result.interruptions[0].id], session=session)
        kept = await session.load()
        assert [m["role"] for m in kept] == ["user", "assistant", "tool", "tool", "assistant"]
        assert len(session.turns) == 2  # the stopped turn, then the answer
        await agent.aclose()


def test_a_state_whose_calls_are_malformed_is_a_typed_error():
    with ScriptedServer() as server:
        stop_then_answer(server)
        agent = Agent("qwen-plus", base_url=server.url, tools=[balance, send_money])
        result = agent.run_sync("pay bob 20")
        assert result.state is not None
        call_id = result.interruptions[0].id
        for bad in (["not a call"], [{"id": call_id, "function": "send_money"}], "calls"):
            data = json.loads(result.state.to_json())
            data["messages"][-1]["tool_calls"] = bad
            with pytest.raises(UserError, match="run state"):
                agent.resume_sync(RunState.from_json(json.dumps(data)), approve=[call_id])
        assert RAN == ["balance"]
