"""Tool execution: a turn's calls run concurrently, each isolated; results join the conversation.

A tool's failure becomes a `role: tool` message the model can correct itself from; a call that
repeats an earlier one is not run again (the loop guard).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError

from agent.events import (
    AgentEvent,
    ApprovalRequiredEvent,
    LoopGuardEvent,
    ToolCallFinishedEvent,
    ToolCallStartedEvent,
)
from agent.hooks import ToolCallInfo
from agent.messages import Interruption, ToolCallRecord
from agent.state import RunProgress
from agent.streaming import PendingCall
from agent.tool import ToolRetry, format_tool_output, validation_summary

__all__ = ["dispatch"]


async def _execute(state: RunProgress, call: PendingCall, turn: int) -> ToolCallRecord:
    """Run one tool call; never raises for the tool's own failures."""
    cfg = state.config
    args: dict[str, Any] | str = (
        call.arguments if call.arguments is not None else call.arguments_text
    )
    record = ToolCallRecord.model_construct(
        id=call.id,
        name=call.name,
        arguments=args,
        result=None,
        error=None,
        seconds=0.0,
        turn=turn,
        skipped=None,
    )
    tool = cfg.registry.get(call.name)
    if tool is None:
        available = ", ".join(cfg.registry.names) or "none"
        record.error = f"unknown tool {call.name!r}; available tools: {available}"
        return record
    if call.arguments is None:
        record.error = f"{call.error}; send the arguments as one JSON object"
        state.failures[tool.name] = state.failures.get(tool.name, 0) + 1
        return record
    failures = state.failures.get(tool.name, 0)
    if failures > tool.max_retries:
        record.error = (
            f"tool {tool.name!r} failed {failures} times in this run and is not run again; "
            "answer with what you have"
        )
        return record
    hooks = cfg.hooks
    if hooks:
        await hooks.call(
            "on_tool_start", state.ctx, ToolCallInfo(call.id, tool.name, call.arguments, turn)
        )
    started = time.perf_counter()
    try:
        kwargs = tool.validate(call.arguments)
        value = await tool.invoke(kwargs)
        record.result = format_tool_output(value)
    except ValidationError as exc:
        record.error = validation_summary(exc)
    except ToolRetry as exc:
        record.error = str(exc)
    except TimeoutError:
        record.error = f"tool {tool.name!r} timed out after {tool.timeout} s"
    except Exception as exc:  # a tool's failure goes to the model, never to the caller
        record.error = f"{type(exc).__name__}: {exc}"
    record.seconds = time.perf_counter() - started
    if record.error is not None:
        state.failures[tool.name] = failures + 1
    if hooks:
        await hooks.call("on_tool_end", state.ctx, record)
    return record


async def dispatch(
    state: RunProgress,
    calls: list[PendingCall],
    decided: dict[str, str | None] | None = None,
) -> AsyncIterator[AgentEvent]:
    """Run a turn's calls concurrently; append their results in the order they were emitted.

    Calls that need a person's approval do not run: the others do, and the turn stays open
    (`state.interruptions`, `state.held`) until `decided` (call id -> None for approved, or the
    rejection's reason) comes back with `Agent.resume`.
    """
    turn = state.turns
    records: list[ToolCallRecord | None] = [None] * len(calls)
    to_run: list[tuple[int, PendingCall]] = []
    waiting: list[PendingCall] = []
    done = {record.id: record for record in state.held}
    state.held = []
    for i, call in enumerate(calls):
        kind, record = _triage(state, call, decided, done)
        args = call.arguments if call.arguments is not None else call.arguments_text
        if kind == "run":
            to_run.append((i, call))
            yield ToolCallStartedEvent(call.id, call.name, args, turn)
        elif kind == "wait":
            waiting.append(call)
            yield ApprovalRequiredEvent(call.id, call.name, args, turn)
        else:
            records[i] = record
            if kind == "guarded":
                assert record is not None and record.skipped is not None
                state.guarded.append(f"turn {turn}: {call.name}({call.arguments_text})")
                yield LoopGuardEvent(call.name, args, record.skipped, turn)
            elif kind == "rejected":
                assert record is not None
                yield ToolCallFinishedEvent(record)
    async for record_at in _run_all(state, to_run):
        i, record = record_at
        records[i] = record
        yield ToolCallFinishedEvent(record)
    if waiting:
        state.interruptions = [
            Interruption(id=c.id, name=c.name, arguments=c.arguments or {}) for c in waiting
        ]
        state.held = [r for r in records if r is not None]
        return
    _append_results(state, calls, records)


def _triage(
    state: RunProgress,
    call: PendingCall,
    decided: dict[str, str | None] | None,
    done: dict[str, ToolCallRecord],
) -> tuple[str, ToolCallRecord | None]:
    """Decide what happens to one call: "run", "wait", "guarded", "rejected" or "done"."""
    if call.id in done:
        return "done", done[call.id]  # it ran before the run stopped for approval
    args = call.arguments if call.arguments is not None else call.arguments_text
    decision = decided.get(call.id, "") if decided is not None else ""
    if decision:
        record = ToolCallRecord(
            id=call.id,
            name=call.name,
            arguments=args,
            error=f"the user rejected this call: {decision}",
            turn=state.turns,
        )
        return "rejected", record
    previous = state.seen.get((call.name, call.arguments_text))
    if state.config.loop_guard and previous is not None:
        reason = "repeated call: same tool and arguments as an earlier call in this run"
        record = ToolCallRecord(
            id=call.id,
            name=call.name,
            arguments=args,
            result=previous.result,
            error=previous.error,
            turn=state.turns,
            skipped=reason,
        )
        state.tools_off_next_turn = True  # repeats: the model is stuck; ask once without tools
        return "guarded", record
    approved = decision is None
    tool = state.config.registry.get(call.name)
    asks = tool is not None and call.arguments is not None and not approved
    if asks and tool is not None and tool.approval_needed(call.arguments or {}):
        return "wait", None
    return "run", None


async def _run_all(
    state: RunProgress, to_run: list[tuple[int, PendingCall]]
) -> AsyncIterator[tuple[int, ToolCallRecord]]:
    """Run the calls concurrently (at most `tool_concurrency` at once); yield them as they end."""
    turn = state.turns
    cfg = state.config
    if len(to_run) == 1:
        i, call = to_run[0]
        yield i, await _execute(state, call, turn)
        return
    if not to_run:
        return
    sem = asyncio.Semaphore(cfg.tool_concurrency) if cfg.tool_concurrency else None

    async def one(i: int, call: PendingCall) -> tuple[int, ToolCallRecord]:
        if sem is None:
            return i, await _execute(state, call, turn)
        async with sem:
            return i, await _execute(state, call, turn)

    tasks = [asyncio.ensure_future(one(i, call)) for i, call in to_run]
    try:
        for next_done in asyncio.as_completed(tasks):
            yield await next_done
    finally:
        for t in tasks:
            t.cancel()


def _append_results(
    state: RunProgress, calls: list[PendingCall], records: list[ToolCallRecord | None]
) -> None:
    """Add the turn's records and tool messages, in the order the model emitted the calls."""
    for call, rec in zip(calls, records, strict=True):
        assert rec is not None
        state.records.append(rec)
        if state.config.loop_guard and rec.skipped is None:
            state.seen[(call.name, call.arguments_text)] = rec
        content = rec.result if rec.error is None else f"Error: {rec.error}"
        state.messages.append({"role": "tool", "tool_call_id": call.id, "content": content or ""})
