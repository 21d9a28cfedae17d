"""Stream assembly: every provider quirk we know of, as plain data and over the wire."""

from __future__ import annotations

import json

import pytest

from agent import ModelStreamError, ReasoningDeltaEvent, TextDeltaEvent, tool
from agent.streaming import StreamAssembler, parse_completion
from agent.testing import sse_reply, stream_text_reply, text_reply

# The reference's streaming example (shared/qwen-api/000 and 001), byte for byte.
REFERENCE_STREAM = [
    'data: {"id":"chatcmpl-de564ea0-e018-920c-8481-b95dda73bfec","object":"chat.completion.chunk","created":1734513335,"model":"qwen2.5-14b-instruct","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n',
    'data: {"id":"chatcmpl-de564ea0-e018-920c-8481-b95dda73bfec","object":"chat.completion.chunk","created":1734513335,"model":"qwen2.5-14b-instruct","choices":[{"index":0,"delta":{"content":"你好"},"finish_reason":null}]}\n\n',
    'data: {"id":"chatcmpl-de564ea0-e018-920c-8481-b95dda73bfec","object":"chat.completion.chunk","created":1734513335,"model":"qwen2.5-14b-instruct","choices":[{"index":0,"delta":{"content":"!"},"finish_reason":null}]}\n\n',
    'data: {"id":"chatcmpl-de564ea0-e018-920c-8481-b95dda73bfec","object":"chat.completion.chunk","created":1734513335,"model":"qwen2.5-14b-instruct","choices":[{"index":0,"delta":{"content":"有什么"},"finish_reason":null}]}\n\n',
    'data: {"id":"chatcmpl-de564ea0-e018-920c-8481-b95dda73bfec","object":"chat.completion.chunk","created":1734513335,"model":"qwen2.5-14b-instruct","choices":[{"index":0,"delta":{"content":"可以帮助你的吗?"},"finish_reason":null}]}\n\n',
    'data: {"id":"chatcmpl-de564ea0-e018-920c-8481-b95dda73bfec","object":"chat.completion.chunk","created":1734513335,"model":"qwen2.5-14b-instruct","choices":[{"index":0,"delta":{"content":""},"finish_reason":"stop"}]}\n\n',
    'data: {"id":"chatcmpl-de564ea0-e018-920c-8481-b95dda73bfec","object":"chat.completion.chunk","created":1734513335,"model":"qwen2.5-14b-instruct","choices":[],"usage":{"prompt_tokens":20,"completion_tokens":7,"total_tokens":27}}\n\n',
    "data: [DONE]\n\n",
]


