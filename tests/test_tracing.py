"""OpenTelemetry spans (GenAI conventions): a real Agent over real HTTP, spans kept in memory."""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import sys

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import agent.turn
from agent import Agent, ConfigError, tool
from agent.errors import BadRequestError, ServerError
from agent.hooks import ModelReply, RunContext
from agent.messages import RunResult, Usage
from agent.models.base import ModelRequest
from agent.testing import (
    RecordedRequest,
    error_reply,
    text_reply,
    tool_call_reply,
    tool_calls_reply,
)
from agent.tracing import OpenTelemetryHooks

KEY = "sk-test-SECRET123456"
CONTENT_KEYS = {
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "gen_ai.tool.definitions",
}
# The model request/response hooks are called from agent/turn.py; until they are, the chat spans
# are checked through the hook methods alone (test_chat_span_from_the_hooks).
needs_model_hooks = pytest.mark.skipif(
    "on_model_request" not in inspect.getsource(agent.turn),
    reason="agent/turn.py does not call the model hooks yet",
)


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter):
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    yield tp
    tp.shutdown()


@pytest.fixture
def traced(make_agent, provider):
    """Build agents whose spans go to the in-memory exporter (not the global provider)."""

    def build(*tools, capture_content: bool = False, **kw):
        hooks = [OpenTelemetryHooks(capture_content=capture_content, tracer_provider=provider)]
        return make_agent(*tools, hooks=hooks, api_key=KEY, **kw)

    return build


def spans_named(exporter: InMemorySpanExporter, prefix: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name.startswith(prefix)]


def only(spans: list[ReadableSpan]) -> ReadableSpan:
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


def child_of(span: ReadableSpan, parent: ReadableSpan) -> bool:
    return (
        span.parent is not None
        and span.parent.span_id == parent.context.span_id
        and span.context.trace_id == parent.context.trace_id
    )


@tool
def get_time(tz: str) -> str:
    """Return the time in a zone.

    Args:
        tz: An IANA time zone.
    """
    return f"12:00 in {tz}"


@tool
def explode(reason: str) -> str:
    """Fail on purpose.

    Args:
        reason: Why.
    """
    raise ValueError(f"cannot: {reason}")


async def test_run_and_tool_spans(openai_server, traced, exporter):
    openai_server.script(
        tool_call_reply("get_time", {"tz": "UTC"}, id="call_1", usage=(30, 5)),
        text_reply("It is noon.", usage=(40, 7)),
    )
    result = await traced(get_time).run("What time is it?")
    assert result.output == "It is noon."

    run = only(spans_named(exporter, "invoke_agent"))
    assert run.name == "invoke_agent"
    assert run.kind is SpanKind.INTERNAL
    assert run.parent is None
    attrs = run.attributes
    assert attrs["gen_ai.operation.name"] == "invoke_agent"
    assert attrs["gen_ai.provider.name"] == "custom"
    assert attrs["gen_ai.system"] == "custom"
    assert attrs["gen_ai.request.model"] == "qwen-plus"
    assert attrs["gen_ai.usage.input_tokens"] == 70
    assert attrs["gen_ai.usage.output_tokens"] == 12
    assert attrs["qwenloop.run.turns"] == 2
    assert len(attrs["qwenloop.run.id"]) == 32
    assert run.status.status_code is StatusCode.UNSET
    assert "error.type" not in attrs

    call = only(spans_named(exporter, "execute_tool"))
    assert call.name == "execute_tool get_time"
    assert call.kind is SpanKind.INTERNAL
    assert child_of(call, run)
    assert call.attributes["gen_ai.operation.name"] == "execute_tool"
    assert call.attributes["gen_ai.tool.name"] == "get_time"
    assert call.attributes["gen_ai.tool.call.id"] == "call_1"
    assert call.attributes["gen_ai.tool.type"] == "function"
    assert call.status.status_code is StatusCode.UNSET
    assert run.start_time <= call.start_time <= call.end_time <= run.end_time

    for span in exporter.get_finished_spans():  # contents only with capture_content
        assert not CONTENT_KEYS & set(span.attributes), span.name


