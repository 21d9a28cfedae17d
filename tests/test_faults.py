"""Faults on the wire, over real HTTP: every run ends in a result or a typed error with `.result`.

Each fault is injected once, into the first or the second turn of a two-turn run (a tool call,
then an answer), streamed and not. The good reply follows on the next request, so a fault that is
retried ends in a result; one that is not ends in a typed error. Either way no tool runs twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest

from agent import (
    Agent,
    AgentError,
    ModelConnectionError,
    ModelStreamError,
    RunResult,
    TruncatedReplyError,
)
from agent.models.openai import OpenAIChatModel, RetryPolicy
from agent.testing import (
    RecordedRequest,
    Reply,
    ScriptedServer,
    cut_reply,
    disconnect_reply,
    error_reply,
    html_reply,
    json_reply,
    sse_reply,
    stream_text_reply,
    stream_tool_calls_reply,
    text_reply,
    tool_call_reply,
)

ANSWER = "The sum is 5."
TIMEOUT = 0.5  # the client's read timeout in these tests


def good(turn: int, stream: bool) -> Reply:
    if turn == 1:
        return (
            stream_tool_calls_reply([("add", {"a": 2, "b": 3})])
            if stream
            else tool_call_reply("add", {"a": 2, "b": 3}, id="call_1")
        )
    return stream_text_reply(ANSWER) if stream else text_reply(ANSWER)


def stream_error_event(turn: int, stream: bool) -> Reply:
    return sse_reply(
        [
            {"choices": [{"index": 0, "delta": {"content": "Par"}, "finish_reason": None}]},
            {"error": {"message": "upstream overloaded", "code": "overloaded"}},
        ],
        done=False,
    )


def clean_cut(turn: int, stream: bool) -> Reply:
    # Cut at an event boundary, after some content but before any finish_reason or [DONE].
    reply = good(turn, stream)
    if not stream:
        return cut_reply(reply)
    assert reply.chunks is not None
    return ended_early(reply, len(reply.chunks) - 3)


def ended_early(reply: Reply, events: int) -> Reply:
    """The stream's first `events` events, then a proper end of the HTTP body."""
    assert reply.chunks is not None
    return dataclasses.replace(reply, chunks=reply.chunks[:events])


# fault name -> (builder(turn, stream), outcome when streamed, outcome when not)
# "ok": retried, the run completes; "error": a typed error ends the run; "shown": an error only
# when text had been streamed out (the second turn's answer), else retried (the first turn's
# tool calls are held back until the stream is whole).
FAULTS: dict[str, tuple[Callable[[int, bool], Reply], str, str]] = {
    "429 with Retry-After": (
        lambda t, s: error_reply(429, "slow down", headers={"retry-after": "0"}),
        "ok",
        "ok",
    ),
    "429 without Retry-After": (lambda t, s: error_reply(429, "slow down"), "ok", "ok"),
    "500": (lambda t, s: error_reply(500, "internal"), "ok", "ok"),
    "502": (lambda t, s: error_reply(502, "bad gateway"), "ok", "ok"),
    "503": (lambda t, s: error_reply(503, "unavailable"), "ok", "ok"),
    "504": (lambda t, s: error_reply(504, "gateway timeout"), "ok", "ok"),
    "reset before headers": (lambda t, s: disconnect_reply(), "ok", "ok"),
    "truncated body": (lambda t, s: cut_reply(good(t, s)), "shown", "ok"),
    "stall before headers": (lambda t, s: Reply(delay=TIMEOUT * 4), "error", "error"),
    "stall after first event": (
        lambda t, s: (
            cut_reply(good(t, s), after_events=1, stall=TIMEOUT * 4)
            if s
            else cut_reply(good(t, s), after_bytes=5, stall=TIMEOUT * 4)
        ),
        "error",
        "error",
    ),
    "invalid JSON": (
        lambda t, s: Reply(body=b'{"choices": [', headers={"content-type": "application/json"}),
        "ok",
        "ok",
    ),
    "HTML with 200": (lambda t, s: html_reply(200), "ok", "ok"),
    "empty 200": (
        lambda t, s: Reply(headers={"content-type": "text/event-stream" if s else "text/plain"}),
        "ok",
        "ok",
    ),
    "mid-stream error event": (stream_error_event, "error", "ok"),
    "clean cut at an event boundary": (clean_cut, "shown", "ok"),
}


