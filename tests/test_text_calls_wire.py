"""Tool calls written as text, through the public API over real HTTP, streamed and not."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent import NoAnswerError, RunEndEvent, TextDeltaEvent, tool
from agent.testing import (
    Reply,
    stream_text_reply,
    stream_tool_calls_reply,
    text_reply,
    tool_call_reply,
)


@tool
def get_weather(city: str) -> str:
    """Return the weather in a city.

    Args:
        city: The city's name.
    """
    return f"Sunny in {city}"


@tool
def forecast(city: str, days: int, metric: bool, hours: list[int], limits: dict[str, float]) -> str:
    """Forecast the weather.

    Args:
        city: The city's name.
        days: How many days ahead.
        metric: Celsius rather than Fahrenheit.
        hours: The hours of the day to cover.
        limits: Alert thresholds by kind.
    """
    return f"{days} days in {city}"


PARIS = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
LONDON = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "London"}}\n</tool_call>'
PROSE = "I'll check the weather for both cities."
MARKUP = ("<tool", "</tool", "<function", "<parameter", "</function", "</parameter")


def reply(text: str, stream: bool, size: int = 3) -> Reply:
    """A text reply; streamed in pieces of `size` characters, cutting every tag somewhere."""
    if not stream:
        return text_reply(text)
    return stream_text_reply(text, pieces=[text[i : i + size] for i in range(0, len(text), size)])


async def run(agent: Any, prompt: str, stream: bool) -> tuple[Any, dict[int, str]]:
    """Run the agent; return the result and, when streamed, the text shown per turn."""
    if not stream:
        return await agent.run(prompt), {}
    shown: dict[int, str] = {}
    events = [event async for event in agent.stream(prompt)]
    for event in events:
        if isinstance(event, TextDeltaEvent):
            shown[event.turn] = shown.get(event.turn, "") + event.delta
    assert isinstance(events[-1], RunEndEvent)
    return events[-1].result, shown


def no_markup(shown: dict[int, str]) -> bool:
    return not any(tag in text for text in shown.values() for tag in MARKUP)


def assistant_messages(result: Any) -> list[dict[str, Any]]:
    return [m for m in result.messages if m["role"] == "assistant"]


both = pytest.mark.parametrize("stream", [False, True], ids=["run", "stream"])


@both
async def test_prose_before_tag_calls_runs_them(openai_server, make_agent, stream):
    openai_server.script(
        reply(f"{PROSE}\n{PARIS}\n{LONDON}", stream),
        reply("Sunny in both.", stream),
    )
    result, shown = await run(make_agent(get_weather), "Weather in Paris and London?", stream)
    assert result.output == "Sunny in both."
    assert [(c.name, c.arguments, c.result) for c in result.tool_calls] == [
        ("get_weather", {"city": "Paris"}, "Sunny in Paris"),
        ("get_weather", {"city": "London"}, "Sunny in London"),
    ]
    first = assistant_messages(result)[0]
    assert first["content"] == PROSE
    assert [json.loads(c["function"]["arguments"]) for c in first["tool_calls"]] == [
        {"city": "Paris"},
        {"city": "London"},
    ]
    sent = openai_server.requests[1].json["messages"]
    assert [m["content"] for m in sent if m["role"] == "tool"] == [
        "Sunny in Paris",
        "Sunny in London",
    ]
    if stream:
        assert shown == {1: PROSE, 2: "Sunny in both."}
        assert no_markup(shown)


@both
@pytest.mark.parametrize(
    "text",
    [
        'You could call it yourself: {"name": "get_weather", "arguments": {"city": "Paris"}}',
        'Like this:\n```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```',
        "The get_weather tool needs a city name.",
        '<tool_call>\n{"name": "delete_files", "arguments": {}}\n</tool_call> is not a tool.',
        "Write <tool_call> tags like so:\n```\n" + PARIS + "\n```\nThat is all.",
    ],
    ids=["inline-json", "fence-after-prose", "name", "unknown-tool", "tag-in-code"],
)
async def test_prose_about_calls_is_the_answer(openai_server, make_agent, stream, text):
    openai_server.script(reply(text, stream))
    result, shown = await run(make_agent(get_weather), "How do I call it?", stream)
    assert result.output == text
    assert result.tool_calls == []
    assert len(openai_server.requests) == 1
    if stream:
        assert shown == {1: text}


XML = (
    "<tool_call>\n<function=forecast>\n<parameter=city>\nParis\n</parameter>\n"
    "<parameter=days>\n3\n</parameter>\n<parameter=metric>\ntrue\n</parameter>\n"
    '<parameter=hours>\n[9, 12]\n</parameter>\n<parameter=limits>\n{"rain": 0.5}\n'
    "</parameter>\n</function>\n</tool_call>"
)
XML_WEATHER = (
    "<tool_call>\n<function=get_weather>\n<parameter=city>\nNew York\n</parameter>\n"
    "</function>\n</tool_call>"
)


@both
@pytest.mark.parametrize("mode", ["auto", "always"])
async def test_qwen3_coder_xml_calls_get_their_declared_types(
    openai_server, make_agent, stream, mode
):
    text = f"Let me look.\n{XML}\n{XML_WEATHER}"
    openai_server.script(reply(text, stream), reply("Done.", stream))
    agent = make_agent(get_weather, forecast, text_tool_calls=mode)
    result, shown = await run(agent, "Forecast?", stream)
    expected = {
        "city": "Paris",
        "days": 3,
        "metric": True,
        "hours": [9, 12],
        "limits": {"rain": 0.5},
    }
    assert [(c.name, c.arguments) for c in result.tool_calls] == [
        ("forecast", expected),
        ("get_weather", {"city": "New York"}),
    ]
    assert [c.result for c in result.tool_calls] == ["3 days in Paris", "Sunny in New York"]
    # Typed on the wire too: what goes back to the provider is the JSON the schema describes.
    calls = openai_server.requests[1].json["messages"][1]["tool_calls"]
    assert json.loads(calls[0]["function"]["arguments"]) == expected
    assert openai_server.requests[1].json["messages"][1]["content"] == "Let me look."
    if stream:
        assert shown[1] == "Let me look." and no_markup(shown)


@both
async def test_xml_value_that_does_not_parse_stays_a_string(openai_server, make_agent, stream):
    text = XML.replace("\n3\n", "\nthree\n")
    openai_server.script(reply(text, stream), reply("Sorry.", stream))
    result, _ = await run(make_agent(forecast), "Forecast?", stream)
    [call] = result.tool_calls
    assert call.arguments["days"] == "three" and call.arguments["metric"] is True
    assert call.result is None and "days" in (call.error or "")  # the model hears why


@both
async def test_a_reply_that_is_only_a_call_to_an_unknown_tool_is_sent_back(
    openai_server, make_agent, stream
):
    text = XML_WEATHER.replace("get_weather", "launch_rocket")
    openai_server.script(reply(text, stream), reply("I cannot launch rockets.", stream))
    result, shown = await run(make_agent(get_weather), "Go", stream)
    assert result.output == "I cannot launch rockets." and result.tool_calls == []
    # Never run, never shown as the answer: the model hears what was wrong and what exists.
    nudge = openai_server.requests[1].json["messages"][-1]
    assert nudge["role"] == "user" and "not offered" in nudge["content"]
    assert "get_weather" in nudge["content"]
    if stream:
        assert shown == {2: "I cannot launch rockets."}


def native_and_text(stream: bool, content: str) -> Reply:
    if stream:
        return stream_tool_calls_reply([("get_weather", {"city": "Paris"})], content=content)
    return tool_call_reply("get_weather", {"city": "Paris"}, id="call_native", content=content)


@both
async def test_native_and_text_calls_in_one_reply_all_run_once(openai_server, make_agent, stream):
    # The text repeats the native call (dropped) and adds one of its own (run, after it).
    content = f"Checking.\n{PARIS}\n{LONDON}"
    openai_server.script(native_and_text(stream, content), reply("Both sunny.", stream))
    result, shown = await run(make_agent(get_weather), "Paris and London?", stream)
    assert [(c.name, c.arguments["city"]) for c in result.tool_calls] == [
        ("get_weather", "Paris"),
        ("get_weather", "London"),
    ]
    native, text_call = result.tool_calls
    assert text_call.id.startswith("call_") and text_call.id != native.id
    if not stream:
        assert native.id == "call_native"
    first = openai_server.requests[1].json["messages"][1]
    assert first["content"] == "Checking."
    assert [c["id"] for c in first["tool_calls"]] == [native.id, text_call.id]
    sent = openai_server.requests[1].json["messages"]
    assert [m["tool_call_id"] for m in sent if m["role"] == "tool"] == [native.id, text_call.id]
    if stream:
        assert shown[1] == "Checking." and no_markup(shown)


@both
async def test_native_call_with_its_text_echo_runs_once(openai_server, make_agent, stream):
    openai_server.script(native_and_text(stream, PARIS), reply("Sunny.", stream))
    result, _ = await run(make_agent(get_weather), "Paris?", stream)
    assert len(result.tool_calls) == 1
    assert assistant_messages(result)[0]["content"] is None  # the echo is not left as text


@pytest.mark.parametrize(
    ("pieces", "first"),
    [
        (["Checking", " the weather. <tool_", "call>\n{\"name\": \"get_weather\", ", '"arguments": '
          '{"city": "Paris"}}\n</tool', "_call>\nOne ", "moment."], ["Checking", " the weather."]),
        (["Checking the weather. <", "tool_call>\n<function=get_weather>\n<parameter=city>\nParis"
          "\n</parameter>\n</function>\n</tool_call>\nOne moment."], ["Checking the weather."]),
    ],
    ids=["json", "xml"],
)  # fmt: skip
async def test_stream_holds_back_markup_and_shows_what_follows(
    openai_server, make_agent, pieces, first
):
    openai_server.script(
        stream_text_reply("".join(pieces), pieces=pieces), stream_text_reply("Sunny.")
    )
    events = [e async for e in make_agent(get_weather).stream("Paris?")]
    deltas = [e.delta for e in events if isinstance(e, TextDeltaEvent) and e.turn == 1]
    # The text before the tag shows at once; a partial `<tool_` is held until it is clear.
    assert deltas[: len(first)] == first
    assert not any(tag in d for d in deltas for tag in (*MARKUP, "<"))
    result = events[-1].result
    content = assistant_messages(result)[0]["content"]
    assert content == "Checking the weather. \nOne moment."
    assert "".join(deltas) == content
    assert result.tool_calls[0].arguments == {"city": "Paris"}


@both
async def test_call_that_cannot_be_read_stays_in_the_answer(openai_server, make_agent, stream):
    text = f"{PROSE}\n" + PARIS.replace('"Paris"', "Paris")  # not JSON, even repaired
    openai_server.script(reply(text, stream))
    result, shown = await run(make_agent(get_weather), "Weather?", stream)
    assert result.output == text
    assert result.tool_calls == []
    if stream:
        assert shown == {1: text}


@both
async def test_never_reads_text_calls(openai_server, make_agent, stream):
    text = f"{PROSE}\n{PARIS}"
    openai_server.script(reply(text, stream))
    result, shown = await run(make_agent(get_weather, text_tool_calls="never"), "Hi", stream)
    assert result.output == text and result.tool_calls == []
    if stream:
        assert shown == {1: text}


async def test_streamed_and_whole_runs_end_in_the_same_messages(openai_server, make_agent):
    content = f"  {PROSE}\n{XML_WEATHER}\n{LONDON}\n"
    final = "Sunny in both.\n"
    openai_server.script(
        tool_call_reply("get_weather", {"city": "Paris"}, content=content),
        text_reply(final),
        stream_tool_calls_reply([("get_weather", {"city": "Paris"})], content=content),
        stream_text_reply(final),
    )
    agent = make_agent(get_weather)
    whole = await agent.run("Weather?")
    streamed = [e async for e in agent.stream("Weather?")][-1].result

    def without_ids(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # Each call id by its position, field by field (a text replace would also hit a longer
        # id that begins with a shorter one, as "call_0" begins "call_042...").
        copied = json.loads(json.dumps(messages))
        calls = [c for m in copied for c in m.get("tool_calls", [])]
        numbers = {call["id"]: f"id{index}" for index, call in enumerate(calls)}
        for message in copied:
            for call in message.get("tool_calls", []):
                call["id"] = numbers[call["id"]]
            if message.get("tool_call_id") in numbers:
                message["tool_call_id"] = numbers[message["tool_call_id"]]
        return copied

    assert without_ids(streamed.messages) == without_ids(whole.messages)
    assert [c.arguments["city"] for c in whole.tool_calls] == ["Paris", "New York", "London"]
    assert whole.messages[1]["content"] == PROSE


@both
@pytest.mark.parametrize(
    ("junk", "reason"),
    [
        ("<tools></tools>", "only markup"),
        ("   \n", "empty"),
        ("</tool_call>", "only markup"),
        ('Let me work it out.\n<tool_call>\n{"name": "get_weather", "argu', "half-written"),
    ],
    ids=["empty-tag-pair", "blank", "lone-tag", "half-call"],
)
async def test_a_reply_with_no_answer_is_sent_back_and_never_shown(
    openai_server, make_agent, stream, junk, reason
):
    openai_server.script(reply(junk, stream), reply("It is sunny.", stream))
    result, shown = await run(make_agent(get_weather), "Weather?", stream)
    assert result.output == "It is sunny." and result.tool_calls == []
    nudge = openai_server.requests[1].json["messages"][-1]
    assert nudge["role"] == "user" and reason in nudge["content"]
    if stream and reason != "half-written":  # the prose before a half call was shown, no more
        assert shown == {2: "It is sunny."}
    if stream:
        assert no_markup(shown)


@both
async def test_no_answer_after_being_asked_again_is_a_typed_error_with_the_run(
    openai_server, make_agent, stream
):
    openai_server.script(*(reply("<tools></tools>", stream) for _ in range(3)))
    with pytest.raises(NoAnswerError) as caught:
        await run(make_agent(get_weather), "Weather?", stream)
    error = caught.value
    assert error.reason == "only markup" and error.text == "<tools></tools>"
    assert len(openai_server.requests) == 3
    assert error.result is not None
    assert error.result.messages[-1] == {"role": "assistant", "content": "<tools></tools>"}
