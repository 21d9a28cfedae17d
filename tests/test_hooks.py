"""Lifecycle hooks and logging, through a real Agent over real HTTP to the scripted server."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging

import pytest

import agent.tracing
import agent.turn
from agent import tool
from agent.errors import BadRequestError, HookError, ServerError
from agent.hooks import ModelReply, RunContext, RunHooks, ToolCallInfo
from agent.messages import RunResult, ToolCallRecord
from agent.models.base import ModelRequest
from agent.testing import error_reply, text_reply, tool_call_reply

KEY = "sk-test-SECRET123456"
MODEL_HOOKS = "on_model_request" in inspect.getsource(agent.turn)
RETRY_SOON = {"retry-after-ms": "1"}


@tool
def get_time(tz: str) -> str:
    """Return the time in a zone.

    Args:
        tz: An IANA time zone.
    """
    return f"12:00 in {tz}"


class Recorder(RunHooks):
    """Records every call, with its arguments, into a list shared with other recorders."""

    def __init__(self, log: list[tuple[str, str, tuple[object, ...]]], tag: str) -> None:
        self.log = log
        self.tag = tag

    def _note(self, method: str, *args: object) -> None:
        self.log.append((self.tag, method, args))

    def on_run_start(self, ctx, messages):
        self._note("on_run_start", ctx, list(messages))

    def on_run_end(self, ctx, result, error):
        self._note("on_run_end", ctx, result, error)

    def on_model_request(self, ctx, request):
        self._note("on_model_request", ctx, request)

    def on_model_response(self, ctx, reply):
        self._note("on_model_response", ctx, reply)

    def on_model_error(self, ctx, error):
        self._note("on_model_error", ctx, error)

    def on_tool_start(self, ctx, call):
        self._note("on_tool_start", ctx, call)

    def on_tool_end(self, ctx, record):
        self._note("on_tool_end", ctx, record)


class AsyncRecorder(Recorder):
    """The same, with every method async (and yielding to the loop)."""

    async def on_run_start(self, ctx, messages):
        await asyncio.sleep(0)
        super().on_run_start(ctx, messages)

    async def on_run_end(self, ctx, result, error):
        await asyncio.sleep(0)
        super().on_run_end(ctx, result, error)

    async def on_model_request(self, ctx, request):
        await asyncio.sleep(0)
        super().on_model_request(ctx, request)

    async def on_model_response(self, ctx, reply):
        await asyncio.sleep(0)
        super().on_model_response(ctx, reply)

    async def on_tool_start(self, ctx, call):
        await asyncio.sleep(0)
        super().on_tool_start(ctx, call)

    async def on_tool_end(self, ctx, record):
        await asyncio.sleep(0)
        super().on_tool_end(ctx, record)


def expected_methods(*methods: str) -> list[str]:
    """The methods a run calls, without the model ones until agent/turn.py calls them."""
    return [m for m in methods if MODEL_HOOKS or "_model_" not in m]


async def test_hooks_are_called_in_order_with_the_run(openai_server, make_agent):
    openai_server.script(
        tool_call_reply("get_time", {"tz": "UTC"}, id="call_1", usage=(30, 5)),
        text_reply("It is noon.", usage=(40, 7)),
    )
    calls: list[tuple[str, str, tuple[object, ...]]] = []
    hooks = [Recorder(calls, "sync"), AsyncRecorder(calls, "async")]
    result = await make_agent(get_time, hooks=hooks).run("What time is it?")

    methods = expected_methods(
        "on_run_start", "on_model_request", "on_model_response", "on_tool_start",
        "on_tool_end", "on_model_request", "on_model_response", "on_run_end",
    )  # fmt: skip
    # every step reaches both hooks, in the order given
    assert [(tag, m) for tag, m, _ in calls] == [
        (tag, m) for m in methods for tag in ("sync", "async")
    ]
    by_method = {m: args for tag, m, args in calls if tag == "sync"}
    ctx = calls[0][2][0]
    assert isinstance(ctx, RunContext)
    assert all(args[0] is ctx for _, _, args in calls)  # one context for the whole run
    assert (ctx.model, ctx.provider, ctx.turn) == ("qwen-plus", "custom", 2)
    assert len(ctx.run_id) == 32

    assert by_method["on_run_start"][1] == [{"role": "user", "content": "What time is it?"}]
    call = by_method["on_tool_start"][1]
    assert call == ToolCallInfo("call_1", "get_time", {"tz": "UTC"}, 1)
    record = by_method["on_tool_end"][1]
    assert isinstance(record, ToolCallRecord)
    assert (record.id, record.result, record.error) == ("call_1", "12:00 in UTC", None)
    _, end_result, error = by_method["on_run_end"]
    assert error is None
    assert end_result.output == result.output == "It is noon."
    if MODEL_HOOKS:
        requests = [args[1] for tag, m, args in calls if tag == "sync" and m == "on_model_request"]
        replies = [args[1] for tag, m, args in calls if tag == "sync" and m == "on_model_response"]
        assert all(isinstance(r, ModelRequest) and r.model == "qwen-plus" for r in requests)
        assert requests[1].messages[-1]["role"] == "tool"
        assert all(isinstance(r, ModelReply) for r in replies)
        assert [r.finish_reason for r in replies] == ["tool_calls", "stop"]
        assert [r.usage.prompt_tokens for r in replies] == [30, 40]
        assert replies[1].message["content"] == "It is noon."


async def test_a_failed_model_call_reaches_the_hooks(openai_server, make_agent):
    openai_server.script(error_reply(400, "no such model"))
    calls: list[tuple[str, str, tuple[object, ...]]] = []
    with pytest.raises(BadRequestError) as info:
        await make_agent(hooks=[Recorder(calls, "h")]).run("Hi")
    methods = expected_methods("on_run_start", "on_model_request", "on_model_error", "on_run_end")
    assert [m for _, m, _ in calls] == methods
    _, result, error = calls[-1][2]
    assert error is info.value
    assert result is info.value.result
    if MODEL_HOOKS:
        assert calls[2][2][1] is info.value


class Veto(RunHooks):
    def on_tool_start(self, ctx, call):
        raise RuntimeError(f"{call.name} is not allowed")


async def test_a_hook_that_raises_stops_the_run(openai_server, make_agent):
    ran: list[str] = []

    @tool
    def delete_all() -> str:
        """Delete everything."""
        ran.append("delete_all")
        return "deleted"

    openai_server.script(tool_call_reply("delete_all", {}))
    calls: list[tuple[str, str, tuple[object, ...]]] = []
    agent = make_agent(delete_all, hooks=[Veto(), Recorder(calls, "after")])
    with pytest.raises(HookError) as info:
        await agent.run("Clean up")
    error = info.value
    assert "Veto.on_tool_start" in str(error)
    assert isinstance(error.__cause__, RuntimeError)
    assert str(error.__cause__) == "delete_all is not allowed"
    assert isinstance(error.result, RunResult)
    assert error.result.turns == 1
    assert ran == []  # vetoed before it ran
    assert [m for _, m, _ in calls][-1] == "on_run_end"
    assert calls[-1][2][2] is error  # the other hooks still hear how the run ended


class BrokenEnd(RunHooks):
    async def on_run_end(self, ctx, result, error):
        raise RuntimeError("the audit store is down")


async def test_on_run_end_failure_after_a_failed_run_is_logged(openai_server, make_agent, caplog):
    openai_server.script(error_reply(400, "bad request"))
    with pytest.raises(BadRequestError):  # the run's own error, not the hook's
        await make_agent(hooks=[BrokenEnd()]).run("Hi")
    (record,) = [r for r in caplog.records if "on_run_end hook failed" in r.getMessage()]
    assert record.name == "qwenloop"
    assert record.levelno == logging.ERROR
    assert "the audit store is down" in caplog.text


async def test_on_run_end_failure_after_a_good_run_raises(openai_server, make_agent):
    openai_server.script(text_reply("Hello."))
    with pytest.raises(HookError) as info:
        await make_agent(hooks=[BrokenEnd()]).run("Hi")
    assert isinstance(info.value.__cause__, RuntimeError)
    assert info.value.result.output == "Hello."


def test_hooks_must_be_run_hooks(openai_server, make_agent):
    with pytest.raises(TypeError, match="RunHooks instances"):
        make_agent(hooks=[object()])


request_id = contextvars.ContextVar("request_id", default="unset")


async def test_sync_tools_see_the_callers_context_variables(openai_server, make_agent):
    seen: list[str] = []

    @tool
    def whoami() -> str:
        """Report the request id."""
        seen.append(request_id.get())
        return request_id.get()

    openai_server.script(tool_call_reply("whoami", {}), text_reply("Done."))
    request_id.set("req-42")
    result = await make_agent(whoami).run("Who?")
    assert seen == ["req-42"]
    assert result.tool_calls[0].result == "req-42"


async def test_logging_names_runs_and_tools_but_never_the_key(openai_server, make_agent, caplog):
    caplog.set_level(logging.DEBUG, logger="qwenloop")
    question = "What time is it? " + "x" * 1000
    openai_server.script(
        # a provider echoing the key back in an error must not put it in a log line
        error_reply(503, f"overloaded; your key {KEY} is fine", headers=RETRY_SOON),
        tool_call_reply("get_time", {"tz": "UTC"}, id="call_7"),
        text_reply("It is noon, private answer."),
    )
    agent = make_agent(get_time, api_key=KEY)
    result = await agent.run(question)
    assert result.output == "It is noon, private answer."

    assert KEY not in caplog.text
    assert "sk-…3456" in caplog.text  # the masked form
    (retry,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "retry 1 of 3" in retry.getMessage()
    assert "status 503" in retry.getMessage()
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    run_id = result_run_id(caplog)
    assert info[0] == f"run {run_id} started: model qwen-plus (custom), 1 messages"
    assert info[1] == f"run {run_id}: tool get_time started (call call_7)"
    assert any(f"run {run_id}: tool get_time ended in " in m and "(call call_7)" in m for m in info)
    assert info[-1].startswith(f"run {run_id} ended: model qwen-plus, 2 turns, 56 tokens")
    for message in info:  # no message contents above DEBUG
        assert "What time" not in message
        assert "private answer" not in message
        assert "12:00" not in message
    assert "x" * 250 not in caplog.text  # DEBUG lines cut contents short


def result_run_id(caplog) -> str:
    (start,) = [r for r in caplog.records if "started: model" in r.getMessage()]
    return start.args[0]


async def test_logging_a_failed_run_and_giving_up(openai_server, make_agent, caplog):
    caplog.set_level(logging.INFO, logger="qwenloop")
    reply = error_reply(503, f"down, key {KEY}", headers=RETRY_SOON)
    openai_server.script(reply, reply)
    with pytest.raises(ServerError):
        await make_agent(api_key=KEY, retries=1).run("Hi")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "retry 1 of 1" in warnings[0]
    assert "failed 2 times (status 503); giving up" in warnings[1]
    (end,) = [r.getMessage() for r in caplog.records if " failed: model" in r.getMessage()]
    assert "1 turns" in end and "ServerError" in end
    assert KEY not in caplog.text


async def test_logging_off_formats_nothing(openai_server, make_agent, caplog, monkeypatch):
    def explode(*args, **kwargs):
        raise AssertionError("formatted a log line nobody reads")

    monkeypatch.setattr(agent.tracing, "_preview", explode)
    monkeypatch.setattr(agent.tracing, "_tokens", explode)
    monkeypatch.setattr(agent.tracing, "_first_line", explode)
    caplog.set_level(logging.WARNING, logger="qwenloop")
    openai_server.script(tool_call_reply("get_time", {"tz": "UTC"}), text_reply("Noon."))
    assert (await make_agent(get_time).run("Time?")).output == "Noon."
    assert caplog.records == []


def test_log_hooks_at_debug_cut_contents_short(caplog):
    caplog.set_level(logging.DEBUG, logger="qwenloop")
    hooks = agent.tracing.LogHooks()
    ctx = RunContext("qwen-plus", "dashscope")
    long = "y" * 5000
    hooks.on_model_request(ctx, ModelRequest("qwen-plus", [{"role": "user", "content": long}]))
    reply = ModelReply(
        {"role": "assistant", "content": long}, RunResult().usage, "stop", None, "r1"
    )
    hooks.on_model_response(ctx, reply)
    hooks.on_tool_start(ctx, ToolCallInfo("c1", "echo", {"text": long}, 1))
    hooks.on_tool_end(ctx, ToolCallRecord(id="c1", name="echo", arguments={}, error=long))
    assert len(caplog.records) == 5
    for record in caplog.records:
        assert len(record.getMessage()) < 500
    assert "1 messages, 0 tools" in caplog.records[0].getMessage()
    assert "finish reason stop" in caplog.records[1].getMessage()
