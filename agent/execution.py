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

from agent.events import AgentEvent, LoopGuardEvent, ToolCallFinishedEvent, ToolCallStartedEvent
from agent.hooks import ToolCallInfo
from agent.messages import ToolCallRecord
from agent.state import RunState
from agent.streaming import PendingCall
from agent.tool import ToolRetry, format_tool_output, validation_summary

__all__ = ["dispatch"]


async def _execute(state: RunState, call: PendingCall, turn: int) -> ToolCallRecord:
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


async def dispatch(state: RunState, calls: list[PendingCall]) -> AsyncIterator[AgentEvent]:
    """Run a turn's calls concurrently; append their results in the order they were emitted."""
    turn = state.turns
    cfg = state.config
    records: list[ToolCallRecord | None] = [None] * len(calls)
    to_run: list[tuple[int, PendingCall]] = []
    for i, call in enumerate(calls):
        key = (call.name, call.arguments_text)
        previous = state.seen.get(key) if cfg.loop_guard else None
        if previous is not None:
            args = call.arguments if call.arguments is not None else call.arguments_text
            reason = "repeated call: same tool and arguments as an earlier call in this run"
            records[i] = ToolCallRecord(
                id=call.id,
                name=call.name,
                arguments=args,
                result=previous.result,
                error=previous.error,
                turn=turn,
                skipped=reason,
            )
            state.guarded.append(f"turn {turn}: {call.name}({call.arguments_text})")
            yield LoopGuardEvent(call.name, args, reason, turn)
        else:
            to_run.append((i, call))
            args = call.arguments if call.arguments is not None else call.arguments_text
            yield ToolCallStartedEvent(call.id, call.name, args, turn)
    if len(to_run) < len(calls):
        # Repeats are a sign the model is stuck: ask once more without tools.
        state.tools_off_next_turn = True
    if len(to_run) == 1:
        i, call = to_run[0]
        record = await _execute(state, call, turn)
        records[i] = record
        yield ToolCallFinishedEvent(record)
    elif to_run:
        sem = asyncio.Semaphore(cfg.tool_concurrency) if cfg.tool_concurrency else None

        async def one(i: int, call: PendingCall) -> tuple[int, ToolCallRecord]:
            if sem is None:
                return i, await _execute(state, call, turn)
            async with sem:
                return i, await _execute(state, call, turn)

        tasks = [asyncio.ensure_future(one(i, call)) for i, call in to_run]
        try:
            for next_done in asyncio.as_completed(tasks):
                i, record = await next_done
                records[i] = record
                yield ToolCallFinishedEvent(record)
        finally:
            for t in tasks:
                t.cancel()
    for call, rec in zip(calls, records, strict=True):
        assert rec is not None
        state.records.append(rec)
        if cfg.loop_guard and rec.skipped is None:
            state.seen[(call.name, call.arguments_text)] = rec
        content = rec.result if rec.error is None else f"Error: {rec.error}"
        state.messages.append({"role": "tool", "tool_call_id": call.id, "content": content or ""})
