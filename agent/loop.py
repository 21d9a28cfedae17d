"""One run, turn by turn: render → call the model → dispatch tool calls → append results → stop?

`run_events` is the whole loop as an async generator of events; `Agent.run`, `run_sync` and
`stream` all drive it, so they share one semantics. Tool calls of a turn run concurrently, each
isolated: a failure becomes a `role: tool` message the model can correct itself from.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from agent.errors import AgentError, MaxTurnsExceeded
from agent.events import (
    AgentEvent,
    LoopGuardEvent,
    ReasoningDeltaEvent,
    RunEndEvent,
    RunStartEvent,
    TextDeltaEvent,
    ToolCallFinishedEvent,
    ToolCallStartedEvent,
    TurnEndEvent,
)
from agent.messages import RunResult, ToolCallRecord, TurnUsage, Usage
from agent.models.base import ChatModel, ModelRequest, ResponseMeta
from agent.settings import ModelSettings
from agent.streaming import (
    AssistantTurn,
    PendingCall,
    StreamAssembler,
    build_turn,
    parse_completion,
)
from agent.tool import ToolRegistry, ToolRetry, format_tool_output

__all__ = ["RunConfig", "RunState", "run_events"]

_CALL_START = re.compile(r"\s*(?:\{|\[|```|<tool_call>|<think>|.*</think>)", re.DOTALL)


@dataclass(slots=True)
class RunConfig:
    """Everything a run needs that does not change while it runs.

    Attributes:
        model: The backend.
        registry: The tools offered.
        settings: Request parameters (already merged with per-run overrides).
        max_turns: Model turns allowed.
        system_prompt: Renders the system prompt for a turn (None: no system prompt).
        search_mode: "server", "local" or "off", for events and the result.
        tool_concurrency: At most this many tool calls of a turn run at once (None: all).
        text_tool_calls: "auto", "always" or "never": read tool calls written as text.
        loop_guard: Do not re-run repeated calls; ask once more without tools instead.
        send_reasoning: Send `reasoning_content` of earlier turns back to the provider.
        cost: Computes a turn's cost in CNY from its usage, or returns None.
        hooks: Called with each finished turn before its tool calls run (limits, output checks).
    """

    model: ChatModel
    registry: ToolRegistry
    settings: ModelSettings
    max_turns: int
    system_prompt: Callable[[], str | None] | None = None
    search_mode: str = "off"
    tool_concurrency: int | None = None
    text_tool_calls: str = "auto"
    loop_guard: bool = True
    send_reasoning: bool = False
    cost: Callable[[Usage], float | None] | None = None
    hooks: list[Callable[[RunState, AssistantTurn], None]] = field(default_factory=list)


@dataclass(slots=True)
class RunState:
    """What a run has accumulated; turned into a RunResult at the end or on failure."""

    config: RunConfig
    messages: list[dict[str, Any]]
    usage: Usage = field(default_factory=Usage)
    turn_usage: list[TurnUsage] = field(default_factory=list)
    records: list[ToolCallRecord] = field(default_factory=list)
    turns: int = 0
    cost: float | None = None
    balance: str | None = None
    reasoning: str | None = None
    guarded: list[str] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    seen: dict[tuple[str, str], ToolCallRecord] = field(default_factory=dict)
    tools_off_next_turn: bool = False
    output: str = ""

    def result(self) -> RunResult:
        """Snapshot the run as a RunResult."""
        return RunResult.model_construct(
            output=self.output,
            messages=self.messages,
            usage=self.usage,
            turn_usage=self.turn_usage,
            tool_calls=self.records,
            turns=self.turns,
            model=self.config.model.model_name,
            search_mode=self.config.search_mode,
            cost=self.cost,
            balance=self.balance,
            reasoning=self.reasoning,
            guarded=self.guarded,
            parsed=None,
        )


def _request(state: RunState) -> ModelRequest:
    cfg = state.config
    messages = state.messages
    if cfg.system_prompt is not None:
        text = cfg.system_prompt()
        if text is not None:
            system = {"role": "system", "content": text}
            if messages and messages[0].get("role") == "system":
                messages[0] = system
            else:
                messages.insert(0, system)
    if not cfg.send_reasoning and any("reasoning_content" in m for m in messages):
        messages = [
            {k: v for k, v in m.items() if k != "reasoning_content"}
            if "reasoning_content" in m
            else m
            for m in messages
        ]
    params, extra = cfg.settings.split()
    tools: list[dict[str, Any]] | None = cfg.registry.schemas() or None
    if state.tools_off_next_turn:
        tools = None
        params.pop("tool_choice", None)
        params.pop("parallel_tool_calls", None)
    elif tools is None:
        params.pop("tool_choice", None)
        params.pop("parallel_tool_calls", None)
    return ModelRequest(cfg.model.model_name, list(messages), tools, params, extra)


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
    return build_turn(parsed.content, reasoning, raw, turn.usage, turn.finish_reason)


async def _model_turn(
    state: RunState, request: ModelRequest, stream: bool, turn: int
) -> AsyncIterator[AgentEvent | AssistantTurn]:
    """Call the model once; yield deltas, and last the assembled turn."""
    model = state.config.model
    if not stream:
        response = await model.complete(request)
        if response.meta.balance is not None:
            state.balance = response.meta.balance
        assistant = parse_completion(response.body)
        if assistant.reasoning:
            yield ReasoningDeltaEvent(assistant.reasoning, turn)
        if assistant.content and not assistant.calls:
            yield TextDeltaEvent(assistant.content, turn)
        yield assistant
        return
    meta = ResponseMeta()
    assembler = StreamAssembler()
    async for chunk in model.stream(request, meta):
        text, reasoning = assembler.feed(chunk)
        if reasoning:
            yield ReasoningDeltaEvent(reasoning, turn)
        if text:
            yield TextDeltaEvent(text, turn)
    if meta.balance is not None:
        state.balance = meta.balance
    yield assembler.finish()


def _validation_summary(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "arguments"
        parts.append(f"{loc}: {err['msg']}")
    return "invalid arguments: " + "; ".join(parts)


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
    started = time.perf_counter()
    try:
        kwargs = tool.validate(call.arguments)
        value = await tool.invoke(kwargs)
        record.result = format_tool_output(value)
    except ValidationError as exc:
        record.error = _validation_summary(exc)
    except ToolRetry as exc:
        record.error = str(exc)
    except TimeoutError:
        record.error = f"tool {tool.name!r} timed out after {tool.timeout} s"
    except Exception as exc:  # a tool's failure goes to the model, never to the caller
        record.error = f"{type(exc).__name__}: {exc}"
    record.seconds = time.perf_counter() - started
    if record.error is not None:
        state.failures[tool.name] = failures + 1
    return record


async def _dispatch(
    state: RunState, calls: list[PendingCall], turn: int
) -> AsyncIterator[AgentEvent]:
    """Run a turn's calls concurrently; append their results in the order they were emitted."""
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


