"""The model turn: call the model once (streamed or not) and hand the loop one finished turn.

Reply clean-up happens here, before the loop sees the turn: `<think>` and tool calls written as
text are recovered for streamed and whole replies alike, and a stream never shows call markup.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from agent.errors import ModelError
from agent.events import AgentEvent, ReasoningDeltaEvent, TextDeltaEvent
from agent.hooks import ModelReply
from agent.models.base import ModelRequest, ResponseMeta
from agent.output import unusable_reason
from agent.state import RunConfig, RunProgress
from agent.streaming import (
    AssistantTurn,
    PendingCall,
    StreamAssembler,
    build_turn,
    parse_completion,
)
from agent.textcalls import Mode, ParsedCall, StreamScanner, is_markup_only, parse_tool_calls

__all__ = ["model_turn"]


def _mode(cfg: RunConfig) -> Mode | None:
    """Return how text is read as calls this run, or None when it is not."""
    if cfg.text_tool_calls == "never" or not len(cfg.registry):
        return None
    return "always" if cfg.text_tool_calls == "always" else "auto"


def _no_answer(cfg: RunConfig, content: str) -> bool:
    """Tell whether a reply's text is no answer (it is sent back to the model, not shown)."""
    return unusable_reason(content, cfg.registry.names if _mode(cfg) else None) is not None


def _repeats(call: ParsedCall, natives: list[PendingCall]) -> bool:
    """Tell whether a text call is one of the reply's native calls written out again."""
    return any(n.name == call.name and n.arguments == call.arguments for n in natives)


def _text_calls(state: RunProgress, turn: AssistantTurn) -> AssistantTurn:
    """Read tool calls the model wrote as text, when the agent is set to.

    They run after the reply's native calls, each with a fresh id; a text call repeating a
    native one exactly is dropped. While calls are read, the content is trimmed, as its
    streamed deltas are.
    """
    cfg = state.config
    mode = _mode(cfg)
    text = turn.content
    if mode is None or not text:
        return turn
    schemas: Mapping[str, Mapping[str, Any]] = {t.name: t.parameters for t in cfg.registry}
    parsed = parse_tool_calls(text, cfg.registry.names, mode=mode, schemas=schemas)
    if not parsed.calls and parsed.content == text:
        return turn
    # As JSON text, so the argument cap applies to calls written as text too.
    raw = [
        {"function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}}
        for c in parsed.calls
        if not _repeats(c, turn.calls)
    ]
    return build_turn(
        parsed.content,
        turn.reasoning or parsed.reasoning,
        raw,
        turn.usage,
        turn.finish_reason,
        max_argument_chars=cfg.max_argument_chars,
        native_calls=turn.calls,
    )


class _ShownText:
    """The text of a streamed reply shown so far; tool-call markup is held back, never shown."""

    def __init__(self, cfg: RunConfig) -> None:
        mode = _mode(cfg)
        self._scanner = None if mode is None else StreamScanner(cfg.registry.names, mode=mode)
        self._cfg = cfg
        self._shown: list[str] = []
        # The start of a reply is held while it may yet be no answer (only markup such as
        # `<tools></tools>`, or wholly a call to a tool not offered): such a reply is not shown.
        self._lead: str | None = ""
        self._held_to_end = False

    def feed(self, piece: str) -> str:
        """Take the reply's next piece of text; return the part that may be shown now."""
        if self._scanner is None:
            delta = piece
        else:
            # Only the new part: building the whole view on every piece is quadratic.
            self._scanner.feed(piece)
            delta = self._scanner.take_content()
            if not delta:
                return ""
        if self._lead is not None:
            if self._held_to_end:
                return ""  # the rest comes out in `finish`, if it is an answer
            lead = self._lead + delta  # short: only markup and whitespace so far
            # A reply that opens like a call may be wholly one to a tool not offered: held.
            self._held_to_end = self._scanner is not None and lead.lstrip().startswith(
                ("<tool_call>", "{")
            )
            if self._held_to_end or is_markup_only(lead, partial=True):
                self._lead = lead
                return ""
            delta, self._lead = lead, None
        self._shown.append(delta)
        return delta

    def finish(self, content: str) -> str:
        """Return the rest of the finished turn's content, not shown yet.

        Held-back text that turned out not to be a call comes out here, so the deltas add up
        to the content; of a reply with no answer in it (`unusable_reason`), nothing more.
        """
        if _no_answer(self._cfg, content):
            return ""
        shown = "".join(self._shown)
        return content[len(shown) :] if content.startswith(shown) else ""


async def model_turn(
    state: RunProgress, request: ModelRequest, stream: bool
) -> AsyncIterator[AgentEvent | AssistantTurn]:
    """Call the model once; yield deltas, and last the assembled, cleaned-up turn.

    The model hooks run around it: `on_model_request` before, `on_model_response` with the
    assembled reply, `on_model_error` when the call fails.
    """
    hooks = state.config.hooks
    if hooks:
        await hooks.call("on_model_request", state.ctx, request)
    seen: dict[str, str] = {}  # the reply's own model name and id, as the provider gave them
    try:
        replies = _streamed(state, request, seen) if stream else _whole(state, request, seen)
        async for item in replies:
            if hooks and isinstance(item, AssistantTurn):
                reply = ModelReply(
                    item.message, item.usage, item.finish_reason, seen.get("model"), seen.get("id")
                )
                await hooks.call("on_model_response", state.ctx, reply)
            yield item
    except ModelError as exc:
        if hooks:
            await hooks.call("on_model_error", state.ctx, exc)
        raise


async def _whole(
    state: RunProgress, request: ModelRequest, seen: dict[str, str]
) -> AsyncIterator[AgentEvent | AssistantTurn]:
    turn = state.turns
    response = await state.config.model.complete(request)
    if response.meta.balance is not None:
        state.balance = response.meta.balance
    _note_identity(response.body, seen)
    assistant = _text_calls(
        state,
        parse_completion(response.body, max_argument_chars=state.config.max_argument_chars),
    )
    if assistant.reasoning:
        yield ReasoningDeltaEvent(assistant.reasoning, turn)
    text = assistant.content
    if text and not assistant.calls and not _no_answer(state.config, text):
        yield TextDeltaEvent(text, turn)
    yield assistant


async def _streamed(
    state: RunProgress, request: ModelRequest, seen: dict[str, str]
) -> AsyncIterator[AgentEvent | AssistantTurn]:
    turn = state.turns
    meta = ResponseMeta()
    assembler = StreamAssembler(max_argument_chars=state.config.max_argument_chars)
    shown = _ShownText(state.config)
    async for chunk in state.config.model.stream(request, meta):
        if not seen:
            _note_identity(chunk, seen)
        text, reasoning = assembler.feed(chunk)
        if reasoning:
            yield ReasoningDeltaEvent(reasoning, turn)
        delta = shown.feed(text) if text else ""
        if delta:
            yield TextDeltaEvent(delta, turn)
    if meta.balance is not None:
        state.balance = meta.balance
    assistant = _text_calls(state, assembler.finish())
    rest = shown.finish(assistant.content)
    if rest:
        yield TextDeltaEvent(rest, turn)
    yield assistant


def _note_identity(body: dict[str, Any], seen: dict[str, str]) -> None:
    for key in ("model", "id"):
        value = body.get(key)
        if isinstance(value, str) and value:
            seen[key] = value
