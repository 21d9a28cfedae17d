"""The loop through the public API, over real HTTP to the scripted server."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field

from agent import (
    LoopGuardEvent,
    MaxTurnsExceeded,
    RunEndEvent,
    ToolCallFinishedEvent,
    ToolRetry,
    UserError,
    tool,
)
from agent.testing import (
    stream_text_reply,
    stream_tool_calls_reply,
    text_reply,
    tool_call_reply,
    tool_calls_reply,
)


@tool
def get_time(tz: str) -> str:
    """Return the time in a zone.

    Args:
        tz: An IANA time zone.
    """
    return f"12:00 in {tz}"


@tool
async def async_sleep(seconds: float, label: str) -> str:
    """Sleep, then return the label."""
    await asyncio.sleep(seconds)
    return label


@tool
def sync_sleep(seconds: float, label: str) -> str:
    """Sleep in a thread, then return the label."""
    time.sleep(seconds)
    return label


async def test_tool_round_trip(openai_server, make_agent):
    openai_server.script(tool_call_reply("get_time", {"tz": "UTC"}), text_reply("It is noon."))
    agent = make_agent(get_time)
    result = await agent.run("What time is it?")
    assert result.output == "It is noon."
    first, second = openai_server.requests
    assert first.json["tools"][0]["function"]["name"] == "get_time"
    assert first.json["tools"][0]["function"]["parameters"]["properties"]["tz"] == {
        "type": "string",
        "description": "An IANA time zone.",
    }
    assert second.json["messages"][-1] == {
        "role": "tool",
        "tool_call_id": result.tool_calls[0].id,
        "content": "12:00 in UTC",
    }
    assert result.turns == 2
    assert result.usage.total_tokens == 56 and result.usage.requests == 2
    assert [m["role"] for m in result.messages] == ["user", "assistant", "tool", "assistant"]
    json.dumps(result.messages)  # JSON-serialisable


@pytest.mark.parametrize("kind", [async_sleep, sync_sleep], ids=["async", "sync"])
async def test_parallel_calls_run_concurrently(openai_server, make_agent, kind):
    calls = [(kind.name, {"seconds": 0.5, "label": f"r{i}"}) for i in range(4)]
    openai_server.script(tool_calls_reply(calls), text_reply("done"))
    agent = make_agent(kind)
    started = time.perf_counter()
    await agent.run("go")
    elapsed = time.perf_counter() - started
    assert elapsed < 1.5, f"4 calls of 0.5 s took {elapsed:.2f} s: not parallel"
    tool_msgs = openai_server.requests[1].json["messages"][-4:]
    assert [m["content"] for m in tool_msgs] == ["r0", "r1", "r2", "r3"]


async def test_results_keep_emitted_order_when_finishing_out_of_order(openai_server, make_agent):
    calls = [
        ("async_sleep", {"seconds": 0.3, "label": "slow"}),
        ("async_sleep", {"seconds": 0.0, "label": "fast"}),
    ]
    openai_server.script(stream_tool_calls_reply(calls), stream_text_reply("ok"))
    agent = make_agent(async_sleep)
    finished = []
    async for ev in agent.stream("go"):
        if isinstance(ev, ToolCallFinishedEvent):
            finished.append(ev.record.result)
    assert finished == ["fast", "slow"]  # events as they complete
    sent = openai_server.requests[1].json["messages"]
    assistant, t1, t2 = sent[-3:]
    ids = [c["id"] for c in assistant["tool_calls"]]
    assert [t1["tool_call_id"], t2["tool_call_id"]] == ids  # messages in emitted order
    assert [t1["content"], t2["content"]] == ["slow", "fast"]


async def test_concurrency_cap(openai_server, make_agent):
    calls = [("async_sleep", {"seconds": 0.2, "label": str(i)}) for i in range(4)]
    openai_server.script(tool_calls_reply(calls), text_reply("ok"))
    agent = make_agent(async_sleep, tool_concurrency=1)
    started = time.perf_counter()
    await agent.run("go")
    assert time.perf_counter() - started >= 0.75  # one at a time: 4 x 0.2 s


@tool(timeout=0.2)
async def hangs() -> str:
    """Never finish in time."""
    await asyncio.sleep(5)
    return "late"


@tool
def explode(n: int) -> str:
    """Fail loudly."""
    raise RuntimeError(f"boom {n}")


@tool
def picky(city: str) -> str:
    """Ask for a better city."""
    raise ToolRetry(f"no such city {city!r}; give a real city name")


async def test_failures_go_back_to_the_model_and_siblings_survive(openai_server, make_agent):
    openai_server.script(
        tool_calls_reply(
            [
                ("get_time", {"tz": "UTC"}),
                ("explode", {"n": 1}),
                ("hangs", {}),
                ("nope", {}),
                ("get_time", "{not json"),
                ("get_time", {"wrong": 1}),
                ("picky", {"city": "Atlantis"}),
            ]
        ),
        text_reply("recovered"),
    )
    agent = make_agent(get_time, explode, hangs, picky)
    result = await agent.run("go")
    assert result.output == "recovered"
    contents = [m["content"] for m in openai_server.requests[1].json["messages"][-7:]]
    assert contents[0] == "12:00 in UTC"
    assert contents[1] == "Error: RuntimeError: boom 1"
    assert "timed out after 0.2 s" in contents[2]
    assert "unknown tool 'nope'" in contents[3] and "get_time" in contents[3]
    assert "not valid JSON" in contents[4]
    assert "tz: Field required" in contents[5]
    assert contents[6] == "Error: no such city 'Atlantis'; give a real city name"
    # invalid JSON never goes back to the provider: DashScope would answer 400
    sent_calls = openai_server.requests[1].json["messages"][-8]["tool_calls"]
    for call in sent_calls:
        json.loads(call["function"]["arguments"])
    errors = [c.error for c in result.tool_calls]
    assert errors[0] is None and all(errors[1:])


async def test_non_canonical_arguments_are_reserialised(openai_server, make_agent):
    openai_server.script(
        tool_calls_reply([("get_time", "{'tz': 'UTC',}"), ("get_time", "")]),
        text_reply("ok"),
    )
    agent = make_agent(get_time, loop_guard=False)
    result = await agent.run("go")
    sent = openai_server.requests[1].json["messages"][1]["tool_calls"]
    assert sent[0]["function"]["arguments"] == '{"tz": "UTC"}'
    assert sent[1]["function"]["arguments"] == "{}"
    assert result.tool_calls[0].result == "12:00 in UTC"


async def test_retry_budget_stops_running_a_failing_tool(openai_server, make_agent):
    openai_server.script(
        *[tool_call_reply("explode", {"n": i}) for i in range(3)], text_reply("gave up")
    )
    limited = tool(max_retries=1, name="explode")(explode.fn)
    agent = make_agent(limited)
    result = await agent.run("go")
    errors = [c.error for c in result.tool_calls]
    assert errors[0] == "RuntimeError: boom 0" and errors[1] == "RuntimeError: boom 1"
    assert "failed 2 times" in errors[2]


async def test_max_turns_carries_partial_result(openai_server, make_agent):
    openai_server.script(*[tool_call_reply("get_time", {"tz": f"Z{i}"}) for i in range(3)])
    agent = make_agent(get_time, max_turns=3)
    with pytest.raises(MaxTurnsExceeded) as info:
        await agent.run("loop forever")
    partial = info.value.result
    assert partial is not None and partial.turns == 3
    assert len(partial.tool_calls) == 3
    assert partial.messages[0] == {"role": "user", "content": "loop forever"}
    assert "max_turns" in str(info.value)


async def test_loop_guard_does_not_rerun_and_asks_without_tools(openai_server, make_agent):
    runs = []

    @tool
    def lookup(q: str) -> str:
        """Look something up."""
        runs.append(q)
        return f"answer to {q}"

    openai_server.script(
        tool_call_reply("lookup", {"q": "a"}),
        tool_call_reply("lookup", {"q": "a"}),
        text_reply("final"),
    )
    agent = make_agent(lookup)
    events = [ev async for ev in agent.stream("go")]
    result = events[-1].result
    assert runs == ["a"]
    assert result.output == "final"
    assert "tools" in openai_server.requests[1].json
    assert "tools" not in openai_server.requests[2].json  # asked once more without tools
    assert any(isinstance(e, LoopGuardEvent) for e in events)
    assert result.guarded and result.tool_calls[1].skipped
    assert openai_server.requests[2].json["messages"][-1]["content"] == "answer to a"


async def test_conversation_continues_from_previous_messages(openai_server, make_agent):
    openai_server.script(text_reply("Hi Ann."), text_reply("Your name is Ann."))
    agent = make_agent(instructions="Be brief.")
    first = await agent.run("I am Ann.")
    second = await agent.run("Who am I?", history=first.messages)
    assert second.output == "Your name is Ann."
    sent = openai_server.requests[1].json["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[0]["content"] == "Be brief."


async def test_run_stream_and_run_sync_end_in_the_same_messages(openai_server, make_agent):
    def script(stream: bool) -> None:
        if stream:
            openai_server.script(
                stream_tool_calls_reply([("get_time", {"tz": "UTC"})]),
                stream_text_reply("It is noon."),
            )
        else:
            openai_server.script(
                tool_call_reply("get_time", {"tz": "UTC"}), text_reply("It is noon.")
            )

    agent = make_agent(get_time)
    script(False)
    ran = await agent.run("time?")
    script(True)
    streamed = [e async for e in agent.stream("time?")][-1]
    assert isinstance(streamed, RunEndEvent)
    script(False)
    synced = await asyncio.to_thread(agent.run_sync, "time?")

    def strip_ids(messages):
        text = json.dumps(messages)
        for r in (ran, streamed.result, synced):
            for c in r.tool_calls:
                text = text.replace(c.id, "ID")
        return json.loads(text)

    assert strip_ids(ran.messages) == strip_ids(streamed.result.messages)
    assert strip_ids(ran.messages) == strip_ids(synced.messages)
    assert ran.output == streamed.result.output == synced.output == "It is noon."
    assert openai_server.requests[2].json["stream"] is True
    assert openai_server.requests[2].json["stream_options"] == {"include_usage": True}
    assert ran.usage.total_tokens == 28 + 28


async def test_run_sync_inside_a_loop_is_a_clear_error(openai_server, make_agent):
    agent = make_agent()
    with pytest.raises(UserError, match=r"await agent\.run"):
        agent.run_sync("hi")


async def test_one_agent_serves_many_concurrent_runs(openai_server, make_agent):
    def respond(request):
        last = request.json["messages"][-1]
        if last["role"] == "user":
            return tool_call_reply("get_time", {"tz": last["content"]})
        return text_reply("done " + last["content"])

    openai_server.respond_with(respond)
    agent = make_agent(get_time)
    results = await asyncio.gather(*(agent.run(f"Z{i}") for i in range(30)))
    assert [r.output for r in results] == [f"done 12:00 in Z{i}" for i in range(30)]


class Place(BaseModel):
    city: str
    country: str = "FR"


async def test_typed_arguments_are_validated_before_the_tool_runs(openai_server, make_agent):
    seen = []

    @tool
    def book(
        place: Place,
        nights: Annotated[int, Field(ge=1, description="Nights to stay")],
        kind: Literal["hotel", "hostel"] = "hotel",
    ) -> str:
        """Book a room."""
        seen.append((place, nights, kind))
        return "booked"

    openai_server.script(
        tool_calls_reply(
            [
                ("book", {"place": {"city": "Paris"}, "nights": 0}),
                ("book", {"place": {"city": "Paris"}, "nights": 2, "kind": "hostel"}),
            ]
        ),
        text_reply("ok"),
    )
    agent = make_agent(book)
    result = await agent.run("book")
    assert seen == [(Place(city="Paris"), 2, "hostel")]
    assert "nights: Input should be greater than or equal to 1" in result.tool_calls[0].error
    schema = openai_server.requests[0].json["tools"][0]["function"]["parameters"]
    assert schema["properties"]["nights"]["description"] == "Nights to stay"
    assert schema["properties"]["kind"]["enum"] == ["hotel", "hostel"]


async def test_a_server_that_ignores_stream_true_still_works(openai_server, make_agent):
    openai_server.script(tool_call_reply("get_time", {"tz": "UTC"}), text_reply("It is noon."))
    agent = make_agent(get_time)
    events = [e async for e in agent.stream("time?")]
    assert events[-1].result.output == "It is noon."
    assert events[-1].result.tool_calls[0].result == "12:00 in UTC"
