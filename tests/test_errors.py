"""Endpoint failures: typed errors with the provider's words, retries with backoff."""

from __future__ import annotations

import time

import pytest

from agent import (
    Agent,
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ModelConnectionError,
    RateLimitError,
    ServerError,
    UserError,
)
from agent.models.openai import OpenAIChatModel, RetryPolicy
from agent.testing import ScriptedServer, disconnect_reply, error_reply, json_reply, text_reply

# The reference's error body (shared/qwen-api/000): {"error": {"message": "Invalid API-KEY", ...}}
INVALID_KEY = {
    "error": {
        "message": "Invalid API-KEY",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
}


def fast_agent(server: ScriptedServer, retries: int = 2) -> Agent:
    model = OpenAIChatModel(
        "qwen-plus",
        base_url=server.url,
        api_key="sk-bad",
        provider="dashscope",
        key_source="$DASHSCOPE_API_KEY",
        retry=RetryPolicy(max_retries=retries, base_delay=0.01, max_delay=1.0),
    )
    return Agent(chat_model=model)


async def test_401_names_the_key_source(openai_server):
    openai_server.script(json_reply(INVALID_KEY, status=401))
    agent = fast_agent(openai_server)
    with pytest.raises(AuthenticationError) as info:
        await agent.run("hi")
    err = info.value
    assert err.status_code == 401 and err.provider_message == "Invalid API-KEY"
    assert "$DASHSCOPE_API_KEY" in str(err)
    assert err.result is not None and err.result.messages == [{"role": "user", "content": "hi"}]
    assert len(openai_server.requests) == 1  # never retried
    await agent.aclose()


async def test_400_carries_the_provider_message(openai_server):
    openai_server.script(
        error_reply(
            400, "<400> InternalError.Algo.InvalidParameter: The tool call is not supported."
        )
    )
    agent = fast_agent(openai_server)
    with pytest.raises(BadRequestError, match="InvalidParameter: The tool call is not supported"):
        await agent.run("hi")
    await agent.aclose()


async def test_429_and_5xx_are_retried_then_succeed(openai_server):
    openai_server.script(
        error_reply(429, "Requests rate limit exceeded", code="Throttling.RateQuota"),
        error_reply(500, "internal"),
        text_reply("finally"),
    )
    agent = fast_agent(openai_server, retries=2)
    result = await agent.run("hi")
    assert result.output == "finally" and len(openai_server.requests) == 3
    await agent.aclose()


async def test_retry_after_is_honoured(openai_server):
    openai_server.script(
        error_reply(429, "slow down", headers={"Retry-After": "0.4"}), text_reply("ok")
    )
    agent = fast_agent(openai_server)
    started = time.perf_counter()
    await agent.run("hi")
    assert time.perf_counter() - started >= 0.4
    await agent.aclose()


async def test_retries_are_bounded_then_typed(openai_server):
    openai_server.script(*[error_reply(429, "quota exhausted", code="Arrearage")] * 3)
    agent = fast_agent(openai_server, retries=2)
    with pytest.raises(RateLimitError, match="quota exhausted") as info:
        await agent.run("hi")
    assert info.value.code == "Arrearage"
    openai_server.script(*[error_reply(503, "busy")] * 3)
    with pytest.raises(ServerError):
        await agent.run("hi")
    await agent.aclose()


async def test_connection_failures_are_retried_then_typed(openai_server):
    openai_server.script(disconnect_reply(), text_reply("back"))
    agent = fast_agent(openai_server)
    assert (await agent.run("hi")).output == "back"
    await agent.aclose()
    with ScriptedServer() as dead:
        url = dead.url
    model = OpenAIChatModel(
        "m", base_url=url, api_key="k", retry=RetryPolicy(max_retries=1, base_delay=0.01)
    )
    closed = Agent(chat_model=model)
    with pytest.raises(ModelConnectionError, match="check the base URL"):
        await closed.run("hi")
    await closed.aclose()


async def test_error_body_with_status_200_is_an_error(openai_server):
    openai_server.script(json_reply(INVALID_KEY, status=200))
    agent = fast_agent(openai_server)
    with pytest.raises(Exception, match="Invalid API-KEY"):
        await agent.run("hi")
    await agent.aclose()


def test_missing_key_is_a_config_error(monkeypatch):
    monkeypatch.delenv("DASHSCOPE_API_KEY", raising=False)
    monkeypatch.delenv("QWENLOOP_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="set DASHSCOPE_API_KEY"):
        Agent(provider="dashscope")


def test_unknown_provider_and_bad_settings(monkeypatch):
    with pytest.raises(ConfigError, match="unknown provider 'bogus'"):
        Agent(provider="bogus")
    with pytest.raises(UserError, match="temperature"):
        Agent(base_url="http://127.0.0.1:9/v1", settings={"temperature": 5})
    with pytest.raises(UserError, match="top_logprobs needs logprobs"):
        Agent(base_url="http://127.0.0.1:9/v1", settings={"top_logprobs": 3})


def test_environment_overrides(monkeypatch):
    monkeypatch.setenv("QWENLOOP_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("QWENLOOP_API_KEY", "k")
    monkeypatch.setenv("QWENLOOP_MODEL", "qwen-max")
    agent = Agent(provider="dashscope")
    assert agent.model.model_name == "qwen-max"
    assert agent.model.base_url == "http://127.0.0.1:9/v1"


def test_wrong_instructions_type_fails_at_construction():
    with pytest.raises(UserError, match="instructions must be a string"):
        Agent(base_url="http://127.0.0.1:9/v1", instructions=42)
