"""One run, turn by turn: prepare the request → call the model → run its tool calls → stop?

`run_events` is the whole loop as an async generator of events; `Agent.run`, `run_sync` and
`stream` all drive it, so they share one semantics. Each phase has its own module: `request`
(what is sent), `turn` (the model's reply, cleaned up), `execution` (tool calls), `output`
(checks on an answer); `state` holds what the run is given and what it accumulates.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from agent.errors import AgentError
from agent.events import AgentEvent, RunEndEvent, RunStartEvent
from agent.execution import dispatch
from agent.output import accept_answer, record_turn
from agent.request import build_request
from agent.state import RunConfig, RunState
from agent.streaming import AssistantTurn
from agent.turn import model_turn

__all__ = ["RunConfig", "RunState", "run_events"]


async def run_events(
    config: RunConfig, messages: list[dict[str, Any]], *, saved: int = 0
) -> AsyncIterator[AgentEvent]:
    """Drive one run to its end and yield its events; the last is a RunEndEvent.

    `saved` says how many of `messages` (after a system prompt) are already in the session;
    each completed turn after them goes to `config.checkpoint`. Every error that ends the run
    carries the run so far as `error.result`.
    """
    state = RunState(config, messages, checkpointed=saved)
    hooks = config.hooks
    ended = False
    yield RunStartEvent(config.model.model_name, config.search_mode)
    try:
        await hooks.call("on_run_start", state.ctx, state.messages)
        while True:
            state.begin_turn()
            request = await build_request(state)
            assistant: AssistantTurn | None = None
            async for item in model_turn(state, request, config.stream):
                if isinstance(item, AssistantTurn):
                    assistant = item
                else:
                    yield item
            assert assistant is not None
            yield record_turn(state, assistant)
            if assistant.calls:
                async for event in dispatch(state, assistant.calls):
                    yield event
            elif accept_answer(state, assistant):
                await _checkpoint(state)
                result = state.result()
                ended = True
                await hooks.run_end(state.ctx, result, None)
                yield RunEndEvent(result)
                return
            await _checkpoint(state)
    except AgentError as exc:
        if exc.result is None:
            exc.result = state.result()
        if not ended:
            await hooks.run_end(state.ctx, exc.result, exc)
        raise


async def _checkpoint(state: RunState) -> None:
    """Hand the messages of the turn just completed to the session, if there is one."""
    if state.config.checkpoint is not None:
        new = state.uncheckpointed()
        if new:
            await state.config.checkpoint(new)
