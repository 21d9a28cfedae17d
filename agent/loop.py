"""One run, turn by turn: render → call the model → dispatch tool calls → append results → stop?

`run_events` is the whole loop as an async generator of events; `Agent.run`, `run_sync` and
`stream` all drive it, so they share one semantics. Tool calls of a turn run concurrently, each
isolated: a failure becomes a `role: tool` message the model can correct itself from.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from agent.errors import (
    AgentError,
    MaxTurnsExceeded,
    OutputValidationError,
    TruncatedReplyError,
    UsageLimitExceeded,
)
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
    MAX_ARGUMENT_CHARS,
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
        output_type: A pydantic model the final answer must validate as (structured output).
        output_retries: Replies that failed validation the model may correct.
        json_schema_format: Ask with `response_format` json_schema (else json_object and the
            schema in the prompt).
        force_tool_choice: The tool_choice of the first turn ("required" or a named function);
            later turns use "auto" so the run can end.
        emulate_required: The provider lacks tool_choice "required": re-ask a turn that
            answered without calling a tool.
        required_retries: Turns that may be re-asked when "required" is emulated.
        max_total_tokens: Stop with UsageLimitExceeded past this many tokens.
        max_cost: Stop with UsageLimitExceeded past this cost in CNY.
        accept_truncated: Accept a final answer cut by the token limit (marked in the result)
            instead of raising TruncatedReplyError. A cut tool call never runs either way.
        max_argument_chars: Longer tool-call arguments go back to the model as an error.
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
    output_type: type[BaseModel] | None = None
    output_retries: int = 2
    json_schema_format: bool = False
    force_tool_choice: Any = None
    emulate_required: bool = False
    required_retries: int = 1
    max_total_tokens: int | None = None
    max_cost: float | None = None
    accept_truncated: bool = False
    max_argument_chars: int = MAX_ARGUMENT_CHARS


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
    parsed: Any = None
    output_failures: int = 0
    required_misses: int = 0
    truncated: bool = False

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
            parsed=self.parsed,
            truncated=self.truncated,
        )


def _request(state: RunState) -> ModelRequest:
    cfg = state.config
    messages = state.messages
    if cfg.system_prompt is not None or (cfg.output_type and not cfg.json_schema_format):
        text = cfg.system_prompt() if cfg.system_prompt is not None else None
        if cfg.output_type is not None and not cfg.json_schema_format:
            text = ((text + "\n\n") if text else "") + _schema_instruction(cfg.output_type)
        if text is not None:
            system = {"role": "system", "content": text}
            if messages and messages[0].get("role") == "system":
                messages[0] = system
            else:
                messages.insert(0, system)
    if any("reasoning_content" in m for m in messages):
        # Reasoning goes back only on tool-call turns, and only where the provider wants it.
        messages = [
            m
            if "reasoning_content" not in m or (cfg.send_reasoning and m.get("tool_calls"))
            else {k: v for k, v in m.items() if k != "reasoning_content"}
            for m in messages
        ]
    params, extra = cfg.settings.split()
    if cfg.output_type is not None:
        params["response_format"] = _response_format(cfg.output_type, cfg.json_schema_format)
    if cfg.force_tool_choice is not None and state.turns == 1:
        params["tool_choice"] = cfg.force_tool_choice
    tools: list[dict[str, Any]] | None = cfg.registry.schemas() or None
    if state.tools_off_next_turn:
        tools = None
        params.pop("tool_choice", None)
        params.pop("parallel_tool_calls", None)
    elif tools is None:
        params.pop("tool_choice", None)
        params.pop("parallel_tool_calls", None)
    return ModelRequest(cfg.model.model_name, list(messages), tools, params, extra)


def _schema_instruction(output_type: type[BaseModel]) -> str:
    schema = json.dumps(output_type.model_json_schema(), ensure_ascii=False)
    return (
        "Reply with one JSON object only, no prose and no code fence, that matches this JSON "
        f"schema:\n{schema}"
    )


def _response_format(output_type: type[BaseModel], json_schema: bool) -> dict[str, Any]:
    if not json_schema:
        return {"type": "json_object"}
    return {
        "type": "json_schema",
        "json_schema": {
            "name": output_type.__name__,
            "schema": output_type.model_json_schema(),
            "strict": False,
        },
    }


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def _check_output(state: RunState, assistant: AssistantTurn) -> bool:
    """Validate structured output; on failure ask again (bounded). True when the run may end."""
    cfg = state.config
    assert cfg.output_type is not None
    text = assistant.content
    fenced = _FENCE.match(text)
    try:
        state.parsed = cfg.output_type.model_validate_json(fenced.group(1) if fenced else text)
        return True
    except ValidationError as exc:
        errors = _validation_summary(exc).removeprefix("invalid arguments: ")
        if state.output_failures >= cfg.output_retries:
            raise OutputValidationError(
                f"the model's reply did not validate as {cfg.output_type.__name__} after "
                f"{state.output_failures + 1} tries: {errors}",
                raw_text=text,
                errors=exc.errors(),
            ) from None
        state.output_failures += 1
        state.messages.append(
            {
                "role": "user",
                "content": f"Your reply did not validate: {errors}. Reply again with only the "
                "corrected JSON object.",
            }
        )
        return False


def _check_limits(state: RunState) -> None:
    cfg = state.config
    if cfg.max_total_tokens is not None and state.usage.total_tokens > cfg.max_total_tokens:
        raise UsageLimitExceeded(
            f"the run used {state.usage.total_tokens} tokens, over its budget of "
            f"{cfg.max_total_tokens}; raise the limit or shorten the task",
            limit="total_tokens",
            value=state.usage.total_tokens,
            maximum=cfg.max_total_tokens,
        )
    if cfg.max_cost is not None and (state.cost or 0.0) > cfg.max_cost:
        raise UsageLimitExceeded(
            f"the run cost {state.cost:.6f} CNY, over its budget of {cfg.max_cost} CNY",
            limit="cost",
            value=state.cost or 0.0,
            maximum=cfg.max_cost,
        )


def _check_truncation(state: RunState, assistant: AssistantTurn) -> None:
    """Handle a reply cut by the token limit: never run its calls; accept its text if allowed."""
    if not assistant.calls and state.config.accept_truncated:
        state.truncated = True
        return
    state.usage.add(assistant.usage)  # the cut reply was billed all the same
    names = [call.name for call in assistant.calls]
    what = f"a call to {', '.join(names)}" if names else "the answer"
    raise TruncatedReplyError(
        f"the model's reply was cut by the token limit (finish_reason 'length') in {what}; "
        "raise max_tokens"
        + ("" if names else ", or pass accept_truncated=True to accept a cut answer"),
        text=assistant.content,
        tool_calls=names,
    )


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


async def _model_turn(
    state: RunState, request: ModelRequest, stream: bool, turn: int
) -> AsyncIterator[AgentEvent | AssistantTurn]:
    """Call the model once; yield deltas, and last the assembled turn."""
    model = state.config.model
    if not stream:
        response = await model.complete(request)
        if response.meta.balance is not None:
            state.balance = response.meta.balance
        assistant = parse_completion(
            response.body, max_argument_chars=state.config.max_argument_chars
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
            if assistant.finish_reason == "length":
                _check_truncation(state, assistant)
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
            _check_limits(state)
            if not assistant.calls:
                if (
                    config.emulate_required
                    and not state.records
                    and state.required_misses < config.required_retries
                ):
                    # "required" emulated: the model must call a tool first; ask again.
                    state.required_misses += 1
                    state.messages.append(
                        {
                            "role": "user",
                            "content": "Call one of the tools now; do not answer directly.",
                        }
                    )
                    continue
                if config.output_type is not None and not _check_output(state, assistant):
                    continue
                state.output = assistant.content
                yield RunEndEvent(state.result())
                return
            async for event in _dispatch(state, assistant.calls, turn):
                yield event
    except AgentError as exc:
        if exc.result is None:
            exc.result = state.result()
        raise
