"""Model profiles on the wire: what qwenloop sends to today's Qwen models at each provider.

The scripted server here follows DashScope's documented rules (see agent/models/profile_data.py
for the pages): it answers 400, with DashScope's own wording, to a non-streamed call while a
model thinks, to a named `tool_choice` while it thinks, and to `tool_choice: "required"`. Every
test points `base_url` at it with `provider="dashscope"`: the profile follows the provider.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent import (
    Agent,
    ConfigError,
    Price,
    RequiredToolCallError,
    SearchOptions,
    UsageLimitExceeded,
    UserError,
    tool,
)
from agent.errors import ModelNotSupportedError
from agent.models.profile import resolve_profile
from agent.providers import resolve_endpoint
from agent.testing import (
    RecordedRequest,
    Reply,
    ScriptedServer,
    error_reply,
    stream_text_reply,
    stream_tool_calls_reply,
    text_reply,
    tool_calls_reply,
)

THINKS_BY_DEFAULT = {"qwen3-32b", "qwen3-8b", "qwen3-235b-a22b"}


@tool
def lookup(q: str) -> str:
    """Look something up."""
    return f"found {q}"


@tool
def other(q: str) -> str:
    """Another tool."""
    return q


def dashscope_refusal(body: dict[str, Any]) -> Reply | None:
    """DashScope's 400s for the requests its documentation forbids, or None."""
    thinking = body.get("enable_thinking", body["model"] in THINKS_BY_DEFAULT)
    if thinking and not body.get("stream"):
        return error_reply(
            400,
            "parameter.enable_thinking must be set to false for non-streaming calls",
            code="invalid_parameter_error",
        )
    choice = body.get("tool_choice")
    if choice == "required" or (thinking and isinstance(choice, dict)):
        return error_reply(400, "tool_choice is not supported", code="invalid_parameter_error")
    return None


class DashScopeLike:
    """A responder: DashScope's refusals first, then the scripted answers in order."""

    def __init__(self, server: ScriptedServer, *answers: tuple[Reply, Reply]) -> None:
        self.answers = list(answers)  # (whole reply, streamed reply) pairs
        self.bodies: list[dict[str, Any]] = []
        server.respond_with(self)

    def __call__(self, request: RecordedRequest) -> Reply:
        body = request.json
        self.bodies.append(body)
        refused = dashscope_refusal(body)
        if refused is not None:
            return refused
        whole, streamed = self.answers.pop(0)
        return streamed if body.get("stream") else whole


def answer(text: str, reasoning: str | None = None) -> tuple[Reply, Reply]:
    return (
        text_reply(text, reasoning=reasoning),
        stream_text_reply(text, reasoning=reasoning),
    )


def calls(*pairs: tuple[str, dict[str, Any]]) -> tuple[Reply, Reply]:
    return tool_calls_reply(list(pairs)), stream_tool_calls_reply(list(pairs))


def dashscope_agent(server: ScriptedServer, model: str = "qwen-plus", **kw: Any) -> Agent:
    return Agent(model, provider="dashscope", base_url=server.url, api_key="k", **kw)


async def drive(agent: Agent, how: str, prompt: str = "x", **kw: Any) -> Any:
    if how == "run":
        return await agent.run(prompt, **kw)
    result = None
    async for event in agent.stream(prompt, **kw):
        result = getattr(event, "result", result)
    return result


HOW = pytest.mark.parametrize("how", ["run", "stream"])


@HOW
async def test_parallel_tool_calls_are_asked_for_on_dashscope(how):
    with ScriptedServer() as server:
        fake = DashScopeLike(
            server,
            calls(("lookup", {"q": "a"}), ("other", {"q": "b"})),
            answer("both"),
            answer("one tool"),
        )
        agent = dashscope_agent(server, tools=[lookup, other])
        result = await drive(agent, how)
        assert [r.name for r in result.tool_calls] == ["lookup", "other"]
        assert all(b["parallel_tool_calls"] is True for b in fake.bodies)
        # one tool offered: nothing to parallelise, nothing sent
        one = dashscope_agent(server, tools=[lookup])
        await drive(one, how)
        assert "parallel_tool_calls" not in fake.bodies[-1]
        await agent.aclose()
        await one.aclose()