@needs_model_hooks
async def test_chat_spans(openai_server, traced, exporter):
    openai_server.script(
        tool_call_reply("get_time", {"tz": "UTC"}, usage=(30, 5), model="qwen-plus-2025"),
        text_reply("It is noon.", usage=(40, 7)),
    )
    settings = {"temperature": 0.2, "top_p": 0.9, "max_tokens": 300, "seed": 7}
    await traced(get_time, settings=settings).run("What time is it?")

    run = only(spans_named(exporter, "invoke_agent"))
    first, second = sorted(spans_named(exporter, "chat "), key=lambda s: s.start_time)
    for span in (first, second):
        assert span.name == "chat qwen-plus"
        assert span.kind is SpanKind.CLIENT
        assert child_of(span, run)
        assert span.attributes["gen_ai.operation.name"] == "chat"
        assert span.attributes["gen_ai.provider.name"] == "custom"
        assert span.attributes["gen_ai.request.model"] == "qwen-plus"
        assert span.attributes["gen_ai.request.temperature"] == 0.2
        assert span.attributes["gen_ai.request.top_p"] == 0.9
        assert span.attributes["gen_ai.request.max_tokens"] == 300
        assert span.attributes["gen_ai.request.seed"] == 7
        assert span.attributes["gen_ai.response.id"].startswith("chatcmpl-")
    assert first.attributes["gen_ai.response.model"] == "qwen-plus-2025"
    assert first.attributes["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert first.attributes["gen_ai.usage.input_tokens"] == 30
    assert first.attributes["gen_ai.usage.output_tokens"] == 5
    assert second.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert second.attributes["gen_ai.usage.input_tokens"] == 40
    assert second.attributes["gen_ai.usage.output_tokens"] == 7
    call = only(spans_named(exporter, "execute_tool"))
    assert first.end_time <= call.start_time <= call.end_time <= second.start_time


@needs_model_hooks
async def test_failed_model_call_marks_chat_and_run_spans(openai_server, traced, exporter):
    openai_server.script(error_reply(400, "model not found"))
    with pytest.raises(BadRequestError):
        await traced().run("hi")
    run = only(spans_named(exporter, "invoke_agent"))
    chat = only(spans_named(exporter, "chat "))
    assert child_of(chat, run)
    for span in (chat, run):
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes["error.type"] == "BadRequestError"
    assert chat.attributes["http.response.status_code"] == 400


async def test_failing_tool_span(openai_server, traced, exporter):
    openai_server.script(
        tool_call_reply("explode", {"reason": "private detail"}, id="call_x"),
        text_reply("Sorry."),
    )
    result = await traced(explode).run("Go")
    assert result.tool_calls[0].error == "ValueError: cannot: private detail"

    call = only(spans_named(exporter, "execute_tool"))
    assert call.status.status_code is StatusCode.ERROR
    assert call.status.description is None  # the error text is content
    assert call.attributes["error.type"] == "ValueError"
    assert call.attributes["gen_ai.tool.call.id"] == "call_x"
    run = only(spans_named(exporter, "invoke_agent"))
    assert run.status.status_code is StatusCode.UNSET  # the model was told; the run went on


async def test_failed_run_span(openai_server, traced, exporter):
    reply = error_reply(503, "overloaded", headers={"retry-after-ms": "1"})
    openai_server.script(reply, reply)
    with pytest.raises(ServerError):
        await traced(retries=1).run("hi")
    run = only(spans_named(exporter, "invoke_agent"))
    assert run.status.status_code is StatusCode.ERROR
    assert "overloaded" in run.status.description
    assert run.attributes["error.type"] == "ServerError"
    assert run.attributes["qwenloop.run.turns"] == 1
    assert run.attributes["gen_ai.usage.input_tokens"] == 0
    for span in exporter.get_finished_spans():
        assert span.end_time is not None


async def test_contents_with_capture_content(openai_server, traced, exporter):
    openai_server.script(
        tool_call_reply("explode", {"reason": "because"}, id="call_e"),
        tool_call_reply("get_time", {"tz": "Asia/Shanghai"}, id="call_t"),
        text_reply("It is noon in Shanghai."),
    )
    await traced(get_time, explode, capture_content=True).run("Time in Shanghai?")

    run = only(spans_named(exporter, "invoke_agent"))
    assert json.loads(run.attributes["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "Time in Shanghai?"}]}
    ]
    assert json.loads(run.attributes["gen_ai.output.messages"]) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "It is noon in Shanghai."}],
            "finish_reason": "stop",
        }
    ]
    failed, ok = sorted(spans_named(exporter, "execute_tool"), key=lambda s: s.start_time)
    assert json.loads(failed.attributes["gen_ai.tool.call.arguments"]) == {"reason": "because"}
    assert failed.attributes["gen_ai.tool.call.result"] == "ValueError: cannot: because"
    assert failed.status.description == "ValueError: cannot: because"
    assert json.loads(ok.attributes["gen_ai.tool.call.arguments"]) == {"tz": "Asia/Shanghai"}
    assert ok.attributes["gen_ai.tool.call.result"] == "12:00 in Asia/Shanghai"