async def run_events(
    config: RunConfig, messages: list[dict[str, Any]], *, stream: bool
) -> AsyncIterator[AgentEvent]:
    """Drive one run to its end and yield its events; the last is a RunEndEvent.

    Every error that ends the run carries the run so far as `error.result`.
    """
    state = RunState(config, messages)
    yield RunStartEvent(config.model.model_name, config.search_mode)
    try:
        while True:
            if state.turns >= config.max_turns:
                raise MaxTurnsExceeded(
                    f"the run used all {config.max_turns} turns without a final answer; "
                    "raise max_turns or make the task simpler",
                    max_turns=config.max_turns,
                )
            state.turns += 1
            turn = state.turns
            request = _request(state)
            state.tools_off_next_turn = False
            assistant: AssistantTurn | None = None
            async for item in _model_turn(state, request, stream, turn):
                if isinstance(item, AssistantTurn):
                    assistant = item
                else:
                    yield item
            assert assistant is not None
            assistant = _text_calls(state, assistant)
            state.messages.append(assistant.message)
            state.usage.add(assistant.usage)
            cost = config.cost(assistant.usage) if config.cost else None
            if cost is not None:
                state.cost = (state.cost or 0.0) + cost
            state.turn_usage.append(TurnUsage(turn=turn, usage=assistant.usage, cost=cost))
            if assistant.reasoning:
                state.reasoning = assistant.reasoning
            yield TurnEndEvent(
                turn, assistant.usage, assistant.finish_reason, len(assistant.calls), cost
            )
            for hook in config.hooks:
                hook(state, assistant)
            if not assistant.calls:
                state.output = assistant.content
                yield RunEndEvent(state.result())
                return
            async for event in _dispatch(state, assistant.calls, turn):
                yield event
    except AgentError as exc:
        if exc.result is None:
            exc.result = state.result()
        raise
