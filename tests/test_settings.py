"""Every documented request parameter reaches the wire, in the right place."""

from __future__ import annotations

from agent import ModelSettings
from agent.testing import text_reply


async def test_all_parameters_on_the_wire(openai_server, make_agent):
    openai_server.script(text_reply("ok"), text_reply("ok"))
    settings = {
        "temperature": 0.7,
        "top_p": 0.8,
        "top_k": 20,
        "seed": 2**64 - 1,
        "max_tokens": 2048,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "repetition_penalty": 1.05,
        "min_p": 0.1,
        "top_a": 0.2,
        "logit_bias": {"1234": -100},
        "logprobs": True,
        "top_logprobs": 5,
        "stop": ["你好"],
        "response_format": {"type": "json_object"},
        "tool_choice": "none",
        "parallel_tool_calls": False,
        "enable_search": True,
        "translation_options": {"source_lang": "Chinese", "target_lang": "English"},
        "verbosity": "low",
    }
    agent = make_agent(settings=settings)
    await agent.run("hi")
    body = openai_server.requests[0].json
    for name, value in settings.items():
        if name in ("tool_choice", "parallel_tool_calls"):
            continue  # only sent when tools are offered
        assert body[name] == value, name
    # per-run overrides win
    await agent.run("hi", settings=ModelSettings(temperature=0.1, stop=[13]))
    body = openai_server.requests[1].json
    assert body["temperature"] == 0.1 and body["stop"] == [13] and body["top_k"] == 20
