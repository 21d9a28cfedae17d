"""Tests of agent.testing.ScriptedServer, driven through the real openai SDK."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import openai
import pytest

from agent.testing import (
    RecordedRequest,
    Reply,
    ScriptedServer,
    disconnect_reply,
    error_reply,
    json_reply,
    sse_reply,
    stream_text_reply,
    stream_tool_calls_reply,
    text_reply,
    tool_call_reply,
    tool_calls_reply,
)

MESSAGES: list[dict[str, str]] = [{"role": "user", "content": "hi"}]


def client(server: ScriptedServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.url, api_key="test", max_retries=0)


async def test_text_reply_parses(openai_server: ScriptedServer) -> None:
    openai_server.script(text_reply("你好!", reasoning="think", usage=(3, 4)))
    async with client(openai_server) as c:
        resp = await c.chat.completions.create(model="qwen-plus", messages=MESSAGES)
    assert resp.id.startswith("chatcmpl-")
    assert resp.object == "chat.completion"
    assert resp.model == "qwen-plus"
    assert resp.choices[0].message.content == "你好!"
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.choices[0].message.model_extra == {"reasoning_content": "think"}
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (3, 4)
    assert resp.usage.total_tokens == 7


async def test_tool_call_replies_parse(openai_server: ScriptedServer) -> None:
    openai_server.script(
        tool_call_reply("get_weather", {"city": "巴黎"}, id="call_x"),
        tool_calls_reply([("a", {"n": 1}), ("b", "{not json")], content="two calls"),
    )
    async with client(openai_server) as c:
        one = await c.chat.completions.create(model="qwen-plus", messages=MESSAGES)
        two = await c.chat.completions.create(model="qwen-plus", messages=MESSAGES)
    msg = one.choices[0].message
    assert one.choices[0].finish_reason == "tool_calls"
    assert msg.content is None
    assert msg.tool_calls is not None and len(msg.tool_calls) == 1
    call = msg.tool_calls[0]
    assert call.id == "call_x" and call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "巴黎"}
    msg2 = two.choices[0].message
    assert msg2.content == "two calls"
    assert msg2.tool_calls is not None
    assert [(t.function.name, t.function.arguments) for t in msg2.tool_calls] == [
        ("a", '{"n": 1}'),
        ("b", "{not json"),
    ]
    ids = [t.id for t in msg2.tool_calls]
    assert len(set(ids)) == 2 and all(i.startswith("call_") for i in ids)


async def test_stream_text_reply(openai_server: ScriptedServer) -> None:
    openai_server.script(stream_text_reply("Hello big world", usage=(20, 7)))
    async with client(openai_server) as c:
        stream = await c.chat.completions.create(model="qwen-plus", messages=MESSAGES, stream=True)
        chunks = [chunk async for chunk in stream]
    first, *middle, final, usage_chunk = chunks
    assert first.choices[0].delta.role == "assistant"
    assert first.choices[0].delta.content == ""
    assert [c.choices[0].delta.content for c in middle] == ["Hello ", "big ", "world"]
    assert final.choices[0].delta.content == ""
    assert final.choices[0].finish_reason == "stop"
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None and usage_chunk.usage.total_tokens == 27
    assert all(c.object == "chat.completion.chunk" and c.id == first.id for c in chunks)


async def test_stream_tool_calls_reply(openai_server: ScriptedServer) -> None:
    openai_server.script(stream_tool_calls_reply([("f", {"x": 1}), ("g", {"y": "two"})]))
    async with client(openai_server) as c:
        stream = await c.chat.completions.create(model="qwen-plus", messages=MESSAGES, stream=True)
        chunks = [chunk async for chunk in stream]
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            entry = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            if delta.id:
                assert entry["id"] == "", "id must come once, in the first chunk of a call"
                entry["id"] = delta.id
            if delta.function and delta.function.name:
                entry["name"] = delta.function.name
            if delta.function and delta.function.arguments:
                entry["arguments"] += delta.function.arguments
    assert [calls[i]["name"] for i in (0, 1)] == ["f", "g"]
    assert json.loads(calls[0]["arguments"]) == {"x": 1}
    assert json.loads(calls[1]["arguments"]) == {"y": "two"}
    assert all(c["id"].startswith("call_") for c in calls.values())
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None


async def test_raw_sse_reply_sends_strings_verbatim(openai_server: ScriptedServer) -> None:
    openai_server.script(sse_reply([": comment\n\n", {"a": 1}, "data: {broken\n\n"], done=False))
    async with httpx.AsyncClient() as http:
        resp = await http.post(f"{openai_server.url}/chat/completions", json={})
    assert resp.headers["content-type"] == "text/event-stream"
    assert resp.text == ': comment\n\ndata: {"a":1}\n\ndata: {broken\n\n'


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (429, openai.RateLimitError),
        (503, openai.InternalServerError),
    ],
)
async def test_error_reply_raises_matching_sdk_error(
    openai_server: ScriptedServer, status: int, error_type: type[openai.APIStatusError]
) -> None:
    openai_server.script(error_reply(status, "Invalid API-KEY", code="bad_key"))
    async with client(openai_server) as c:
        with pytest.raises(error_type) as info:
            await c.chat.completions.create(model="qwen-plus", messages=MESSAGES)
    assert info.value.status_code == status
    assert "Invalid API-KEY" in info.value.message
    assert info.value.body == {
        "message": "Invalid API-KEY",
        "type": "invalid_request_error",
        "param": None,
        "code": "bad_key",
    }


async def test_requests_are_recorded_in_order(openai_server: ScriptedServer) -> None:
    openai_server.script(text_reply("one"), text_reply("two"))
    async with client(openai_server) as c:
        await c.chat.completions.create(model="qwen-plus", messages=MESSAGES, temperature=0.5)
        models = await c.models.list()
        await c.chat.completions.create(model="qwen-max", messages=MESSAGES)
    assert "qwen-plus" in [m.id for m in models.data]
    reqs = openai_server.requests
    assert [(r.method, r.path) for r in reqs] == [
        ("POST", "/v1/chat/completions"),
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
    ]
    assert reqs[0].json == {"model": "qwen-plus", "messages": MESSAGES, "temperature": 0.5}
    assert reqs[0].headers["authorization"] == "Bearer test"
    assert reqs[0].headers["content-type"] == "application/json"
    assert json.loads(reqs[0].body) == reqs[0].json
    assert reqs[1].json is None
    assert reqs[2].json["model"] == "qwen-max"


async def test_unscripted_request_is_500_and_fails_assert_done() -> None:
    with ScriptedServer() as server:
        async with client(server) as c:
            with pytest.raises(openai.InternalServerError, match="no reply scripted for request 1"):
                await c.chat.completions.create(model="qwen-plus", messages=MESSAGES)
        with pytest.raises(AssertionError, match="no reply scripted for request 1"):
            server.assert_done()
        server.reset()
        server.assert_done()
        assert server.requests == []


def test_unused_reply_fails_assert_done() -> None:
    with ScriptedServer() as server:
        server.script(text_reply("never asked"))
        assert len(server.unused) == 1
        with pytest.raises(AssertionError, match=r"unused reply: 200 body \"never asked\""):
            server.assert_done()


def test_sync_client_and_custom_reply(openai_server: ScriptedServer) -> None:
    body = json.dumps({"error": {"message": "slow down"}}).encode()
    openai_server.script(
        text_reply("sync works", headers={"X-Account-Balance": "123.0165"}),
        Reply(status=429, headers={"retry-after": "0"}, body=body),
    )
    with openai.OpenAI(base_url=openai_server.url, api_key="test", max_retries=0) as c:
        raw = c.chat.completions.with_raw_response.create(model="qwen-plus", messages=MESSAGES)
        assert raw.headers["x-account-balance"] == "123.0165"
        assert raw.parse().choices[0].message.content == "sync works"
        with pytest.raises(openai.RateLimitError, match="slow down"):
            c.chat.completions.create(model="qwen-plus", messages=MESSAGES)


def test_serves_code_that_runs_its_own_event_loop(openai_server: ScriptedServer) -> None:
    openai_server.script(text_reply("a"), text_reply("b"))

    async def ask() -> str | None:
        async with client(openai_server) as c:
            resp = await c.chat.completions.create(model="qwen-plus", messages=MESSAGES)
        return resp.choices[0].message.content

    assert [asyncio.run(ask()), asyncio.run(ask())] == ["a", "b"]


async def test_concurrent_requests_with_fallback(openai_server: ScriptedServer) -> None:
    def answer(request: RecordedRequest) -> Reply:
        return text_reply(f"echo {request.json['messages'][0]['content']}", delay=0.2)

    openai_server.respond_with(answer)
    async with client(openai_server) as c:

        async def ask(i: int) -> str | None:
            messages = [{"role": "user", "content": str(i)}]
            resp = await c.chat.completions.create(model="qwen-plus", messages=messages)
            return resp.choices[0].message.content

        start = time.perf_counter()
        answers = await asyncio.gather(*(ask(i) for i in range(50)))
        elapsed = time.perf_counter() - start
    assert answers == [f"echo {i}" for i in range(50)]
    assert elapsed < 5
    assert len(openai_server.requests) == 50


async def test_keep_alive_connection_is_reused(openai_server: ScriptedServer) -> None:
    openai_server.respond_with(lambda _: json_reply({"ok": True}))
    ports = set()
    async with httpx.AsyncClient() as http:
        for _ in range(20):
            resp = await http.post(f"{openai_server.url}/anything", json={"n": 1})
            assert resp.json() == {"ok": True}
            stream = resp.extensions["network_stream"]
            ports.add(stream.get_extra_info("client_addr")[1])
    assert len(ports) == 1


async def test_delay_and_chunk_delay(openai_server: ScriptedServer) -> None:
    openai_server.script(stream_text_reply("a b c", delay=0.1, chunk_delay=0.05))
    async with httpx.AsyncClient() as http:
        start = time.perf_counter()
        resp = await http.post(f"{openai_server.url}/chat/completions", json={})
        elapsed = time.perf_counter() - start
    assert 0.3 <= elapsed < 2
    assert resp.text.endswith("data: [DONE]\n\n")


async def test_disconnect_reply_is_a_connection_error(openai_server: ScriptedServer) -> None:
    openai_server.script(disconnect_reply(), text_reply("after"))
    async with client(openai_server) as c:
        with pytest.raises(openai.APIConnectionError):
            await c.chat.completions.create(model="qwen-plus", messages=MESSAGES)
        resp = await c.chat.completions.create(model="qwen-plus", messages=MESSAGES)
    assert resp.choices[0].message.content == "after"


def test_stop_closes_the_port() -> None:
    server = ScriptedServer().start()
    url = server.url
    server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/models")
    server.stop()  # stopping twice is harmless


def test_pieces_must_join_to_text() -> None:
    with pytest.raises(ValueError, match="join"):
        stream_text_reply("abc", pieces=["a", "b"])


async def test_failing_fallback_is_a_500_and_a_failure() -> None:
    def broken(request: RecordedRequest) -> Reply:
        raise KeyError("oops")

    with ScriptedServer() as server:
        server.respond_with(broken)
        async with client(server) as c:
            with pytest.raises(openai.InternalServerError, match="respond_with function raised"):
                await c.chat.completions.create(model="qwen-plus", messages=MESSAGES)
        assert server.failures == ["respond_with function raised KeyError('oops') on request 1"]
        with pytest.raises(AssertionError, match="oops"):
            server.assert_done()


async def test_stop_during_slow_reply_ends_the_request() -> None:
    arrived = threading.Event()

    def slow(request: RecordedRequest) -> Reply:
        arrived.set()
        return text_reply("too late", delay=30)

    server = ScriptedServer().start()
    server.respond_with(slow)
    async with client(server) as c:
        request = asyncio.ensure_future(
            c.chat.completions.create(model="qwen-plus", messages=MESSAGES)
        )
        assert await asyncio.to_thread(arrived.wait, 5)
        start = time.perf_counter()
        server.stop()
        with pytest.raises(openai.APIConnectionError):
            await request
    assert time.perf_counter() - start < 2
