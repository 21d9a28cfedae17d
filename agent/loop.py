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
    config: RunConfig, messages: list[dict[str, Any]]
) -> AsyncIterator[AgentEvent]:
    """Drive one run to its end and yield its events; the last is a RunEndEvent.

    Every error that ends the run carries the run so far as `error.result`.
    """
    state = RunState(config, messages)
    yield RunStartEvent(config.model.model_name, config.search_mode)
    try:
        while True:
            state.begin_turn()
            request = build_request(state)
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
                yield RunEndEvent(state.result())
                return
    except AgentError as exc:
        if exc.result is None:
            exc.result = state.result()
        raise