def faulty_server(server: ScriptedServer, fault: Reply, fault_turn: int, stream: bool) -> None:
    """Answer each turn well, except the first request of `fault_turn`, which gets `fault`."""
    served: dict[int, int] = {}

    def answer(request: RecordedRequest) -> Reply:
        turn = 2 if request.json["messages"][-1]["role"] == "tool" else 1
        served[turn] = served.get(turn, 0) + 1
        if turn == fault_turn and served[turn] == 1:
            return fault
        return good(turn, stream)

    server.respond_with(answer)


@pytest.fixture(params=["httpx", "aiohttp"])
def transport(request: pytest.FixtureRequest) -> str:
    """Every fault runs on both HTTP clients the SDK can use."""
    return str(request.param)


def make_agent(server: ScriptedServer, runs: dict[str, int], transport: str = "auto") -> Agent:
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        runs["add"] = runs.get("add", 0) + 1
        return a + b

    model = OpenAIChatModel(
        "qwen-plus",
        base_url=server.url,
        api_key="sk-test-fault-key-0123456789",
        retry=RetryPolicy(max_retries=2, base_delay=0.01, max_delay=0.05),
        timeout=TIMEOUT,
        transport=transport,
    )
    return Agent(chat_model=model, tools=[add])


async def run_once(agent: Agent, stream: bool) -> RunResult:
    if not stream:
        return await agent.run("What is 2 + 3?")
    result: RunResult | None = None
    async for event in agent.stream("What is 2 + 3?"):
        result = getattr(event, "result", result)
    assert result is not None
    return result


@pytest.mark.parametrize("fault_turn", [1, 2], ids=["first turn", "second turn"])
@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize("name", list(FAULTS))
async def test_every_fault_ends_in_a_result_or_a_typed_error(
    name: str, stream: bool, fault_turn: int, transport: str
) -> None:
    build, when_streamed, when_not = FAULTS[name]
    expected = when_streamed if stream else when_not
    if expected == "shown":
        expected = "error" if fault_turn == 2 else "ok"
    runs: dict[str, int] = {}
    with ScriptedServer() as server:
        faulty_server(server, build(fault_turn, stream), fault_turn, stream)
        agent = make_agent(server, runs, transport)
        try:
            outcome: RunResult | AgentError = await asyncio.wait_for(
                run_once(agent, stream), timeout=20
            )
        except AgentError as exc:
            outcome = exc
        finally:
            await agent.aclose()

    if isinstance(outcome, RunResult):
        assert expected == "ok", f"{name}: expected a typed error, the run completed"
        assert outcome.output == ANSWER
        assert runs == {"add": 1}
    else:
        assert expected == "error", f"{name}: expected a result, got {outcome!r}"
        assert outcome.result is not None, "a typed error must carry the run so far"
        assert outcome.result.messages[0]["content"] == "What is 2 + 3?"
        assert runs.get("add", 0) == (1 if fault_turn == 2 else 0)
        assert "sk-test-fault-key-0123456789" not in str(outcome)


async def test_a_read_timeout_is_not_resent_unless_asked(openai_server: ScriptedServer) -> None:
    """A long generation that outlives the client's timeout would be billed again if resent."""
    openai_server.script(Reply(delay=TIMEOUT * 3), text_reply("late"))
    model = OpenAIChatModel(
        "qwen-plus", base_url=openai_server.url, api_key="k",
        retry=RetryPolicy(max_retries=3, base_delay=0.01), timeout=TIMEOUT,
    )  # fmt: skip
    agent = Agent(chat_model=model)
    with pytest.raises(ModelConnectionError, match=r"sent nothing for 0\.5 s"):
        await agent.run("hi")
    assert len(openai_server.requests) == 1
    await agent.aclose()

    model = OpenAIChatModel(
        "qwen-plus", base_url=openai_server.url, api_key="k", timeout=TIMEOUT,
        retry=RetryPolicy(max_retries=3, base_delay=0.01, retry_read_timeouts=True),
    )  # fmt: skip
    agent = Agent(chat_model=model)
    assert (await agent.run("hi")).output == "late"
    await agent.aclose()