async def test_the_users_parallel_tool_calls_wins_and_openai_is_left_alone():
    with ScriptedServer() as server:
        fake = DashScopeLike(server, answer("a"), answer("b"))
        agent = dashscope_agent(server, tools=[lookup, other])
        await agent.run("x", settings={"parallel_tool_calls": False})
        assert fake.bodies[-1]["parallel_tool_calls"] is False
        openai = Agent(
            "gpt-4o-mini",
            provider="openai",
            base_url=server.url,
            api_key="k",
            tools=[lookup, other],
        )
        await openai.run("x")
        assert "parallel_tool_calls" not in fake.bodies[-1]  # OpenAI's default is already true
        await agent.aclose()
        await openai.aclose()


async def test_open_source_qwen3_without_streaming_is_told_not_to_think():
    with ScriptedServer() as server:
        fake = DashScopeLike(server, answer("42"))
        agent = dashscope_agent(server, "qwen3-32b")
        result = await agent.run("x")
        assert result.output == "42"
        assert fake.bodies[0]["enable_thinking"] is False
        assert "stream" not in fake.bodies[0]
        await agent.aclose()


async def test_open_source_qwen3_streamed_thinks_as_it_should():
    with ScriptedServer() as server:
        fake = DashScopeLike(server, answer("42", reasoning="let me think"))
        agent = dashscope_agent(server, "qwen3-32b")
        result = await drive(agent, "stream")
        assert result.output == "42" and result.reasoning == "let me think"
        assert "enable_thinking" not in fake.bodies[0]
        await agent.aclose()


@pytest.mark.parametrize("model", ["qwen3-32b", "qwen-plus"])
async def test_thinking_asked_for_without_streaming_is_streamed_inside(model):
    with ScriptedServer() as server:
        fake = DashScopeLike(
            server, calls(("lookup", {"q": "a"})), answer("done", reasoning="mulling")
        )
        agent = dashscope_agent(server, model, tools=[lookup])
        result = await agent.run("x", settings={"enable_thinking": True})
        assert result.output == "done" and result.reasoning == "mulling"
        assert [r.result for r in result.tool_calls] == ["found a"]
        assert all(b["stream"] is True and b["enable_thinking"] is True for b in fake.bodies)
        await agent.aclose()


@HOW
async def test_a_forced_tool_while_thinking_is_asked_for_not_sent(how):
    with ScriptedServer() as server:
        fake = DashScopeLike(
            server, answer("I know already"), calls(("lookup", {"q": "a"})), answer("done")
        )
        agent = dashscope_agent(
            server, "qwen3-32b", tools=[lookup, other], settings={"enable_thinking": True}
        )
        result = await drive(agent, how, settings={"tool_choice": "lookup"})
        assert result.output == "done"
        assert all("tool_choice" not in b for b in fake.bodies)
        assert fake.bodies[1]["messages"][-1] == {
            "role": "user",
            "content": "Call the lookup tool now; do not answer directly.",
        }
        await agent.aclose()


async def test_a_forced_tool_without_thinking_is_sent_as_a_named_function():
    with ScriptedServer() as server:
        fake = DashScopeLike(server, calls(("other", {"q": "a"})), answer("done"))
        agent = dashscope_agent(server, "qwen3-32b", tools=[lookup, other])
        await agent.run("x", settings={"tool_choice": "other"})
        assert fake.bodies[0]["tool_choice"] == {"type": "function", "function": {"name": "other"}}
        assert fake.bodies[0]["enable_thinking"] is False
        await agent.aclose()


@HOW
async def test_required_that_the_model_still_refuses_is_a_typed_error(how):
    with ScriptedServer() as server:
        fake = DashScopeLike(server, answer("no"), answer("still no"))
        agent = dashscope_agent(server, tools=[lookup, other], settings={"tool_choice": "required"})
        with pytest.raises(RequiredToolCallError, match="without calling a tool 2 times") as info:
            await drive(agent, how)
        assert info.value.text == "still no"
        assert info.value.result is not None
        assert info.value.result.messages[-1]["content"] == "still no"
        assert info.value.result.turns == 2 and not info.value.result.tool_calls
        assert all("tool_choice" not in b for b in fake.bodies)
        await agent.aclose()


def test_max_cost_needs_a_known_price():
    with pytest.raises(ConfigError, match="price=Price"):
        Agent("my-finetune", base_url="http://127.0.0.1:9/v1", max_cost=1.0)
    Agent("my-finetune", base_url="http://127.0.0.1:9/v1", max_cost=1.0, price=Price(1, 2))
    Agent("qwen3-max", provider="dashscope", api_key="k", max_cost=1.0)  # priced by catalogue


