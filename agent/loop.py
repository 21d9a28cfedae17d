"""One run, turn by turn: prepare the request → call the model → run its tool calls → stop?

`run_events` is the whole loop as an async generator of events; `Agent.run`, `run_sync` and
`stream` all drive it, so they share one semantics. Each phase has its own module: `request`
(what is sent), `turn` (the model's reply, cleaned up), `execution` (tool calls), `output`
(checks on an answer); `state` holds what the run is given and what it accumulates.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from agent.approval import Resumption
from agent.errors import AgentError
from agent.events import AgentEvent, RunEndEvent, RunStartEvent
from agent.execution import dispatch
from agent.messages import RunResult
from agent.output import accept_answer, record_turn
from agent.request import build_request
from agent.state import RunConfig, RunProgress
from agent.streaming import AssistantTurn
from agent.turn import model_turn

__all__ = ["RunConfig", "RunProgress", "run_events"]


async def run_events(
    config: RunConfig,
    messages: list[dict[str, Any]],
    *,
    saved: int = 0,
    resume: Resumption | None = None,
) -> AsyncIterator[AgentEvent]:
    """Drive one run to its end and yield its events; the last is a RunEndEvent.

    `saved` says how many of `messages` (after a system prompt) are already in the session;
    each completed turn after them goes to `config.checkpoint`. `resume` continues a run that
    stopped for approval (`messages` is then unused). Every error that ends the run carries the
    run so far as `error.result`, and `on_run_end` hears of every end.
    """
    if resume is None:
        state = RunProgress(config, messages, checkpointed=saved)
    else:
        state = RunProgress.restore(config, resume.saved)
    hooks = config.hooks
    yield RunStartEvent(config.model.model_name, config.search_mode)
    try:
        await hooks.call("on_run_start", state.ctx, state.messages)
        async for event in _turns(state, resume):
            yield event
    except AgentError as exc:
        if exc.result is None:
            exc.result = state.result()
        if not state.ended:
            await hooks.run_end(state.ctx, exc.result, exc)
        raise
    except BaseException as exc:  # cancelled, or the consumer closed the stream
        if not state.ended:
            with contextlib.suppress(Exception):
                await hooks.run_end(state.ctx, state.result(), exc)
        raise


async def _turns(state: RunProgress, resume: Resumption | None) -> AsyncIterator[AgentEvent]:
    """The loop itself: turn after turn until an answer, or a stop for approval."""
    if resume is not None:  # first finish the turn that waited for approval
        async for event in dispatch(state, resume.calls, resume.decided):
            yield event
        await _checkpoint(state)
    while True:
        state.begin_turn()
        request = await build_request(state)
        assistant: AssistantTurn | None = None
        async for item in model_turn(state, request, state.config.stream):
            if isinstance(item, AssistantTurn):
                assistant = item
            else:
                yield item
        assert assistant is not None
        yield record_turn(state, assistant)
        if assistant.calls:
            async for event in dispatch(state, assistant.calls):
                yield event
            if state.interruptions:  # stopped for approval: the turn stays open
                yield RunEndEvent(await _end(state))
                return
        elif accept_answer(state, assistant):
            await _checkpoint(state)
            yield RunEndEvent(await _end(state))
            return
        await _checkpoint(state)


async def _end(state: RunProgress) -> RunResult:
    state.ended = True
    result = state.result()
    await state.config.hooks.run_end(state.ctx, result, None)
    return result


async def _checkpoint(state: RunProgress) -> None:
    """Hand the messages of the turn just completed to the session, if there is one."""
    if state.config.checkpoint is not None:
        new = state.uncheckpointed()
        if new:
            await state.config.checkpoint(new)