async def test_a_cut_stream_after_text_was_shown_is_a_stream_error(
    openai_server: ScriptedServer,
) -> None:
    openai_server.script(ended_early(stream_text_reply("one two three four five six"), 3))
    agent = Agent(chat_model=OpenAIChatModel("qwen-plus", base_url=openai_server.url, api_key="k"))
    shown = ""
    with pytest.raises(ModelStreamError, match="without a finish_reason or \\[DONE\\]") as caught:
        async for event in agent.stream("count"):
            shown += getattr(event, "delta", "")
    assert shown == "one two "
    assert caught.value.result is not None
    assert len(openai_server.requests) == 1  # not retried: part of the reply was shown
    await agent.aclose()


async def test_a_tool_call_cut_by_the_token_limit_never_runs(openai_server: ScriptedServer) -> None:
    cut = tool_call_reply("add", '{"a": 2, "b": 3')
    body = json.loads(cut.body)
    body["choices"][0]["finish_reason"] = "length"
    openai_server.script(json_reply(body))
    runs: dict[str, int] = {}
    agent = make_agent(openai_server, runs)
    with pytest.raises(TruncatedReplyError, match="a call to add") as caught:
        await agent.run("What is 2 + 3?")
    assert runs == {}
    assert caught.value.tool_calls == ["add"]
    assert caught.value.result is not None
    assert caught.value.result.usage.total_tokens > 0  # the cut reply was billed
    await agent.aclose()


@pytest.mark.parametrize("accept", [False, True])
async def test_an_answer_cut_by_the_token_limit(
    openai_server: ScriptedServer, accept: bool
) -> None:
    openai_server.script(text_reply("The answer is", finish_reason="length"))
    model = OpenAIChatModel("qwen-plus", base_url=openai_server.url, api_key="k")
    agent = Agent(chat_model=model, accept_truncated=accept)
    if accept:
        result = await agent.run("q")
        assert result.truncated is True
        assert result.output == "The answer is"
    else:
        with pytest.raises(TruncatedReplyError, match="accept_truncated=True") as caught:
            await agent.run("q")
        assert caught.value.text == "The answer is"
    await agent.aclose()


async def test_parallel_calls_sharing_an_index_stay_separate(
    openai_server: ScriptedServer,
) -> None:
    """Ollama and SGLang stream every parallel call at index 0, each with its own id."""

    def call(call_id: str, a: int) -> dict[str, Any]:
        fn = {"name": "add", "arguments": json.dumps({"a": a, "b": 1})}
        delta = {"tool_calls": [{"index": 0, "id": call_id, "type": "function", "function": fn}]}
        return {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}

    finish = {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}
    openai_server.script(
        sse_reply([call("call_a", 1), call("call_b", 10), finish]), stream_text_reply("2 and 11")
    )
    runs: dict[str, int] = {}
    agent = make_agent(openai_server, runs)
    result = None
    async for event in agent.stream("add both"):
        result = getattr(event, "result", result)
    assert result is not None
    assert [(c.id, c.result) for c in result.tool_calls] == [("call_a", "2"), ("call_b", "11")]
    assert runs == {"add": 2}
    await agent.aclose()


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ('{"a": NaN, "b": 1}', "not strict JSON"),
        ('{"a": Infinity, "b": 1}', "not strict JSON"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ],
    ids=["NaN", "Infinity", "nested 100,000 deep"],
)
async def test_arguments_that_are_not_strict_json_go_back_as_an_error(
    openai_server: ScriptedServer, arguments: str, error: str
) -> None:
    openai_server.script(tool_call_reply("add", arguments), text_reply("sorry"))
    runs: dict[str, int] = {}
    agent = make_agent(openai_server, runs)
    result = await agent.run("q")
    assert runs == {}
    assert error in (result.tool_calls[0].error or "")
    (sent,) = [m for m in openai_server.requests[1].json["messages"] if m.get("tool_calls")]
    assert sent["tool_calls"][0]["function"]["arguments"] == "{}"  # strict JSON on the wire
    await agent.aclose()