async def test_a_user_price_prices_the_run_and_enforces_the_budget():
    with ScriptedServer() as server:
        server.script(text_reply("a", usage=(1000, 1000)), text_reply("b", usage=(1000, 1000)))
        agent = Agent(
            "my-finetune",
            base_url=server.url,
            api_key="k",
            price=Price(input=2.0, output=8.0),
            max_cost=0.05,
        )
        result = await agent.run("x")
        assert result.cost == pytest.approx((1000 * 2.0 + 1000 * 8.0) / 1e6)
        agent.max_cost = 0.005
        with pytest.raises(UsageLimitExceeded) as info:
            await agent.run("x")
        assert info.value.result is not None and info.value.result.output == ""
        await agent.aclose()


async def test_thinking_output_is_priced_at_the_thinking_rate():
    with ScriptedServer() as server:
        server.script(text_reply("a", reasoning="r", usage=(1000, 1000)), text_reply("b"))
        price = Price(1.0, 2.0, thinking_output=8.0)
        thinker = Agent("m", base_url=server.url, price=price, profile={"thinking": "only"})
        result = await thinker.run("x")
        assert result.cost == pytest.approx((1000 * 1.0 + 1000 * 8.0) / 1e6)
        plain = Agent("m", base_url=server.url, price=price)
        assert (await plain.run("x")).cost == pytest.approx((20 * 1.0 + 8 * 2.0) / 1e6)
        await thinker.aclose()
        await plain.aclose()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"seed": 2**31}, "seed=2147483648 is over dashscope"),
        ({"top_logprobs": 6, "logprobs": True}, "top_logprobs=6"),
        ({"n": 2}, "n=2 is over .* maximum of 1 with tools"),
        ({"max_tokens": 70_000}, "max_tokens=70000 is over"),
        ({"enable_thinking": True, "thinking_budget": 100_000}, "thinking_budget=100000"),
        ({"preserve_thinking": True}, "preserve_thinking is not taken"),
    ],
)
def test_settings_are_checked_against_the_providers_ranges(settings, message):
    agent = Agent("qwen3-max", provider="dashscope", api_key="k", tools=[lookup])
    with pytest.raises(UserError, match=message):
        agent.run_sync("x", settings=settings)


def test_ranges_follow_the_provider():
    agent = Agent("gpt-4o-mini", provider="openai", api_key="k", tools=[lookup])
    agent._config({"seed": 2**40, "top_logprobs": 10, "logprobs": True}, None, None, False)
    with pytest.raises(UserError, match="thinking_budget is not taken"):
        agent._config({"thinking_budget": 10}, None, None, False)
    with pytest.raises(UserError, match="does not think"):
        Agent("qwen2.5-7b-instruct", provider="dashscope", api_key="k").run_sync(
            "x", settings={"enable_thinking": True}
        )
    with pytest.raises(UserError, match="always thinks"):
        Agent("qwq-plus", provider="dashscope", api_key="k").run_sync(
            "x", settings={"enable_thinking": False}
        )


async def test_vllm_takes_the_thinking_switch_in_chat_template_kwargs():
    with ScriptedServer() as server:
        server.script(text_reply("ok"))
        agent = Agent("Qwen/Qwen3-8B", provider="vllm", base_url=server.url)
        await agent.run("x", settings={"enable_thinking": False})
        body = server.requests[0].json
        assert body["chat_template_kwargs"] == {"enable_thinking": False}
        assert "enable_thinking" not in body
        await agent.aclose()


async def test_first_class_dashscope_settings_reach_the_wire():
    with ScriptedServer() as server:
        server.script(stream_text_reply("ok"), text_reply("ok"))
        agent = dashscope_agent(
            server,
            "qwen3-max",
            headers={"X-DashScope-DataInspection": '{"input":"cip","output":"cip"}'},
            settings={
                "thinking_budget": 500,
                "enable_thinking": True,
                "max_completion_tokens": 900,
                "vl_high_resolution_images": True,
                "enable_code_interpreter": True,
                "enable_search": True,
                "search_options": SearchOptions(forced_search=True, search_strategy="max"),
                "stream_options": {"include_usage": True},
            },
        )
        await drive(agent, "stream")
        request = server.requests[0]
        body = request.json
        assert request.headers["x-dashscope-datainspection"] == '{"input":"cip","output":"cip"}'
        assert body["thinking_budget"] == 500 and body["max_completion_tokens"] == 900
        assert body["vl_high_resolution_images"] is True
        assert body["enable_code_interpreter"] is True
        assert body["search_options"] == {"forced_search": True, "search_strategy": "max"}
        assert body["stream_options"] == {"include_usage": True}
        await agent.run("x", settings={"enable_thinking": False})
        assert "stream_options" not in server.requests[1].json  # refused without stream
        await agent.aclose()