def chunk(delta=None, finish=None, usage=None, choices=True):
    body = {"id": "c", "object": "chat.completion.chunk", "choices": []}
    if choices:
        body["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    if usage:
        body["usage"] = usage
    return body


def call_delta(index=None, id=None, name=None, arguments=None, type_=True):
    tc = {}
    if index is not None:
        tc["index"] = index
    if id is not None:
        tc["id"] = id
    if type_:
        tc["type"] = "function"
    fn = {}
    if name is not None:
        fn["name"] = name
    if arguments is not None or name is not None:
        fn["arguments"] = arguments
    tc["function"] = fn
    return chunk({"tool_calls": [tc]})


def assemble(chunks):
    asm = StreamAssembler()
    shown = [asm.feed(c) for c in chunks]
    return asm.finish(), shown


def test_openai_shape_with_index():
    turn, _ = assemble(
        [
            chunk({"role": "assistant", "content": None}),
            call_delta(0, "call_a", "get_weather", ""),
            call_delta(0, None, None, '{"city":'),
            call_delta(0, None, None, '"Paris"}'),
            chunk({}, "tool_calls"),
        ]
    )
    assert [(c.id, c.name, c.arguments) for c in turn.calls] == [
        ("call_a", "get_weather", {"city": "Paris"})
    ]
    assert turn.message["content"] is None


def test_index_missing_falls_back_to_id():
    turn, _ = assemble(
        [
            call_delta(None, "a", "f", '{"x":'),
            call_delta(None, "b", "g", '{"y":'),
            call_delta(None, "a", None, "1}"),
            call_delta(None, "b", None, "2}"),
        ]
    )
    assert [(c.name, c.arguments) for c in turn.calls] == [("f", {"x": 1}), ("g", {"y": 2})]


def test_id_repeated_in_every_chunk_and_name_repeated():
    turn, _ = assemble(
        [
            call_delta(0, "a", "f", '{"x"'),
            call_delta(0, "a", "f", ": 1}"),
        ]
    )
    assert [(c.id, c.name, c.arguments) for c in turn.calls] == [("a", "f", {"x": 1})]


def test_id_and_index_missing_after_first_chunk():
    turn, _ = assemble(
        [call_delta(None, "a", "f", '{"x"'), call_delta(None, None, None, ": 3}", type_=False)]
    )
    assert turn.calls[0].arguments == {"x": 3}


def test_name_arriving_late():
    turn, _ = assemble([call_delta(0, "a", None, None), call_delta(0, None, "late", '{"q": "x"}')])
    assert turn.calls[0].name == "late" and turn.calls[0].arguments == {"q": "x"}


@pytest.mark.parametrize("args", [None, ""])
def test_null_or_empty_arguments_mean_empty_object(args):
    turn, _ = assemble([call_delta(0, "a", "now", args)])
    assert turn.calls[0].arguments == {}
    assert turn.message["tool_calls"][0]["function"]["arguments"] == "{}"


def test_whole_arguments_in_one_chunk_and_interleaved_parallel_calls():
    turn, _ = assemble(
        [
            call_delta(0, "a", "f", '{"n": 1}'),
            call_delta(1, "b", "f", '{"n":'),
            call_delta(2, "c", "g", ""),
            call_delta(1, None, None, " 2}"),
            call_delta(2, None, None, '{"m": true}'),
        ]
    )
    assert [(c.id, c.arguments) for c in turn.calls] == [
        ("a", {"n": 1}),
        ("b", {"n": 2}),
        ("c", {"m": True}),
    ]


def test_usage_only_last_chunk_and_stop_with_tool_calls():
    turn, _ = assemble(
        [
            call_delta(0, "a", "f", "{}"),
            chunk({}, "stop"),  # finish_reason "stop" although a tool call is present
            chunk(
                usage={"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}, choices=False
            ),
        ]
    )
    assert len(turn.calls) == 1 and turn.finish_reason == "stop"
    assert turn.usage.total_tokens == 7


def test_reasoning_content_deltas_are_kept_apart():
    turn, shown = assemble(
        [
            chunk({"reasoning_content": "Let me think. "}),
            chunk({"reasoning_content": "Done."}),
            chunk({"content": "42"}),
        ]
    )
    assert shown == [("", "Let me think. "), ("", "Done."), ("42", "")]
    assert turn.reasoning == "Let me think. Done." and turn.content == "42"
    assert turn.message["reasoning_content"] == "Let me think. Done."


def test_think_text_in_content_before_a_tool_call():
    turn, shown = assemble(
        [
            chunk({"content": "<thi"}),
            chunk({"content": "nk>plan: call f"}),
            chunk({"content": "</think>\n\n"}),
            call_delta(0, "a", "f", "{}"),
        ]
    )
    assert "".join(t for t, _ in shown) == ""
    assert "".join(r for _, r in shown) == "plan: call f"
    assert turn.message["content"] is None and turn.calls[0].name == "f"


def test_empty_content_before_tool_call():
    turn, _ = assemble(
        [chunk({"content": ""}), chunk({"content": "\n"}), call_delta(0, "a", "f", "{}")]
    )
    assert turn.message["content"] is None


def test_non_stream_think_block_and_reasoning_null():
    body = {
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "<think>hmm</think>\n\nAnswer.",
                    "reasoning_content": None,
                },
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 1,
            "completion_tokens": 1,
            "total_tokens": 2,
            "prompt_tokens_details": {"cached_tokens": 1},
        },
    }
    turn = parse_completion(body)
    assert turn.content == "Answer." and turn.reasoning == "hmm"
    assert turn.usage.cached_prompt_tokens == 1