async def test_a_reply_nested_too_deeply_is_a_typed_error(openai_server: ScriptedServer) -> None:
    deep = b'{"choices": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    openai_server.script(*[Reply(body=deep)] * 3)
    model = OpenAIChatModel(
        "qwen-plus", base_url=openai_server.url, api_key="k",
        retry=RetryPolicy(max_retries=2, base_delay=0.01),
    )  # fmt: skip
    agent = Agent(chat_model=model)
    with pytest.raises(AgentError, match="not JSON") as caught:
        await agent.run("q")
    assert caught.value.result is not None
    await agent.aclose()


async def test_a_reply_over_the_size_cap_is_refused(openai_server: ScriptedServer) -> None:
    openai_server.script(text_reply("x" * 200_000))
    model = OpenAIChatModel(
        "qwen-plus", base_url=openai_server.url, api_key="k", max_response_bytes=100_000
    )
    agent = Agent(chat_model=model)
    with pytest.raises(AgentError, match="larger than 100,000 bytes"):
        await agent.run("q")
    await agent.aclose()


async def test_a_key_echoed_by_the_provider_is_redacted(openai_server: ScriptedServer) -> None:
    key = "sk-live-abcdefghijklmnop1234"
    openai_server.script(error_reply(401, f"Incorrect API key provided: {key}"))
    agent = Agent(chat_model=OpenAIChatModel("qwen-plus", base_url=openai_server.url, api_key=key))
    with pytest.raises(AgentError) as caught:
        await agent.run("q")
    assert key not in str(caught.value)
    assert "sk-…1234" in str(caught.value)
    await agent.aclose()


async def test_the_connection_pool_holds_as_many_runs_as_asked(
    openai_server: ScriptedServer,
) -> None:
    """With 150 runs in flight and max_connections=150, a second wave reuses every connection
    (with the SDK's own pool of 100, the second wave opens 50 new ones: 200 in all)."""
    openai_server.respond_with(lambda request: text_reply("ok", delay=0.05))
    agent = Agent("qwen-plus", base_url=openai_server.url, api_key="k", max_connections=150)
    for _ in range(2):
        results = await asyncio.gather(*(agent.run("q") for _ in range(150)))
        assert all(r.output == "ok" for r in results)
    assert openai_server.connections_opened <= 150
    await agent.aclose()
    for _ in range(100):  # the server sees the closes a moment later
        if openai_server.open_connections == 0:
            break
        await asyncio.sleep(0.02)
    assert openai_server.open_connections == 0


async def test_a_whole_reply_without_a_finish_reason_was_cut(openai_server: ScriptedServer) -> None:
    """DashScope ends a non-streamed call at 300 s and returns what it has, without an error."""
    body = json.loads(text_reply("The first half of a long ans").body)
    body["choices"][0]["finish_reason"] = None
    openai_server.script(json_reply(body))
    agent = Agent(chat_model=OpenAIChatModel("qwen-plus", base_url=openai_server.url, api_key="k"))
    with pytest.raises(AgentError, match="without a finish_reason: it was cut short") as caught:
        await agent.run("Write a long essay")
    assert caught.value.result is not None
    assert len(openai_server.requests) == 1  # not resent
    await agent.aclose()


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
async def test_arguments_over_the_cap_are_never_parsed(
    openai_server: ScriptedServer, stream: bool
) -> None:
    big = {"a": 2, "b": 3, "pad": "x" * 5_000}
    if stream:
        openai_server.script(stream_tool_calls_reply([("add", big)]), stream_text_reply("no"))
    else:
        openai_server.script(tool_call_reply("add", big), text_reply("no"))
    runs: dict[str, int] = {}
    model = OpenAIChatModel("qwen-plus", base_url=openai_server.url, api_key="k")
    agent = Agent(chat_model=model, tools=[make_agent(openai_server, runs).tools.get("add")],
                  max_argument_chars=1_000)  # fmt: skip
    result = await run_once(agent, stream)
    assert runs == {}
    assert "longer than 1,000 characters" in (result.tool_calls[0].error or "")
    await agent.aclose()
