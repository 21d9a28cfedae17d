"""Logging and OpenTelemetry tracing, as lifecycle hooks.

`LogHooks` (always installed) logs runs and tool calls to the `qwenloop` logger; message contents
only at DEBUG, and cut short there. `OpenTelemetryHooks` (`Agent(instrument=True)`) records spans
following the OpenTelemetry GenAI semantic conventions; contents only with `capture_content`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from typing import TYPE_CHECKING, Any

from agent.errors import ConfigError
from agent.hooks import ModelReply, RunContext, RunHooks, ToolCallInfo

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from agent.messages import RunResult, ToolCallRecord, Usage
    from agent.models.base import ModelRequest

__all__ = ["LogHooks", "OpenTelemetryHooks"]

log = logging.getLogger("qwenloop")

_PREVIEW = 200  # characters of message text a DEBUG line shows


def _preview(value: Any, limit: int = _PREVIEW) -> str:
    """A value cut to `limit` characters, quoted, for a DEBUG line."""
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False, default=str)
    return repr(value[:limit]) + ("…" if len(value) > limit else "")


def _first_line(text: str, limit: int = _PREVIEW) -> str:
    line = text.strip().split("\n", 1)[0]
    return line if len(line) <= limit else line[:limit] + "…"


def _tokens(usage: Usage) -> str:
    return f"{usage.total_tokens} tokens ({usage.prompt_tokens} in, {usage.completion_tokens} out)"


class LogHooks(RunHooks):
    """Logs runs, model calls and tool calls to the `qwenloop` logger.

    INFO: a run's start and end (run id, model, turns, tokens, cost) and each tool call's start
    and end (name, call id, seconds, error). DEBUG: each model request (how many messages and
    tools) and reply (finish reason, usage, the text cut short). Nothing is formatted unless the
    logger is enabled for the level; no key ever reaches a hook.
    """

    def on_run_start(self, ctx: RunContext, messages: list[dict[str, Any]]) -> None:
        """Log the run's start."""
        if log.isEnabledFor(logging.INFO):
            log.info(
                "run %s started: model %s (%s), %d messages",
                ctx.run_id, ctx.model, ctx.provider, len(messages),
            )  # fmt: skip

    def on_run_end(self, ctx: RunContext, result: RunResult, error: BaseException | None) -> None:
        """Log the run's end: turns, tokens and cost, or the error that ended it."""
        if not log.isEnabledFor(logging.INFO):
            return
        cost = "" if result.cost is None else f", cost {result.cost:.6f} CNY"
        if error is None:
            log.info(
                "run %s ended: model %s, %d turns, %s%s",
                ctx.run_id, ctx.model, result.turns, _tokens(result.usage), cost,
            )  # fmt: skip
        else:
            log.info(
                "run %s failed: model %s, %d turns, %s%s: %s: %s",
                ctx.run_id, ctx.model, result.turns, _tokens(result.usage), cost,
                type(error).__name__, _first_line(str(error)),
            )  # fmt: skip

    def on_model_request(self, ctx: RunContext, request: ModelRequest) -> None:
        """Log a request at DEBUG: its size, and the last message cut short."""
        if log.isEnabledFor(logging.DEBUG):
            last = request.messages[-1] if request.messages else {}
            log.debug(
                "run %s turn %d: request to %s with %d messages, %d tools; last (%s): %s",
                ctx.run_id, ctx.turn, request.model, len(request.messages),
                len(request.tools or ()), last.get("role"), _preview(last.get("content") or ""),
            )  # fmt: skip

    def on_model_response(self, ctx: RunContext, reply: ModelReply) -> None:
        """Log a reply at DEBUG: finish reason, usage, the text cut short and the calls."""
        if log.isEnabledFor(logging.DEBUG):
            calls = [
                c.get("function", {}).get("name") for c in reply.message.get("tool_calls") or ()
            ]
            log.debug(
                "run %s turn %d: reply %s, finish reason %s, %s; text %s; tool calls %s",
                ctx.run_id, ctx.turn, reply.response_id or "(no id)", reply.finish_reason,
                _tokens(reply.usage), _preview(reply.message.get("content") or ""), calls,
            )  # fmt: skip

    def on_model_error(self, ctx: RunContext, error: BaseException) -> None:
        """Log a failed model call at DEBUG (the run's end logs it at INFO)."""
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "run %s turn %d: model call failed: %s",
                ctx.run_id, ctx.turn, type(error).__name__,
            )  # fmt: skip

    def on_tool_start(self, ctx: RunContext, call: ToolCallInfo) -> None:
        """Log a tool call's start (and at DEBUG its arguments, cut short)."""
        if log.isEnabledFor(logging.INFO):
            log.info("run %s: tool %s started (call %s)", ctx.run_id, call.name, call.id)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("run %s: call %s arguments %s", ctx.run_id, call.id, _preview(call.arguments))

    def on_tool_end(self, ctx: RunContext, record: ToolCallRecord) -> None:
        """Log a tool call's end: seconds taken and the error, if it failed."""
        if not log.isEnabledFor(logging.INFO):
            return
        if record.error is None:
            log.info(
                "run %s: tool %s ended in %.3f s (call %s)",
                ctx.run_id, record.name, record.seconds, record.id,
            )  # fmt: skip
        else:
            log.info(
                "run %s: tool %s failed in %.3f s (call %s): %s",
                ctx.run_id, record.name, record.seconds, record.id, _first_line(record.error),
            )  # fmt: skip