def test_search_options_are_typed():
    with pytest.raises(UserError, match="search_strategy"):
        Agent(
            "qwen-plus",
            provider="dashscope",
            api_key="k",
            settings={"search_options": {"search_strategy": "fastest"}},
        )
    with pytest.raises(UserError, match="search_options"):
        Agent(
            "qwen-plus",
            provider="dashscope",
            api_key="k",
            settings={"search_options": {"forced": True}},
        )


async def test_the_system_prompt_can_be_marked_cacheable():
    with ScriptedServer() as server:
        server.script(text_reply("a"), text_reply("b"))
        agent = dashscope_agent(server, instructions="You are terse.", cache_instructions=True)
        await agent.run("x")
        assert server.requests[0].json["messages"][0] == {
            "role": "system",
            "content": [
                {"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}
            ],
        }
        # a marker the caller's own system message carries survives instructions=
        plain = dashscope_agent(server, instructions="You are kind.")
        history = [
            {
                "role": "system",
                "content": [
                    {"type": "text", "text": "old", "cache_control": {"type": "ephemeral"}}
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "long doc", "cache_control": {"type": "ephemeral"}}
                ],
            },
        ]
        await plain.run(history)
        sent = server.requests[1].json["messages"]
        assert sent[0]["content"][0]["text"] == "You are kind."
        assert sent[0]["content"][0]["cache_control"] == {"type": "ephemeral"}
        assert sent[1] == history[1]
        await agent.aclose()
        await plain.aclose()


@pytest.mark.parametrize(
    ("provider", "host"),
    [
        ("dashscope", "dashscope.aliyuncs.com"),
        ("dashscope-intl", "dashscope-intl.aliyuncs.com"),
        ("dashscope-us", "dashscope-us.aliyuncs.com"),
        ("dashscope-hk", "cn-hongkong.dashscope.aliyuncs.com"),
    ],
)
def test_dashscope_regions(provider, host):
    endpoint = resolve_endpoint(provider, api_key="k")
    assert endpoint.base_url == f"https://{host}/compatible-mode/v1"
    assert resolve_profile(provider, "qwen-plus").parallel_tool_calls_default is False


def test_profile_overrides():
    profile = resolve_profile("custom", "my-model", {"tool_choice_values": ["auto", "none"]})
    assert profile.tool_choice_values == frozenset({"auto", "none"})
    with pytest.raises(ConfigError, match="unknown profile field"):
        resolve_profile("custom", "my-model", {"paralel": True})
    agent = Agent(
        "qwen-plus", provider="dashscope", api_key="k", profile={"preserve_thinking": True}
    )
    agent._config({"preserve_thinking": True}, None, None, True)


def test_unknown_models_get_the_generic_profile():
    profile = resolve_profile("custom", "llama-3-70b")
    assert profile.thinking == "none" and profile.price is None and not profile.priced
    assert profile.parallel_tool_calls_param is False  # nothing sent an endpoint might not know
    assert profile.server_search is None
    with pytest.raises(ModelNotSupportedError):
        Agent("gpt-4o", provider="openai", api_key="k", search="server")


def test_no_code_outside_the_profiles_tests_a_provider_name():
    import pathlib
    import re

    root = pathlib.Path(__file__).parent.parent / "agent"
    allowed = {"profile.py", "profile_data.py", "providers.py", "catalog.py"}
    pattern = re.compile(
        r"""provider(?:\.name)?\s*[!=]=\s*["']|["'](dashscope|openai|local|custom)["']\s+in\b"""
    )
    offenders = [
        f"{path.name}:{n}"
        for path in root.rglob("*.py")
        if path.name not in allowed
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


def test_dashscope_like_server_refuses_what_dashscope_refuses():
    # the fixture itself, so the tests above prove what they claim
    assert dashscope_refusal({"model": "qwen3-32b"}) is not None
    assert dashscope_refusal({"model": "qwen3-32b", "enable_thinking": False}) is None
    assert dashscope_refusal({"model": "qwen-plus", "tool_choice": "required"}) is not None
    body = {"model": "qwen-plus", "stream": True, "enable_thinking": True}
    assert dashscope_refusal({**body, "tool_choice": {"type": "function"}}) is not None
    assert json.dumps(body)