async def test_reference_stream_over_the_wire(openai_server, make_agent):
    openai_server.script(sse_reply(REFERENCE_STREAM, done=False))
    agent = make_agent()
    events = [e async for e in agent.stream("你好")]
    deltas = [e.delta for e in events if isinstance(e, TextDeltaEvent)]
    assert deltas == ["你好", "!", "有什么", "可以帮助你的吗?"]
    result = events[-1].result
    assert result.output == "你好!有什么可以帮助你的吗?"
    assert result.usage.prompt_tokens == 20 and result.usage.total_tokens == 27


async def test_stream_without_done_still_ends(openai_server, make_agent):
    openai_server.script(sse_reply([chunk({"content": "partial answer"}, "stop")], done=False))
    result = [e async for e in make_agent().stream("hi")][-1].result
    assert result.output == "partial answer"


async def test_error_event_in_the_middle_of_a_stream(openai_server, make_agent):
    openai_server.script(
        sse_reply(
            [
                chunk({"content": "Hel"}),
                {"error": {"message": "Internal error while generating", "code": "InternalError"}},
            ]
        )
    )
    agent = make_agent()
    with pytest.raises(ModelStreamError, match="Internal error while generating") as info:
        async for _ in agent.stream("hi"):
            pass
    assert info.value.result is not None
    assert info.value.result.messages == [{"role": "user", "content": "hi"}]


async def test_llama_cpp_error_line_in_a_stream(openai_server, make_agent):
    openai_server.script(
        sse_reply(
            [
                chunk({"content": "x"}),
                'error: {"code": 500, "message": "context shift is disabled", "type": "server_error"}\n\n',
            ],
            done=False,
        )
    )
    with pytest.raises(ModelStreamError, match="context shift is disabled"):
        async for _ in make_agent().stream("hi"):
            pass


async def test_streamed_tool_call_with_quirks_runs_the_tool(openai_server, make_agent):
    @tool
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    openai_server.script(
        sse_reply(
            [
                chunk({"role": "assistant", "content": ""}),
                call_delta(None, "call_1", None, None),
                call_delta(None, "call_1", "add", '{"a": 2,'),
                call_delta(None, "call_1", None, ' "b": 3}'),
                chunk({}, "stop"),
                chunk(
                    usage={"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
                    choices=False,
                ),
            ]
        ),
        stream_text_reply("5"),
    )
    result = [e async for e in make_agent(add).stream("2+3")][-1].result
    assert result.tool_calls[0].result == "5" and result.output == "5"
    sent = openai_server.requests[1].json["messages"]
    assert json.loads(sent[1]["tool_calls"][0]["function"]["arguments"]) == {"a": 2, "b": 3}


async def test_reasoning_events_streamed_and_stored(openai_server, make_agent):
    openai_server.script(stream_text_reply("Paris.", reasoning="The capital of France"))
    events = [e async for e in make_agent().stream("capital?")]
    reasoning = "".join(e.delta for e in events if isinstance(e, ReasoningDeltaEvent))
    assert reasoning == "The capital of France"
    assert events[-1].result.reasoning == "The capital of France"


async def test_reasoning_is_not_sent_back_by_default(openai_server, make_agent):
    openai_server.script(text_reply("A", reasoning="why"), text_reply("B"))
    agent = make_agent()
    first = await agent.run("q1")
    assert first.messages[-1]["reasoning_content"] == "why"
    await agent.run("q2", history=first.messages)
    assert all("reasoning_content" not in m for m in openai_server.requests[1].json["messages"])