# --- OpenTelemetry ---------------------------------------------------------------------------

# GenAI semantic conventions (Development status), as of semconv 1.37+.
_OPERATION = "gen_ai.operation.name"
_PROVIDER = "gen_ai.provider.name"
_SYSTEM = "gen_ai.system"  # the name before semconv 1.37, still read by many backends
_REQUEST_MODEL = "gen_ai.request.model"
_INPUT_TOKENS = "gen_ai.usage.input_tokens"
_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
_INPUT_MESSAGES = "gen_ai.input.messages"
_OUTPUT_MESSAGES = "gen_ai.output.messages"
_ERROR_TYPE = "error.type"
_SCHEMA_URL = "https://opentelemetry.io/schemas/1.37.0"

# Request parameters as they travel (`ModelRequest.params` / `extra_body`) → attribute.
_REQUEST_PARAMS = {
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "seed": "gen_ai.request.seed",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "stop": "gen_ai.request.stop_sequences",
    "n": "gen_ai.request.choice.count",
}
_INT64_MAX = 2**63 - 1
_EXCEPTION_NAME = re.compile(r"([A-Z][A-Za-z0-9_]*): ")


def _import_trace() -> Any:
    try:
        from opentelemetry import trace
    except ImportError:
        raise ConfigError(
            "instrument=True needs OpenTelemetry: pip install 'qwenloop[otel]'"
        ) from None
    return trace


class _RunSpans:
    """The spans of one run that are still open, kept in `ctx.data`.

    Every span is removed from here before it ends, so each ends exactly once; `close` ends
    whatever the run left open. A run that never reported its end (its task was cancelled, its
    stream abandoned) is closed when its state is garbage collected.
    """

    __slots__ = ("chat", "closed", "run", "tools")

    def __init__(self, run: Span | None) -> None:
        self.run = run
        self.chat: Span | None = None
        self.tools: dict[tuple[str, int], Span] = {}
        self.closed = False

    def take_chat(self) -> Span | None:
        """Remove the open model-call span and return it."""
        chat, self.chat = self.chat, None
        return chat

    def close(self, error_type: str | None, description: str | None = None) -> None:
        """End every span still open, the run's last; mark them failed with `error_type`."""
        if self.closed:
            return
        self.closed = True
        left = [*self.tools.values(), *([self.chat] if self.chat else [])]
        self.tools.clear()
        self.chat = None
        run, self.run = self.run, None
        for span in [*left, *([run] if run else [])]:
            if error_type is not None:
                _fail(span, error_type, description)
            span.end()

    def __del__(self) -> None:
        if not self.closed:
            with contextlib.suppress(Exception):  # a finalizer must not raise
                self.close("cancelled", "the run ended without reporting its end")


def _call_key(call_id: str) -> tuple[str, int]:
    """Concurrent calls run in tasks of their own: the task tells calls with one id apart."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    return call_id, id(task)


def _fail(span: Span, error_type: str, description: str | None) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute(_ERROR_TYPE, error_type)
    span.set_status(Status(StatusCode.ERROR, description))


def _error_type(error: BaseException) -> str:
    return type(error).__qualname__


def _tool_error_type(error: str) -> str:
    """A low-cardinality kind for a tool's error text (the runtime keeps only the text)."""
    if error.startswith("invalid arguments:"):
        return "invalid_arguments"
    if " timed out after " in error:
        return "timeout"
    match = _EXCEPTION_NAME.match(error)
    return match.group(1) if match else "_OTHER"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _arguments(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def _content_parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "content": content}] if content else []
    parts: list[dict[str, Any]] = []
    for item in content if isinstance(content, list) else ():
        if not isinstance(item, dict):
            continue
        if item.get("type") == "text":
            parts.append({"type": "text", "content": item.get("text", "")})
        else:  # images, audio, video: the kind only, never the (possibly huge) payload
            parts.append({"type": str(item.get("type", "unknown"))})
    return parts