@needs_model_hooks
async def test_chat_contents_with_capture_content(openai_server, traced, exporter):
    openai_server.script(
        tool_call_reply("get_time", {"tz": "UTC"}, id="call_1"), text_reply("Noon.")
    )
    await traced(get_time, capture_content=True, instructions="Be brief.").run("Time?")
    first, second = sorted(spans_named(exporter, "chat "), key=lambda s: s.start_time)
    assert json.loads(first.attributes["gen_ai.input.messages"]) == [
        {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
        {"role": "user", "parts": [{"type": "text", "content": "Time?"}]},
    ]
    tools = json.loads(first.attributes["gen_ai.tool.definitions"])
    assert tools[0]["function"]["name"] == "get_time"
    output = json.loads(first.attributes["gen_ai.output.messages"])
    assert output[0]["finish_reason"] == "tool_calls"
    assert output[0]["parts"][-1] == {
        "type": "tool_call", "id": "call_1", "name": "get_time", "arguments": {"tz": "UTC"}
    }  # fmt: skip
    sent = json.loads(second.attributes["gen_ai.input.messages"])
    assert sent[-1] == {
        "role": "tool",
        "parts": [{"type": "tool_call_response", "id": "call_1", "response": "12:00 in UTC"}],
    }


async def test_no_key_or_header_in_any_span(openai_server, traced, exporter):
    openai_server.script(tool_call_reply("get_time", {"tz": "UTC"}), text_reply("Noon."))
    await traced(get_time, capture_content=True).run("Time?")
    assert openai_server.requests[0].headers["authorization"] == f"Bearer {KEY}"
    for span in exporter.get_finished_spans():
        for name, value in span.attributes.items():
            assert KEY not in str(value), name
            assert not name.startswith(("http.request.header", "http.response.header")), name


def answer_by_city(request: RecordedRequest):
    """A model for concurrent runs: call get_time for the city asked about, then answer."""
    messages = request.json["messages"]
    city = messages[0]["content"]
    if messages[-1]["role"] == "tool":
        return text_reply(f"Done for {city}.")
    return tool_call_reply("get_time", {"tz": city}, id=f"call_{city}", delay=0.05)


async def test_concurrent_runs_keep_their_spans_apart(openai_server, traced, exporter):
    openai_server.respond_with(answer_by_city)
    agent = traced(get_time)
    results = await asyncio.gather(*(agent.run(city) for city in ("Paris", "Tokyo", "Lima")))
    assert [r.output for r in results] == ["Done for Paris.", "Done for Tokyo.", "Done for Lima."]

    runs = spans_named(exporter, "invoke_agent")
    calls = spans_named(exporter, "execute_tool")
    assert len(runs) == len(calls) == 3
    assert len({r.context.trace_id for r in runs}) == 3
    for call in calls:
        (parent,) = [r for r in runs if child_of(call, r)]
        city = call.attributes["gen_ai.tool.call.id"].removeprefix("call_")
        run_ids = {r.attributes["qwenloop.run.id"] for r in runs}
        assert parent.attributes["qwenloop.run.id"] in run_ids
        assert parent.attributes["gen_ai.usage.input_tokens"] == 40
        assert city in {"Paris", "Tokyo", "Lima"}
    assert len({c.parent.span_id for c in calls}) == 3


async def test_tools_run_in_the_callers_span(openai_server, traced, provider, exporter):
    """The hooks parent explicitly and leave the current span alone, in every task and thread."""
    seen: dict[str, int] = {}

    @tool
    def sync_probe(label: str) -> str:
        """Note the current span.

        Args:
            label: A label.
        """
        seen[label] = trace.get_current_span().get_span_context().span_id
        return label

    @tool
    async def async_probe(label: str) -> str:
        """Note the current span.

        Args:
            label: A label.
        """
        await asyncio.sleep(0.01)
        seen[label] = trace.get_current_span().get_span_context().span_id
        return label

    openai_server.script(
        tool_calls_reply(
            [
                ("sync_probe", {"label": "a"}),
                ("async_probe", {"label": "b"}),
                ("sync_probe", {"label": "c"}),
            ]
        ),
        tool_call_reply("sync_probe", {"label": "alone"}),
        text_reply("Done."),
    )
    agent = traced(sync_probe, async_probe)
    with provider.get_tracer("app").start_as_current_span("request") as outer:
        await agent.run("Probe")
        assert trace.get_current_span() is outer  # nothing of the run left current
    mine = outer.get_span_context().span_id
    assert seen == {"a": mine, "b": mine, "c": mine, "alone": mine}
    request = only(spans_named(exporter, "request"))
    run = only(spans_named(exporter, "invoke_agent"))
    assert child_of(run, request)
    calls = spans_named(exporter, "execute_tool")
    assert len(calls) == 4
    assert all(child_of(c, run) for c in calls)
    assert len({c.context.span_id for c in calls}) == 4


async def test_a_cancelled_run_ends_its_spans(openai_server, traced, exporter):
    started = asyncio.Event()

    @tool
    async def wait_forever() -> str:
        """Wait."""
        started.set()
        await asyncio.sleep(60)
        return "never"

    openai_server.script(tool_call_reply("wait_forever", {}))
    task = asyncio.create_task(traced(wait_forever).run("Wait"))
    await started.wait()
    assert trace.get_current_span() is trace.INVALID_SPAN
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    del task
    for _ in range(3):  # let the loop drop its last references to the run
        await asyncio.sleep(0)
    gc.collect()
    run = only(spans_named(exporter, "invoke_agent"))
    call = only(spans_named(exporter, "execute_tool"))
    assert child_of(call, run)
    for span in (run, call):
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes["error.type"] in {"cancelled", "CancelledError"}


async def test_chat_span_from_the_hooks(provider, exporter):
    hooks = OpenTelemetryHooks(tracer_provider=provider)
    ctx = RunContext("qwen-max", "dashscope")
    hooks.on_run_start(ctx, [{"role": "user", "content": "secret question"}])
    params = {"temperature": 0.5, "top_p": 0.8, "max_tokens": 64, "seed": 3, "stop": "END",
              "tool_choice": "auto", "n": 1}  # fmt: skip
    request = ModelRequest("qwen-max", [{"role": "user", "content": "secret question"}],
                           params=params, extra_body={"top_k": 20, "enable_search": True})  # fmt: skip
    hooks.on_model_request(ctx, request)
    message = {"role": "assistant", "content": "secret answer"}
    usage = Usage(prompt_tokens=12, completion_tokens=4, total_tokens=16, cached_prompt_tokens=8)
    hooks.on_model_response(ctx, ModelReply(message, usage, "length", "qwen-max-0919", "id-1"))
    hooks.on_model_request(ctx, request)
    hooks.on_model_error(ctx, ServerError("busy", status_code=503))
    hooks.on_run_end(ctx, RunResult(usage=usage, turns=2), None)

    run = only(spans_named(exporter, "invoke_agent"))
    ok, failed = sorted(spans_named(exporter, "chat "), key=lambda s: s.start_time)
    assert run.attributes["gen_ai.provider.name"] == "dashscope"
    assert run.attributes["gen_ai.request.model"] == "qwen-max"
    assert ok.name == "chat qwen-max" and child_of(ok, run) and child_of(failed, run)
    assert dict(ok.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "dashscope",
        "gen_ai.system": "dashscope",
        "gen_ai.request.model": "qwen-max",
        "gen_ai.request.temperature": 0.5,
        "gen_ai.request.top_p": 0.8,
        "gen_ai.request.max_tokens": 64,
        "gen_ai.request.seed": 3,
        "gen_ai.request.stop_sequences": ("END",),
        "gen_ai.request.top_k": 20,
        "gen_ai.response.model": "qwen-max-0919",
        "gen_ai.response.id": "id-1",
        "gen_ai.response.finish_reasons": ("length",),
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 4,
        "gen_ai.usage.cache_read.input_tokens": 8,
    }
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes["error.type"] == "ServerError"
    assert failed.attributes["http.response.status_code"] == 503
    assert len(exporter.get_finished_spans()) == 3


async def test_run_end_closes_spans_left_open(provider, exporter):
    hooks = OpenTelemetryHooks(tracer_provider=provider)
    ctx = RunContext("qwen-max", "dashscope")
    hooks.on_run_start(ctx, [])
    hooks.on_model_request(ctx, ModelRequest("qwen-max", []))
    error = BadRequestError("refused", status_code=400)
    hooks.on_run_end(ctx, RunResult(), error)
    hooks.on_run_end(ctx, RunResult(), error)  # a second report ends nothing twice
    spans = exporter.get_finished_spans()
    assert sorted(s.name for s in spans) == ["chat qwen-max", "invoke_agent"]
    assert all(s.attributes["error.type"] == "BadRequestError" for s in spans)


async def test_instrument_uses_the_global_provider(openai_server):
    # No provider configured: the API's no-op tracer; the run is unaffected.
    openai_server.script(text_reply("Hi."))
    async with Agent("qwen-plus", base_url=openai_server.url, api_key="t", instrument=True) as a:
        assert any(isinstance(h, OpenTelemetryHooks) for h in a.hooks.hooks)
        assert (await a.run("Hi")).output == "Hi."


def test_instrument_without_opentelemetry_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ConfigError) as info:
        Agent("qwen-plus", base_url="http://127.0.0.1:9/v1", api_key="t", instrument=True)
    assert "pip install 'qwenloop[otel]'" in str(info.value)
    assert "\n" not in str(info.value)
    Agent("qwen-plus", base_url="http://127.0.0.1:9/v1", api_key="t")  # fine without it


async def test_a_run_cut_by_a_timeout_leaves_no_span_current(openai_server, traced, exporter):
    @tool
    async def slow() -> str:
        """Take long."""
        await asyncio.sleep(60)
        return "late"

    openai_server.script(tool_call_reply("slow", {}))
    agent = traced(slow)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):  # cancels the run inside this very task
            await agent.run("Go")
    assert trace.get_current_span() is trace.INVALID_SPAN
