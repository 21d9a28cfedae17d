"""System-prompt templates: rendering, per-turn freshness, and errors before any request."""

from __future__ import annotations

import re

import pytest

from agent import PromptRenderError, Template, UserError
from agent.testing import text_reply, tool_call_reply
from tools import get_builtin


def test_shipped_templates_render_with_context():
    text = Template(
        name="default", variables={"assistant_name": "Qwenny"}, timezone="Asia/Shanghai"
    ).render(tools=[{"name": "calculator", "description": ""}], search_mode="local")
    assert text.startswith("You are Qwenny.")
    assert "(Asia/Shanghai)" in text and "calculator" in text and "web_search" in text
    assert re.search(r"\d{4}-\d{2}-\d{2}", text)
    search = Template(name="search_bot").render(search_mode="local", tools=[{"name": "fetch_url"}])
    assert "cite your sources" in search and "fetch_url" in search


def test_missing_variable_names_template_line_and_variable(tmp_path):
    path = tmp_path / "bot.j2"
    path.write_text("Hello.\nYou help {{ customer }} today.\n")
    template = Template(path=path)
    with pytest.raises(PromptRenderError) as info:
        template.render()
    err = info.value
    assert err.variable == "customer" and err.line == 2 and err.template == str(path)
    assert "--var customer=" in str(err)


def test_syntax_error_at_load_names_the_line():
    with pytest.raises(PromptRenderError, match="line 2") as info:
        Template("ok\n{% if x %}never closed\n")
    assert info.value.line == 2


def test_unknown_names_and_zones_are_user_errors():
    with pytest.raises(UserError, match="weather_bot"):
        Template.load("no_such_template")
    with pytest.raises(UserError, match="Europe/Berlin"):
        Template("x", timezone="Mars/Olympus")


def test_sandbox_refuses_attribute_escapes():
    with pytest.raises(PromptRenderError):
        Template("{{ ''.__class__.__mro__[1].__subclasses__() }}").render()


async def test_prompt_error_comes_before_any_request(openai_server, make_agent):
    agent = make_agent(instructions=Template("Hi {{ who }}"))
    with pytest.raises(PromptRenderError, match="'who'"):
        await agent.run("hello")
    with pytest.raises(PromptRenderError):
        async for _ in agent.stream("hello"):
            pass
    assert openai_server.requests == []


async def test_template_renders_at_every_turn(openai_server, make_agent):
    counter = {"n": 0}

    class Counting(Template):
        def context(self, **extra):
            counter["n"] += 1
            return super().context(turn_no=counter["n"], **extra)

    openai_server.script(tool_call_reply("calculator", {"expression": "1+1"}), text_reply("2"))
    agent = make_agent(
        get_builtin("calculator"),
        instructions=Counting(
            "Render {{ turn_no }}; tools: {{ tools | map(attribute='name') | join(',') }}"
        ),
    )
    await agent.run("1+1?")
    systems = [r.json["messages"][0]["content"] for r in openai_server.requests]
    assert systems[0].endswith("tools: calculator")
    assert systems[0] != systems[1]  # rendered afresh for the second turn


async def test_a_run_passes_its_own_template_variables(openai_server) -> None:
    from agent import Agent, Template, UserError
    from agent.testing import text_reply

    openai_server.script(text_reply("a"), text_reply("b"))
    template = Template("Help {{ customer }} with {{ topic }}.", variables={"topic": "billing"})
    agent = Agent("qwen-plus", base_url=openai_server.url, api_key="k", instructions=template)
    await agent.run("hi", variables={"customer": "Ada"})
    await agent.run("hi", variables={"customer": "Bo", "topic": "refunds", "tools": "ignored"})
    systems = [r.json["messages"][0]["content"] for r in openai_server.requests]
    assert systems == ["Help Ada with billing.", "Help Bo with refunds."]
    plain = Agent("qwen-plus", base_url=openai_server.url, api_key="k", instructions="Be kind.")
    with pytest.raises(UserError, match="needs a Template"):
        await plain.run("hi", variables={"customer": "Ada"})
    await agent.aclose()
    await plain.aclose()


def test_variables_that_are_not_a_mapping_are_a_usage_error() -> None:
    from agent import Agent, Template, UserError

    agent = Agent("qwen-plus", base_url="http://127.0.0.1:9/v1", instructions=Template("Hi"))
    with pytest.raises(UserError, match="variables must be a mapping"):
        agent.run_sync("hi", variables=["a"])  # type: ignore[arg-type]
