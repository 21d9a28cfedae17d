"""The search switch, checked on the wire for each mode and model family."""

from __future__ import annotations

import pytest

from agent import Agent, ModelNotSupportedError
from agent.testing import text_reply


@pytest.mark.parametrize(
    ("model", "mode", "expect"),
    [
        ("qwen-plus", "server", "server"),
        ("qwen-max", "auto", "server"),
        ("qwen-turbo-latest", "auto", "server"),
        ("qwen-vl-max", "auto", "local"),
        ("qwen2.5-72b-instruct", "auto", "local"),
        ("qwen-long", "auto", "local"),
        ("qwen-plus", "local", "local"),
        ("qwen-plus", "off", "off"),
    ],
)
async def test_modes_on_the_wire(openai_server, model, mode, expect, monkeypatch):
    monkeypatch.setenv("QWENLOOP_BASE_URL", openai_server.url)
    openai_server.script(text_reply("ok"))
    agent = Agent(model, provider="dashscope", api_key="k", search=mode)
    result = await agent.run("news?")
    body = openai_server.requests[0].json
    assert result.search_mode == expect == agent.search_mode
    if expect == "server":
        assert body["enable_search"] is True and "tools" not in body
    elif expect == "local":
        assert "enable_search" not in body
        assert [t["function"]["name"] for t in body["tools"]] == ["web_search"]
    else:
        assert "enable_search" not in body and "tools" not in body
    await agent.aclose()


@pytest.mark.parametrize(
    "model", ["qwen-vl-plus", "qwen2.5-14b-instruct", "qwen-long", "qwen1.5-7b-chat"]
)
def test_server_search_is_refused_for_models_without_it(model):
    with pytest.raises(ModelNotSupportedError, match="enable_search"):
        Agent(model, provider="dashscope", api_key="k", search="server")


def test_server_search_needs_a_qwen_provider():
    with pytest.raises(ModelNotSupportedError, match="no server-side search"):
        Agent("gpt-4o-mini", provider="openai", api_key="k", search="server")
    agent = Agent("llama3", provider="ollama", search="auto")
    assert agent.search_mode == "local"


def test_local_search_can_offer_fetch_url():
    agent = Agent("qwen-plus", base_url="http://127.0.0.1:9/v1", search="local", search_fetch=True)
    assert agent.tools.names == ["web_search", "fetch_url"]


def test_server_search_keeps_the_users_extra_body():
    agent = Agent(
        "qwen-plus",
        provider="dashscope",
        api_key="k",
        search="server",
        settings={"extra_body": {"search_options": {"forced_search": True}}},
    )
    _, extra = agent.settings.split()
    assert extra == {"enable_search": True, "search_options": {"forced_search": True}}
