"""The model turn: call the model once (streamed or not) and hand the loop one finished turn.

Reply clean-up happens here, before the loop sees the turn: `<think>` and tool calls written as
text are recovered for streamed and whole replies alike.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from agent.events import AgentEvent, ReasoningDeltaEvent, TextDeltaEvent
from agent.models.base import ModelRequest, ResponseMeta
from agent.state import RunState
from agent.streaming import AssistantTurn, StreamAssembler, build_turn, parse_completion

__all__ = ["model_turn"]

_CALL_START = re.compile(r"\s*(?:\{|\[|```|<tool_call>|<think>|.*</think>)", re.DOTALL)


def _text_calls(state: RunState, turn: AssistantTurn) -> AssistantTurn:
    """Read tool calls the model wrote as text, when the agent is set to."""
    cfg = state.config
    if turn.calls or cfg.text_tool_calls == "never" or not len(cfg.registry):
        return turn
    text = turn.content
    if not text:
        return turn
    if cfg.text_tool_calls == "auto" and not _CALL_START.match(text) and "<tool_call>" not in text:
        return turn  # cheap pre-check: ordinary prose is never parsed
    from agent.textcalls import looks_like_tool_call, parse_tool_calls

    names = cfg.registry.names
    if cfg.text_tool_calls == "auto" and not looks_like_tool_call(text, names):
        return turn
    parsed = parse_tool_calls(text, names)
    if not parsed.calls:
        return turn
    raw = [{"function": {"name": c.name, "arguments": c.arguments}} for c in parsed.calls]
    reasoning = turn.reasoning or parsed.reasoning
    return build_turn(
        parsed.content,
        reasoning,
        raw,
        turn.usage,
        turn.finish_reason,
        max_argument_chars=cfg.max_argument_chars,
    )


async def model_turn(
    state: RunState, request: ModelRequest, stream: bool
) -> AsyncIterator[AgentEvent | AssistantTurn]:
    """Call the model once; yield deltas, and last the assembled, cleaned-up turn."""
    turn = state.turns
    model = state.config.model
    if not stream:
        response = await model.complete(request)
        if response.meta.balance is not None:
            state.balance = response.meta.balance
        assistant = _text_calls(
            state,
            parse_completion(response.body, max_argument_chars=state.config.max_argument_chars),
        )
        if assistant.reasoning:
            yield ReasoningDeltaEvent(assistant.reasoning, turn)
        if assistant.content and not assistant.calls:
            yield TextDeltaEvent(assistant.content, turn)
        yield assistant
        return
    meta = ResponseMeta()
    assembler = StreamAssembler(max_argument_chars=state.config.max_argument_chars)
    async for chunk in model.stream(request, meta):
        text, reasoning = assembler.feed(chunk)
        if reasoning:
            yield ReasoningDeltaEvent(reasoning, turn)
        if text:
            yield TextDeltaEvent(text, turn)
    if meta.balance is not None:
        state.balance = meta.balance
    yield _text_calls(state, assembler.finish())