def _message(message: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI-format message in the semantic conventions' shape: a role and typed parts."""
    role = message.get("role", "user")
    if role == "tool":
        part = {"type": "tool_call_response", "id": message.get("tool_call_id"),
                "response": message.get("content")}  # fmt: skip
        return {"role": "tool", "parts": [part]}
    parts: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content")
    if reasoning:
        parts.append({"type": "reasoning", "content": reasoning})
    parts += _content_parts(message.get("content"))
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        parts.append({"type": "tool_call", "id": call.get("id"), "name": fn.get("name"),
                      "arguments": _arguments(fn.get("arguments"))})  # fmt: skip
    return {"role": role, "parts": parts}


def _request_attributes(request: ModelRequest) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for source in (request.params, request.extra_body):
        for name, value in source.items():
            key = _REQUEST_PARAMS.get(name)
            if key is None or value is None or isinstance(value, bool):
                continue
            if key == "gen_ai.request.stop_sequences":
                value = [value] if isinstance(value, str) else [str(v) for v in value]
            elif key == "gen_ai.request.choice.count" and value == 1:
                continue
            elif isinstance(value, int) and not -_INT64_MAX <= value <= _INT64_MAX:
                continue  # a seed beyond int64 does not fit an attribute
            attributes[key] = value
    return attributes


def _usage_attributes(usage: Usage) -> dict[str, int]:
    attributes = {_INPUT_TOKENS: usage.prompt_tokens, _OUTPUT_TOKENS: usage.completion_tokens}
    if usage.cached_prompt_tokens:
        attributes["gen_ai.usage.cache_read.input_tokens"] = usage.cached_prompt_tokens
    if usage.reasoning_tokens:
        attributes["gen_ai.usage.reasoning.output_tokens"] = usage.reasoning_tokens
    return attributes


class OpenTelemetryHooks(RunHooks):
    """Records OpenTelemetry spans for each run, following the GenAI semantic conventions.

    One `invoke_agent` span per run, a child of the span current when the run starts; under it
    a `chat {model}` span per model call and an `execute_tool {name}` span per tool call,
    parented explicitly (tool calls run in tasks of their own). The hooks never change the
    current span: a cancelled run cannot leave one of its spans current in your task. Spans go
    to the global tracer provider (or `tracer_provider`): nothing is exported unless you
    configure an exporter. Message contents, tool arguments and results are recorded only with
    `capture_content`; headers (and so the key) never are.

    Args:
        capture_content: Also record messages, tool arguments and tool results.
        tracer_provider: The provider to take the tracer from (default: the global one).

    Raises:
        ConfigError: OpenTelemetry is not installed (`pip install 'qwenloop[otel]'`).
    """

    def __init__(
        self, *, capture_content: bool = False, tracer_provider: TracerProvider | None = None
    ) -> None:
        from agent import __version__

        trace = _import_trace()
        self.capture_content = capture_content
        self._tracer: Tracer = trace.get_tracer(
            "qwenloop", __version__, tracer_provider, schema_url=_SCHEMA_URL
        )
        self._key = f"qwenloop.otel.{id(self)}"

    def _spans(self, ctx: RunContext) -> _RunSpans | None:
        spans: _RunSpans | None = ctx.data.get(self._key)
        return spans

    def _parent(self, ctx: RunContext) -> Context | None:
        """The run's span as an explicit parent: tool calls run in tasks of their own."""
        from opentelemetry import trace

        spans = self._spans(ctx)
        if spans is None or spans.run is None:
            return None
        return trace.set_span_in_context(spans.run)

    @staticmethod
    def _common(ctx: RunContext, operation: str) -> dict[str, Any]:
        provider = ctx.provider or "_OTHER"
        return {_OPERATION: operation, _PROVIDER: provider, _SYSTEM: provider}

    def on_run_start(self, ctx: RunContext, messages: list[dict[str, Any]]) -> None:
        """Open the run's `invoke_agent` span."""
        from opentelemetry.trace import SpanKind

        attributes = self._common(ctx, "invoke_agent")
        attributes[_REQUEST_MODEL] = ctx.model
        attributes["qwenloop.run.id"] = ctx.run_id
        if self.capture_content:
            attributes[_INPUT_MESSAGES] = _json([_message(m) for m in messages])
        span = self._tracer.start_span(
            "invoke_agent", kind=SpanKind.INTERNAL, attributes=attributes
        )
        previous = self._spans(ctx)
        if previous is not None:  # the same context reused for a second run
            previous.close(None)
        ctx.data[self._key] = _RunSpans(span)

    def on_run_end(self, ctx: RunContext, result: RunResult, error: BaseException | None) -> None:
        """Record the run's totals and end its span (and any it left open)."""
        spans = self._spans(ctx)
        if spans is None or spans.run is None:
            return
        run = spans.run
        run.set_attributes(_usage_attributes(result.usage))
        run.set_attribute("qwenloop.run.turns", result.turns)
        if result.cost is not None:
            run.set_attribute("qwenloop.run.cost", result.cost)
        if self.capture_content and error is None:
            last = result.messages[-1] if result.messages else None
            if last is not None and last.get("role") == "assistant":
                output = {**_message(last), "finish_reason": "stop"}
                run.set_attribute(_OUTPUT_MESSAGES, _json([output]))
        if error is None:
            spans.close(None)
        else:
            spans.close(_error_type(error), _first_line(str(error), 500))

    def on_model_request(self, ctx: RunContext, request: ModelRequest) -> None:
        """Open a `chat {model}` span under the run's."""
        from opentelemetry.trace import SpanKind

        attributes = self._common(ctx, "chat")
        attributes[_REQUEST_MODEL] = request.model
        attributes.update(_request_attributes(request))
        if self.capture_content:
            attributes[_INPUT_MESSAGES] = _json([_message(m) for m in request.messages])
            if request.tools:
                attributes["gen_ai.tool.definitions"] = _json(request.tools)
        span = self._tracer.start_span(
            f"chat {request.model}",
            context=self._parent(ctx),
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        spans = self._spans(ctx)
        if spans is None:  # no run span (hooks called on their own): end it with the reply
            spans = ctx.data[self._key] = _RunSpans(None)
        stale = spans.take_chat()
        if stale is not None:  # a request whose reply was never reported
            stale.end()
        spans.chat = span

    def on_model_response(self, ctx: RunContext, reply: ModelReply) -> None:
        """Record the reply's model, id, finish reason and usage; end the `chat` span."""
        spans = self._spans(ctx)
        span = spans.take_chat() if spans is not None else None
        if span is None:
            return
        if reply.response_model:
            span.set_attribute("gen_ai.response.model", reply.response_model)
        if reply.response_id:
            span.set_attribute("gen_ai.response.id", reply.response_id)
        if reply.finish_reason:
            span.set_attribute("gen_ai.response.finish_reasons", [reply.finish_reason])
        span.set_attributes(_usage_attributes(reply.usage))
        if self.capture_content:
            output = {**_message(reply.message), "finish_reason": reply.finish_reason}
            span.set_attribute(_OUTPUT_MESSAGES, _json([output]))
        span.end()

    def on_model_error(self, ctx: RunContext, error: BaseException) -> None:
        """Mark the `chat` span failed and end it."""
        spans = self._spans(ctx)
        span = spans.take_chat() if spans is not None else None
        if span is None:
            return
        status = getattr(error, "status_code", None)
        if isinstance(status, int):
            span.set_attribute("http.response.status_code", status)
        _fail(span, _error_type(error), _first_line(str(error), 500))
        span.end()

    def on_tool_start(self, ctx: RunContext, call: ToolCallInfo) -> None:
        """Open an `execute_tool {name}` span under the run's."""
        from opentelemetry.trace import SpanKind

        attributes = self._common(ctx, "execute_tool")
        attributes["gen_ai.tool.name"] = call.name
        attributes["gen_ai.tool.call.id"] = call.id
        attributes["gen_ai.tool.type"] = "function"
        if self.capture_content:
            attributes["gen_ai.tool.call.arguments"] = _json(call.arguments)
        span = self._tracer.start_span(
            f"execute_tool {call.name}",
            context=self._parent(ctx),
            kind=SpanKind.INTERNAL,
            attributes=attributes,
        )
        spans = self._spans(ctx)
        if spans is None:
            span.end()  # no run to keep it in: hooks called out of order
            return
        spans.tools[_call_key(call.id)] = span

    def on_tool_end(self, ctx: RunContext, record: ToolCallRecord) -> None:
        """Record the call's failure (or, with `capture_content`, its result); end its span."""
        spans = self._spans(ctx)
        span = spans.tools.pop(_call_key(record.id), None) if spans else None
        if span is None:
            return
        if record.error is not None:
            description = _first_line(record.error, 500) if self.capture_content else None
            _fail(span, _tool_error_type(record.error), description)
            if self.capture_content:
                span.set_attribute("gen_ai.tool.call.result", record.error)
        elif self.capture_content and record.result is not None:
            span.set_attribute("gen_ai.tool.call.result", record.result)
        span.end()
